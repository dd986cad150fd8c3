//! The app manifest: what `trellis up` starts, in YAML.
//!
//! In the spirit of wadm's application manifests, flattened to what a local lattice needs:
//!
//! ```yaml
//! name: counter
//! components:
//!   - id: counter
//!     path: counter.wasm            # relative to this file; or `ref: https://…`
//!     config: { bucket: counter }   # named config the component reads through wasi:config
//!     secrets:                      # what it reads through wasmcloud:secrets, by name
//!       api-key: { secret: api-key }  #   a secret of the store (below, or put before)
//!       cert: { file: cert.pem }    #   shorthand: a secret of its own, from a file
//!     compose: [parts/cache.wasm]   # composed in before it runs (see `modes`)
//! providers:
//!   - id: http
//!     ref: http-server              # a provider shipped with Trellis; or `path: ./my-provider`
//!   - id: kv
//!     ref: keyvalue-nats
//!     mode: in-process              # in the host's process: no NATS hop for its calls
//! links:
//!   - source: http
//!     target: counter
//!     wit: wasi:http/incoming-handler
//!     source_config: { address: "127.0.0.1:${COUNTER_PORT:-8000}" }
//!   - source: counter
//!     target: kv
//!     wit: wasi:keyvalue/store,atomics
//!     target_config: { auto_create: true }
//!     target_secrets: { password: kv-password }  # the provider sees `password`
//!   - source: counter
//!     target: auditor               # another component of this manifest…
//!     wit: acme:audit/log
//!     mode: composed                # …built into counter, not called over the lattice
//! secrets:                          # put in the lattice's secret store by `up`
//!   api-key: { env: API_KEY }       #   from an environment variable of `trellis up`
//!   kv-password: { file: pw.txt, readers: [other] }
//! ```
//!
//! A secret's readers (its policy) are who the manifest gives it to — the components
//! granted it and the link ends named by `*_secrets` — plus any `readers:` listed.
//!
//! `${NAME}` and `${NAME:-default}` in any value are replaced from the environment (`$$` is
//! a literal `$`). Every error names the file, line and column and the field at fault: YAML
//! syntax and unknown or mistyped fields come from the parser (serde-saphyr, which keeps
//! spans); cross-references (a link to an id the manifest does not define, duplicate ids)
//! are checked here against the spans it recorded.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_saphyr::Spanned;

mod modes;
pub use modes::ComposePart;
use modes::LinkMode;

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The manifest.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Bad YAML, a missing, unknown or mistyped field, or an unset environment variable.
    #[error("{}:{message}", path.display())]
    Parse {
        /// The manifest.
        path: PathBuf,
        /// `line:column: message` (or just the message), then the offending snippet.
        message: String,
    },
    /// Valid YAML that does not make a valid app.
    #[error("{}:{line}:{column}: {field}: {message}", path.display())]
    Invalid {
        /// The manifest.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// 1-based column.
        column: u64,
        /// The field at fault, as a path (`links[1].target`).
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// The parser's error as `file:line:column: message`, followed by its snippet of the
/// offending line.
fn parse_error(path: &Path, e: &serde_saphyr::Error) -> ManifestError {
    // The rendered error reads `error: line L column C: message`, then the snippet, which
    // calls the text `<input>`.
    let rendered = e
        .to_string()
        .replace("<input>", &path.display().to_string());
    let rest = rendered.strip_prefix("error: ").unwrap_or(&rendered);
    let message = match (e.location(), rest.strip_prefix("line ")) {
        (Some(loc), Some(after)) => match after.split_once(": ") {
            Some((_, message)) => format!("{}:{}: {message}", loc.line(), loc.column()),
            None => rest.to_string(),
        },
        _ => rest.to_string(),
    };
    ManifestError::Parse {
        path: path.to_path_buf(),
        message,
    }
}

/// A string value with `${ENV}` expanded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                expand(v, |name| std::env::var(name).ok())
                    .map(Text)
                    .map_err(E::custom)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Replaces `${NAME}` / `${NAME:-default}` in `value` using `lookup`; `$$` is a literal `$`.
pub fn expand(value: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in {value:?}"))?;
            let expr = &after[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("`${{{expr}}}` is not a valid variable reference"));
            }
            match (lookup(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (write ${{{name}:-default}} to give a default)"
                    ));
                }
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Key-value config given inline.
pub type ConfigMap = BTreeMap<String, Text>;

/// The manifest as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: Spanned<String>,
    #[serde(default)]
    components: Vec<RawUnit>,
    #[serde(default)]
    providers: Vec<RawUnit>,
    #[serde(default)]
    links: Vec<RawLink>,
    #[serde(default)]
    secrets: BTreeMap<String, Spanned<RawStoreSecret>>,
    #[serde(default)]
    external: Vec<RawExternal>,
}

/// An external service, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExternal {
    id: Spanned<String>,
    #[serde(default)]
    exports: Vec<Spanned<String>>,
    #[serde(default)]
    imports: Vec<Spanned<String>>,
}

/// A secret the manifest puts in the store, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStoreSecret {
    env: Option<String>,
    file: Option<String>,
    #[serde(default)]
    readers: Vec<String>,
}

/// A component or a provider as written: the same fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnit {
    id: Spanned<String>,
    path: Option<Spanned<Text>>,
    #[serde(rename = "ref")]
    reference: Option<Spanned<Text>>,
    #[serde(default)]
    config: ConfigMap,
    #[serde(default)]
    secrets: BTreeMap<String, Spanned<RawSecret>>,
    #[serde(default)]
    targets: Vec<Spanned<String>>,
    #[serde(default)]
    compose: Vec<Spanned<String>>,
    mode: Option<Spanned<String>>,
}

/// A component's secret, as written: a store secret by name, or (shorthand) a value of its
/// own from one of the two sources.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    secret: Option<String>,
    env: Option<String>,
    file: Option<String>,
}

/// Where a component's secret comes from; read when the app starts, never stored on the
/// lattice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable of `trellis up`.
    Env(String),
    /// A file (resolved against the manifest's directory): its text, or its bytes when it is
    /// not UTF-8.
    File(PathBuf),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    source: Spanned<String>,
    target: Spanned<String>,
    wit: Spanned<String>,
    name: Option<Spanned<String>>,
    #[serde(default)]
    source_config: ConfigMap,
    #[serde(default)]
    target_config: ConfigMap,
    #[serde(default)]
    source_secrets: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    target_secrets: BTreeMap<String, Spanned<String>>,
    mode: Option<Spanned<String>>,
}

/// Where a component or provider comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A file, resolved against the manifest's directory.
    Path(PathBuf),
    /// A component URL (`file://`, `http://`, `https://`), or a provider shipped with
    /// Trellis by name (`http-server`, `keyvalue-nats`, …).
    Ref(String),
}

/// A component to run.
#[derive(Clone, Debug)]
pub struct Component {
    /// Its id on the lattice.
    pub id: String,
    /// Where its wasm is.
    pub source: Source,
    /// Its config (stored as named config).
    pub config: BTreeMap<String, String>,
    /// Its secrets: the name it asks for → the secret's name in the store.
    pub secrets: BTreeMap<String, String>,
    /// The targets it may pick at runtime (`trellis:routing/target`): ids of this manifest.
    pub targets: Vec<String>,
    /// What is composed into it before it runs (empty: it runs as it is).
    pub compose: Vec<ComposePart>,
    /// The part serving each interface its composed links name (`ns:pkg/iface`, id).
    pub compose_uses: Vec<(String, String)>,
}

/// An external service (a "virtual component"): a wRPC service `up` does not start, which
/// joins the lattice with the credentials `up` issues it and is reached only over links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct External {
    /// Its id on the lattice (the target links name).
    pub id: String,
    /// The interfaces it serves (`namespace:package/interface`), one per entry.
    pub exports: Vec<(String, String, Vec<String>)>,
    /// The interfaces it calls.
    pub imports: Vec<(String, String, Vec<String>)>,
}

/// A secret `up` puts in the lattice's secret store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSecret {
    /// Its name in the store.
    pub name: String,
    /// Where its value comes from.
    pub source: SecretSource,
    /// Who may read it: the listed readers and everyone the manifest gives it to.
    pub readers: Vec<String>,
}

/// A provider to start.
#[derive(Clone, Debug)]
pub struct Provider {
    /// Its id on the lattice.
    pub id: String,
    /// Its binary.
    pub source: Source,
    /// Its own config (host data).
    pub config: BTreeMap<String, String>,
    /// Run in the host's own process (`mode: in-process`) rather than as a child process.
    pub in_process: Option<trellis_host::in_process::InProcessKind>,
}

/// A link to put.
#[derive(Clone, Debug)]
pub struct Link {
    /// Source id.
    pub source: String,
    /// Target id.
    pub target: String,
    /// WIT namespace.
    pub namespace: String,
    /// WIT package.
    pub package: String,
    /// Interfaces.
    pub interfaces: Vec<String>,
    /// Link name.
    pub name: String,
    /// Source-side config.
    pub source_config: BTreeMap<String, String>,
    /// Target-side config.
    pub target_config: BTreeMap<String, String>,
    /// Source-side secrets: the key the source sees → the secret's name in the store.
    pub source_secrets: BTreeMap<String, String>,
    /// Target-side secrets: the key the target sees → the secret's name in the store.
    pub target_secrets: BTreeMap<String, String>,
}

/// A validated manifest.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The app name.
    pub name: String,
    /// Components, in order.
    pub components: Vec<Component>,
    /// Providers, in order.
    pub providers: Vec<Provider>,
    /// Links, in order.
    pub links: Vec<Link>,
    /// Secrets `up` puts in the store (those declared, and components' own), by name.
    pub secrets: Vec<StoreSecret>,
    /// External services, in order.
    pub externals: Vec<External>,
}

/// `namespace:package/iface[,iface…]` (a version suffix `@x.y.z` is allowed and ignored).
pub fn parse_wit(wit: &str) -> Result<(String, String, Vec<String>), String> {
    let shape = || {
        format!(
            "{wit:?} is not of the form namespace:package/interface[,interface…] (e.g. wasi:keyvalue/store,atomics)"
        )
    };
    let (package, interfaces) = wit.split_once('/').ok_or_else(shape)?;
    let (namespace, package) = package.split_once(':').ok_or_else(shape)?;
    let interfaces: Vec<String> = interfaces
        .split(',')
        .map(|i| i.trim().split('@').next().unwrap_or_default().to_string())
        .collect();
    let word = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !word(namespace) || !word(package) || !interfaces.iter().all(|i| word(i)) {
        return Err(shape());
    }
    Ok((namespace.to_string(), package.to_string(), interfaces))
}

fn plain(map: ConfigMap) -> BTreeMap<String, String> {
    map.into_iter().map(|(k, v)| (k, v.0)).collect()
}

impl Manifest {
    /// Reads and validates the manifest at `path`.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Self::parse(&text, path, base)
    }

    /// Validates manifest `text` (named `path` in errors; relative paths resolve against
    /// `base`).
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Self, ManifestError> {
        let raw: Raw = serde_saphyr::from_str(text).map_err(|e| parse_error(path, &e))?;
        let mut check = Check {
            path,
            base,
            ids: BTreeMap::new(),
        };
        check.token(&raw.name, "name".into(), "app name")?;
        let mut store = BTreeMap::new();
        for (name, secret) in raw.secrets {
            let at = format!("secrets.{name}");
            check.secret_name(&name, &secret.referenced, &at)?;
            let RawStoreSecret { env, file, readers } = secret.value;
            let source = check.value_source(&at, env, file, &secret.referenced)?;
            for r in &readers {
                trellis_sdk::subjects::validate_token("reader id", r).map_err(|e| {
                    check.invalid(&secret.referenced, format!("{at}.readers"), e.to_string())
                })?;
            }
            store.insert(
                name.clone(),
                StoreSecret {
                    name,
                    source,
                    readers,
                },
            );
        }
        let mut components = Vec::new();
        let mut targets = Vec::new();
        let mut compose = Vec::new();
        for (i, mut c) in raw.components.into_iter().enumerate() {
            if let Some(m) = &c.mode {
                let why = "`mode` is for providers (in-process) and links (composed)";
                return Err(check.invalid(
                    &m.referenced,
                    format!("components[{i}].mode"),
                    why.into(),
                ));
            }
            targets.push(std::mem::take(&mut c.targets));
            compose.push(std::mem::take(&mut c.compose));
            let (id, source, config, raw_secrets) =
                check.unit("component id", "components", i, c)?;
            let field = format!("components[{i}]");
            let secrets = check.grants(&field, &id.value, raw_secrets, &mut store)?;
            components.push(Component {
                id: id.value,
                source,
                config,
                secrets,
                targets: Vec::new(),
                compose: Vec::new(),
                compose_uses: Vec::new(),
            });
        }
        for (i, entries) in compose.into_iter().enumerate() {
            components[i].compose = check.compose_entries(i, &components, entries)?;
        }
        let mut providers = Vec::new();
        for (i, p) in raw.providers.into_iter().enumerate() {
            if let Some(c) = p.compose.first() {
                let why = "`compose` is for components (providers are separate processes)";
                return Err(check.invalid(
                    &c.referenced,
                    format!("providers[{i}].compose"),
                    why.into(),
                ));
            }
            if let Some(t) = p.targets.first() {
                let why = "`targets` are for components (what they may pick at runtime)";
                return Err(check.invalid(
                    &t.referenced,
                    format!("providers[{i}].targets"),
                    why.into(),
                ));
            }
            let mode = p.mode.clone();
            let (id, source, config, secrets) = check.unit("provider id", "providers", i, p)?;
            let in_process = check.provider_mode(i, mode.as_ref(), &source)?;
            if !secrets.is_empty() {
                let why = "`secrets` are for components; a provider takes its secrets from its \
                           links (`source_secrets`, `target_secrets`)";
                let field = format!("providers[{i}].secrets");
                return Err(check.invalid(&id.referenced, field, why.into()));
            }
            providers.push(Provider {
                id: id.value,
                source,
                config,
                in_process,
            });
        }
        let mut externals = Vec::new();
        for (i, e) in raw.external.into_iter().enumerate() {
            externals.push(check.external(i, e)?);
        }
        let mut links = Vec::new();
        let mut seen = BTreeMap::new();
        for (i, l) in raw.links.into_iter().enumerate() {
            let ends = [l.source.referenced, l.target.referenced];
            let mode = check.link_mode(&format!("links[{i}]"), l.mode.as_ref())?;
            let link = check.link(i, l, &mut seen)?;
            check_external_link(&link, &externals)
                .map_err(|(end, why)| check.invalid(&ends[end], format!("links[{i}]"), why))?;
            match mode {
                LinkMode::Runtime => links.push(link),
                LinkMode::Composed => {
                    check.fold_composed_link(i, link, &ends[0], &mut components)?
                }
            }
        }
        // Targets name ids of this manifest: what a component may reach is declared.
        for (i, (c, list)) in components.iter_mut().zip(targets).enumerate() {
            for t in list {
                if !check.ids.contains_key(&t.value) {
                    let why = format!(
                        "{:?} is not a component, provider or external service of this manifest",
                        t.value
                    );
                    return Err(check.invalid(
                        &t.referenced,
                        format!("components[{i}].targets"),
                        why,
                    ));
                }
                c.targets.push(t.value);
            }
        }
        grant_readers(&mut store, &components, &links);
        Ok(Self {
            name: raw.name.value,
            components,
            providers,
            links,
            secrets: store.into_values().collect(),
            externals,
        })
    }
}

/// A link to or from an external service stays within what it declares: its exports when
/// it is the target, its imports when it is the source. The error names the end (0: source,
/// 1: target) and why.
fn check_external_link(link: &Link, externals: &[External]) -> Result<(), (usize, String)> {
    for (end, id, what) in [(1, &link.target, "exports"), (0, &link.source, "imports")] {
        let Some(e) = externals.iter().find(|e| &e.id == id) else {
            continue;
        };
        let list = if end == 1 { &e.exports } else { &e.imports };
        let covered = link.interfaces.iter().all(|iface| {
            list.iter().any(|(ns, pkg, ifaces)| {
                ns == &link.namespace && pkg == &link.package && ifaces.contains(iface)
            })
        });
        if !covered {
            return Err((
                end,
                format!(
                    "external service {id} does not declare {}:{}/{} in its `{what}`",
                    link.namespace,
                    link.package,
                    link.interfaces.join(",")
                ),
            ));
        }
    }
    Ok(())
}

/// Adds to each declared secret's readers everyone the manifest gives it to.
fn grant_readers(
    store: &mut BTreeMap<String, StoreSecret>,
    components: &[Component],
    links: &[Link],
) {
    let mut give = |name: &String, id: &String| {
        if let Some(s) = store.get_mut(name) {
            s.readers.push(id.clone());
        }
    };
    for c in components {
        for name in c.secrets.values() {
            give(name, &c.id);
        }
    }
    for l in links {
        for name in l.source_secrets.values() {
            give(name, &l.source);
        }
        for name in l.target_secrets.values() {
            give(name, &l.target);
        }
    }
    for s in store.values_mut() {
        s.readers.sort();
        s.readers.dedup();
    }
}

/// A component or provider as checked: its id, source, config and secrets.
type Unit = (
    Spanned<String>,
    Source,
    BTreeMap<String, String>,
    BTreeMap<String, Spanned<RawSecret>>,
);

/// The checks of one manifest, each error naming the file, the place and the field.
struct Check<'a> {
    path: &'a Path,
    base: &'a Path,
    /// The ids defined so far (components and providers share them), with where.
    ids: BTreeMap<String, String>,
}

impl Check<'_> {
    fn invalid(
        &self,
        loc: &serde_saphyr::Location,
        field: String,
        message: String,
    ) -> ManifestError {
        ManifestError::Invalid {
            path: self.path.to_path_buf(),
            line: loc.line(),
            column: loc.column(),
            field,
            message,
        }
    }

    /// `value` is a valid NATS subject token (`kind` names it in the error).
    fn token(
        &self,
        value: &Spanned<String>,
        field: String,
        kind: &'static str,
    ) -> Result<(), ManifestError> {
        trellis_sdk::subjects::validate_token(kind, &value.value)
            .map_err(|e| self.invalid(&value.referenced, field, e.to_string()))
    }

    /// Records `id`, refusing one defined already.
    fn claim(&mut self, id: &Spanned<String>, field: String) -> Result<(), ManifestError> {
        if let Some(first) = self.ids.get(&id.value) {
            let why = format!("id {:?} is already used by {first}", id.value);
            return Err(self.invalid(&id.referenced, field, why));
        }
        self.ids.insert(id.value.clone(), field);
        Ok(())
    }

    /// Where a `kind` comes from: exactly one of `path` and `ref`.
    fn source(
        &self,
        kind: &str,
        field: &str,
        path_value: Option<Spanned<Text>>,
        reference: Option<Spanned<Text>>,
        at: &serde_saphyr::Location,
    ) -> Result<Source, ManifestError> {
        match (path_value, reference) {
            (Some(p), None) => Ok(Source::Path(self.base.join(p.value.0))),
            (None, Some(r)) if !r.value.0.is_empty() => Ok(Source::Ref(r.value.0)),
            (None, Some(r)) => {
                Err(self.invalid(&r.referenced, format!("{field}.ref"), "is empty".into()))
            }
            (Some(p), Some(_)) => Err(self.invalid(
                &p.referenced,
                field.to_string(),
                format!("a {kind} has either `path` or `ref`, not both"),
            )),
            (None, None) => Err(self.invalid(
                at,
                field.to_string(),
                format!("a {kind} needs `path` (a file) or `ref`"),
            )),
        }
    }

    /// Component or provider `i` of `list`: id, source, config and secrets.
    fn unit(
        &mut self,
        kind: &'static str,
        list: &str,
        i: usize,
        u: RawUnit,
    ) -> Result<Unit, ManifestError> {
        let field = format!("{list}[{i}]");
        self.token(&u.id, format!("{field}.id"), kind)?;
        self.claim(&u.id, format!("{field}.id"))?;
        let what = kind.trim_end_matches(" id");
        let source = self.source(what, &field, u.path, u.reference, &u.id.referenced)?;
        Ok((u.id, source, plain(u.config), u.secrets))
    }

    /// A secret's name in the store is valid.
    fn secret_name(
        &self,
        name: &str,
        at: &serde_saphyr::Location,
        field: &str,
    ) -> Result<(), ManifestError> {
        trellis_host::secret_store::validate_name("secret name", name)
            .map_err(|e| self.invalid(at, field.to_string(), e.to_string()))
    }

    /// Where a value comes from: exactly one of an environment variable and a file.
    fn value_source(
        &self,
        field: &str,
        env: Option<String>,
        file: Option<String>,
        at: &serde_saphyr::Location,
    ) -> Result<SecretSource, ManifestError> {
        match (env, file) {
            (Some(var), None) if !var.is_empty() => Ok(SecretSource::Env(var)),
            (None, Some(file)) if !file.is_empty() => Ok(SecretSource::File(self.base.join(file))),
            _ => {
                let why = "needs exactly one of `env: VARIABLE` or `file: path`";
                Err(self.invalid(at, field.to_string(), why.into()))
            }
        }
    }

    /// A component's secrets: the name it asks for → the store secret. A `{ secret: name }`
    /// names one; an `env:`/`file:` shorthand declares one of its own, `ID-NAME`.
    fn grants(
        &self,
        field: &str,
        id: &str,
        raw: BTreeMap<String, Spanned<RawSecret>>,
        store: &mut BTreeMap<String, StoreSecret>,
    ) -> Result<BTreeMap<String, String>, ManifestError> {
        let mut grants = BTreeMap::new();
        for (asked_as, secret) in raw {
            let at = format!("{field}.secrets.{asked_as}");
            let RawSecret {
                secret: name,
                env,
                file,
            } = secret.value;
            let name = match name {
                Some(name) if env.is_none() && file.is_none() => {
                    self.secret_name(&name, &secret.referenced, &at)?;
                    name
                }
                Some(_) => {
                    let why = "`secret:` names a store secret; it takes no `env:` or `file:`";
                    return Err(self.invalid(&secret.referenced, at, why.into()));
                }
                None => {
                    let source = self.value_source(&at, env, file, &secret.referenced)?;
                    let own: String = format!("{id}-{asked_as}")
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || c == '-' {
                                c
                            } else {
                                '_'
                            }
                        })
                        .collect();
                    self.secret_name(&own, &secret.referenced, &at)?;
                    if store.contains_key(&own) {
                        let why = format!(
                            "its own secret would be named {own:?}, which `secrets:` declares \
                             too; write `{{ secret: {own} }}` to use that one"
                        );
                        return Err(self.invalid(&secret.referenced, at, why));
                    }
                    store.insert(
                        own.clone(),
                        StoreSecret {
                            name: own.clone(),
                            source,
                            readers: Vec::new(),
                        },
                    );
                    own
                }
            };
            grants.insert(asked_as, name);
        }
        Ok(grants)
    }

    /// A link side's secrets: the key the side sees → a valid store secret name.
    fn link_secrets(
        &self,
        field: &str,
        raw: BTreeMap<String, Spanned<String>>,
    ) -> Result<BTreeMap<String, String>, ManifestError> {
        let mut out = BTreeMap::new();
        for (key, name) in raw {
            let at = format!("{field}.{key}");
            if key.is_empty() {
                return Err(self.invalid(&name.referenced, at, "the key is empty".into()));
            }
            self.secret_name(&name.value, &name.referenced, &at)?;
            out.insert(key, name.value);
        }
        Ok(out)
    }

    /// External service `i`: a valid, unused id and well-formed interfaces.
    fn external(&mut self, i: usize, e: RawExternal) -> Result<External, ManifestError> {
        let field = format!("external[{i}]");
        self.token(&e.id, format!("{field}.id"), "external service id")?;
        self.claim(&e.id, format!("{field}.id"))?;
        let wits = |list: Vec<Spanned<String>>, what: &str| {
            list.into_iter()
                .enumerate()
                .map(|(j, w)| {
                    parse_wit(&w.value)
                        .map_err(|m| self.invalid(&w.referenced, format!("{field}.{what}[{j}]"), m))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(External {
            id: e.id.value,
            exports: wits(e.exports, "exports")?,
            imports: wits(e.imports, "imports")?,
        })
    }

    /// Link `i`: both ends defined, a valid `wit`, and no other link of the same source,
    /// package and name (`seen`: those so far, with their index).
    fn link(
        &self,
        i: usize,
        l: RawLink,
        seen: &mut BTreeMap<(String, String, String, String), usize>,
    ) -> Result<Link, ManifestError> {
        let field = format!("links[{i}]");
        for (end, value) in [("source", &l.source), ("target", &l.target)] {
            if !self.ids.contains_key(&value.value) {
                let known: Vec<&str> = self.ids.keys().map(String::as_str).collect();
                let known = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                };
                let why = format!(
                    "{:?} is not a component or provider of this manifest (defined: {known})",
                    value.value
                );
                return Err(self.invalid(&value.referenced, format!("{field}.{end}"), why));
            }
        }
        let (namespace, package, interfaces) = parse_wit(&l.wit.value)
            .map_err(|m| self.invalid(&l.wit.referenced, format!("{field}.wit"), m))?;
        let name = match &l.name {
            Some(n) => {
                self.token(n, format!("{field}.name"), "link name")?;
                n.value.clone()
            }
            None => "default".to_string(),
        };
        let key = (
            l.source.value.clone(),
            namespace.clone(),
            package.clone(),
            name.clone(),
        );
        if let Some(first) = seen.insert(key, i) {
            let why = format!(
                "links[{first}] already links {}'s {namespace}:{package} under the name {name:?}; \
                 give one of them another `name`",
                l.source.value
            );
            return Err(self.invalid(&l.source.referenced, field, why));
        }
        Ok(Link {
            source: l.source.value,
            target: l.target.value,
            namespace,
            package,
            interfaces,
            name,
            source_config: plain(l.source_config),
            target_config: plain(l.target_config),
            source_secrets: self
                .link_secrets(&format!("{field}.source_secrets"), l.source_secrets)?,
            target_secrets: self
                .link_secrets(&format!("{field}.target_secrets"), l.target_secrets)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, Path::new("app.yaml"), Path::new("/apps"))
    }

    const GOOD: &str = "\
name: demo
components:
  - id: web
    path: web.wasm
    config: { greeting: hi, port: 8000, on: true }
providers:
  - id: http
    ref: http-server
links:
  - source: http
    target: web
    wit: wasi:http/incoming-handler
    source_config:
      address: 127.0.0.1:8000
";

    #[test]
    fn a_good_manifest_parses() {
        let m = parse(GOOD).expect("valid");
        assert_eq!(m.name, "demo");
        assert_eq!(
            m.components[0].source,
            Source::Path("/apps/web.wasm".into())
        );
        assert_eq!(m.components[0].config["port"], "8000");
        assert_eq!(m.components[0].config["on"], "true");
        assert_eq!(m.providers[0].source, Source::Ref("http-server".into()));
        let link = &m.links[0];
        assert_eq!(
            (
                link.namespace.as_str(),
                link.package.as_str(),
                link.name.as_str()
            ),
            ("wasi", "http", "default")
        );
        assert_eq!(link.interfaces, ["incoming-handler"]);
        assert_eq!(link.source_config["address"], "127.0.0.1:8000");
    }

    #[test]
    fn component_secrets_name_their_source() {
        let text = GOOD.replace(
            "    config: { greeting: hi, port: 8000, on: true }\n",
            "    config: { greeting: hi, port: 8000, on: true }\n    secrets:\n      api-key: { env: API_KEY }\n      cert: { file: certs/cert.pem }\n",
        );
        let m = parse(&text).expect("valid");
        // Shorthands become secrets of the component's own, readable by it alone.
        let grants = &m.components[0].secrets;
        assert_eq!(grants["api-key"], "web-api-key");
        assert_eq!(grants["cert"], "web-cert");
        let own = |name: &str| m.secrets.iter().find(|s| s.name == name).unwrap().clone();
        assert_eq!(
            own("web-api-key").source,
            SecretSource::Env("API_KEY".into())
        );
        assert_eq!(
            own("web-cert").source,
            SecretSource::File("/apps/certs/cert.pem".into())
        );
        assert_eq!(own("web-cert").readers, ["web"]);
        for bad in ["{ }", "{ env: A, file: b }", "{ env: \"\" }"] {
            let text = GOOD.replace(
                "    config: { greeting: hi, port: 8000, on: true }\n",
                &format!("    secrets:\n      api-key: {bad}\n"),
            );
            let err = parse(&text).expect_err(bad).to_string();
            assert!(err.contains("components[0].secrets.api-key"), "{err}");
            assert!(err.contains("exactly one of"), "{err}");
        }
        let text = GOOD.replace(
            "    ref: http-server\n",
            "    ref: http-server\n    secrets:\n      k: { env: K }\n",
        );
        let err = parse(&text).expect_err("provider secrets").to_string();
        assert!(err.contains("providers[0].secrets"), "{err}");
    }

    #[test]
    fn store_secrets_are_read_by_whom_the_manifest_gives_them() {
        let text = format!(
            "{}    target_secrets: {{ password: pw }}\n    source_secrets: {{ token: tok }}\n\
             secrets:\n  pw: {{ env: PW, readers: [ops] }}\n  tok: {{ file: tok.txt }}\n  \
             unused: {{ env: U }}\n",
            GOOD.replace(
                "    config: { greeting: hi, port: 8000, on: true }\n",
                "    secrets:\n      key: { secret: pw }\n",
            )
        );
        let m = parse(&text).expect("valid");
        let l = &m.links[0];
        assert_eq!(l.target_secrets["password"], "pw");
        assert_eq!(l.source_secrets["token"], "tok");
        let readers = |name: &str| {
            m.secrets
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.readers.clone())
                .unwrap()
        };
        // pw: listed (ops), granted to web, and the link's target (web).
        assert_eq!(readers("pw"), ["ops", "web"]);
        assert_eq!(readers("tok"), ["http"]);
        assert!(readers("unused").is_empty());
        for (bad, field) in [
            ("  bad.name: { env: X }\n", "secrets.bad.name"),
            ("  x: { env: X, readers: [\"a.b\"] }\n", "secrets.x.readers"),
        ] {
            let text = format!("{GOOD}secrets:\n{bad}");
            let err = parse(&text).expect_err(bad).to_string();
            assert!(err.contains(field), "{err}");
        }
        let text = format!("{GOOD}    target_secrets: {{ password: \"no/slash\" }}\n");
        let err = parse(&text).expect_err("bad link secret").to_string();
        assert!(err.contains("links[0].target_secrets.password"), "{err}");
        let text = GOOD.replace(
            "    config: { greeting: hi, port: 8000, on: true }\n",
            "    secrets:\n      key: { secret: pw, env: X }\n",
        );
        let err = parse(&text).expect_err("both").to_string();
        assert!(err.contains("takes no `env:`"), "{err}");
    }

    #[test]
    fn targets_name_ids_of_the_manifest() {
        let text = GOOD.replace(
            "    config: { greeting: hi, port: 8000, on: true }\n",
            "    targets: [http]\n",
        );
        assert_eq!(parse(&text).expect("valid").components[0].targets, ["http"]);
        let text = GOOD.replace(
            "    config: { greeting: hi, port: 8000, on: true }\n",
            "    targets: [elsewhere]\n",
        );
        let err = parse(&text).expect_err("unknown target").to_string();
        assert!(
            err.contains("components[0].targets") && err.contains("elsewhere"),
            "{err}"
        );
    }

    #[test]
    fn external_services_are_linked_within_what_they_declare() {
        let base = "name: demo\ncomponents:\n  - id: web\n    path: web.wasm\n\
                    external:\n  - id: greeter\n    exports: [\"trellis-test:greeter/greet\"]\n\
                    links:\n  - source: web\n    target: greeter\n";
        let m = parse(&format!("{base}    wit: trellis-test:greeter/greet\n")).expect("valid");
        assert_eq!(m.externals[0].id, "greeter");
        assert_eq!(m.links[0].target, "greeter");
        let err = parse(&format!("{base}    wit: wasi:keyvalue/store\n"))
            .expect_err("undeclared")
            .to_string();
        assert!(
            err.contains("links[0]")
                && err.contains("does not declare wasi:keyvalue/store in its `exports`"),
            "{err}"
        );
        let good = format!("{base}    wit: trellis-test:greeter/greet\n");
        let err = parse(&good.replace("id: greeter", "id: web"))
            .expect_err("duplicate id")
            .to_string();
        assert!(err.contains("external[0].id"), "{err}");
    }

    #[test]
    fn an_unknown_link_target_points_at_its_line() {
        let text = GOOD.replace("target: web", "target: wbe");
        let err = parse(&text).expect_err("unknown target").to_string();
        assert!(
            err.starts_with(
                "app.yaml:11:13: links[0].target: \"wbe\" is not a component or provider"
            ),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_field_is_named_with_its_line() {
        let text = GOOD.replace("    wit: wasi", "    wti: wasi");
        let err = parse(&text).expect_err("unknown field").to_string();
        assert!(err.contains("wti"), "{err}");
        assert!(err.contains("12"), "no line in: {err}");
    }

    #[test]
    fn duplicate_ids_and_bad_wit_are_refused() {
        let text = GOOD.replace("id: http", "id: web");
        let err = parse(&text).expect_err("duplicate").to_string();
        assert!(
            err.contains("app.yaml:7:") && err.contains("already used by components[0].id"),
            "{err}"
        );
        let text = GOOD.replace("wasi:http/incoming-handler", "wasi-http");
        let err = parse(&text).expect_err("bad wit").to_string();
        assert!(
            err.contains("links[0].wit") && err.contains("namespace:package"),
            "{err}"
        );
    }

    #[test]
    fn environment_references_expand_or_fail_precisely() {
        let env = |name: &str| (name == "PORT").then(|| "9000".to_string());
        assert_eq!(expand("a:${PORT}", env).as_deref(), Ok("a:9000"));
        assert_eq!(expand("${NOPE:-7}", env).as_deref(), Ok("7"));
        assert_eq!(expand("$$5 $x", env).as_deref(), Ok("$5 $x"));
        assert!(
            expand("${NOPE}", env)
                .unwrap_err()
                .contains("NOPE is not set")
        );
        assert!(expand("${OPEN", env).is_err());
        let text = GOOD.replace(
            "127.0.0.1:8000",
            "127.0.0.1:${TRELLIS_TEST_SURELY_UNSET_VAR}",
        );
        let err = parse(&text).expect_err("unset").to_string();
        assert!(
            err.contains("TRELLIS_TEST_SURELY_UNSET_VAR is not set"),
            "{err}"
        );
        assert!(
            err.starts_with("app.yaml:14:16: environment variable"),
            "no line in: {err}"
        );
        assert!(err.contains("--> app.yaml:14:16"), "no snippet in: {err}");
    }

    const COMPOSED: &str = "\
name: c
components:
  - id: app
    path: app.wasm
    compose: [parts/cache.wasm]
  - id: greeter
    path: g.wasm
providers:
  - id: kv
    ref: keyvalue-nats
links:
  - source: app
    target: greeter
    wit: acme:greeter/greet,polite
    mode: composed
  - source: app
    target: kv
    wit: wasi:keyvalue/store
";

    #[test]
    fn compositions_fold_into_their_components() {
        let m = parse(COMPOSED).expect("valid");
        let app = &m.components[0];
        assert_eq!(
            app.compose,
            [
                ComposePart::Path {
                    path: PathBuf::from("/apps/parts/cache.wasm"),
                    name: "cache.wasm".into()
                },
                ComposePart::Component("greeter".into())
            ]
        );
        assert_eq!(app.compose[0].name(), "cache.wasm");
        assert_eq!(
            app.compose_uses,
            [
                ("acme:greeter/greet".to_string(), "greeter".to_string()),
                ("acme:greeter/polite".to_string(), "greeter".to_string())
            ]
        );
        assert_eq!(m.links.len(), 1, "the composed link is not put at runtime");
        assert_eq!(m.links[0].target, "kv");
        assert!(m.components[1].compose.is_empty());
    }

    #[test]
    fn bad_compositions_are_named() {
        for (from, to, why) in [
            (
                "    target: greeter\n    wit: acme:greeter/greet,polite\n    mode: composed",
                "    target: kv\n    wit: acme:greeter/greet,polite\n    mode: composed",
                "links[0].mode: a composed link joins two components of this manifest",
            ),
            (
                "mode: composed",
                "mode: sideways",
                "\"sideways\" is not a link mode",
            ),
            (
                "mode: composed",
                "mode: composed\n    target_config: { a: b }",
                "a composed link carries no config or secrets",
            ),
            (
                "[parts/cache.wasm]",
                "[cache]",
                "components[0].compose: \"cache\" is neither a component of this manifest nor a .wasm file",
            ),
            (
                "[parts/cache.wasm]",
                "[app]",
                "cannot be composed into itself",
            ),
            (
                "mode: composed",
                "mode: composed\n    name: backup",
                "links[0].name: a composed link has no `name`",
            ),
            (
                "    ref: keyvalue-nats",
                "    ref: keyvalue-nats\n    compose: [app]",
                "providers[0].compose: `compose` is for components",
            ),
        ] {
            let text = COMPOSED.replace(from, to);
            assert_ne!(text, COMPOSED, "{from}");
            let err = parse(&text).expect_err(why).to_string();
            assert!(err.contains(why), "{why}: {err}");
        }
        // Two composed links may not take one interface from two components.
        let text = COMPOSED
            .replace(
                "    path: g.wasm\n",
                "    path: g.wasm\n  - id: g2\n    path: g2.wasm\n",
            )
            .replace(
                "    mode: composed\n",
                "    mode: composed\n  - source: app\n    target: g2\n    wit: acme:greeter/greet\n    mode: composed\n",
            );
        let err = parse(&text).expect_err("two choices").to_string();
        assert!(
            err.contains("links[0] already links app's acme:greeter under the name \"default\""),
            "{err}"
        );
        // Two files of one name are told apart by their paths as written.
        let m = parse(&COMPOSED.replace("[parts/cache.wasm]", "[a/cache.wasm, b/cache.wasm]"))
            .expect("valid");
        let names: Vec<&str> = m.components[0].compose.iter().map(|p| p.name()).collect();
        assert_eq!(names, ["a/cache.wasm", "b/cache.wasm", "greeter"]);
        // Listing a part and linking it composed says the same thing twice: one part.
        let m = parse(&COMPOSED.replace("[parts/cache.wasm]", "[greeter]")).expect("valid");
        assert_eq!(m.components[0].compose.len(), 1);
    }

    #[test]
    fn provider_modes_are_checked() {
        let m = parse(&COMPOSED.replace(
            "    ref: keyvalue-nats",
            "    ref: keyvalue-nats\n    mode: in-process",
        ))
        .expect("valid");
        assert_eq!(
            m.providers[0].in_process,
            Some(trellis_host::in_process::InProcessKind::KeyvalueNats)
        );
        assert_eq!(
            parse(COMPOSED).expect("valid").providers[0].in_process,
            None
        );
        for (from, to, why) in [
            (
                "    ref: keyvalue-nats",
                "    ref: http-server\n    mode: in-process",
                "providers[0].mode: in-process runs a provider shipped with Trellis, by `ref`: keyvalue-redis, keyvalue-nats",
            ),
            (
                "    ref: keyvalue-nats",
                "    path: ./kv\n    mode: in-process",
                "in-process runs a provider shipped with Trellis",
            ),
            (
                "    ref: keyvalue-nats",
                "    ref: keyvalue-nats\n    mode: thread",
                "\"thread\" is not a provider mode (process, in-process)",
            ),
            (
                "    path: g.wasm",
                "    path: g.wasm\n    mode: in-process",
                "components[1].mode: `mode` is for providers (in-process) and links (composed)",
            ),
        ] {
            let err = parse(&COMPOSED.replace(from, to))
                .expect_err(why)
                .to_string();
            assert!(err.contains(why), "{why}: {err}");
        }
    }
}
