//! Modes in manifests — where a provider runs, how a link is served — and composition: a
//! provider with `mode: in-process` runs in the host's process; a component's `compose:` list (ids of this manifest's
//! components, or `.wasm` paths) and links between two components that say
//! `mode: composed`, folded into each component's parts and choices. `up` composes each such
//! component before loading it; the composed links are not put on the lattice.
//!
//! ```yaml
//! components:
//!   - id: app
//!     path: app.wasm
//!     compose: [./parts/cache.wasm]   # wired by interface, as `trellis compose` does
//!   - id: greeter
//!     path: greeter.wasm
//! links:
//!   - source: app
//!     target: greeter
//!     wit: acme:greeter/greet
//!     mode: composed                  # built in, not called over the lattice
//! ```

use std::path::{Path, PathBuf};

use serde_saphyr::Spanned;

use trellis_host::in_process::InProcessKind;

use super::{Check, Component, Link, ManifestError};

/// A part composed into a component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ComposePart {
    /// Another component of the manifest (its wasm as its source gives it).
    Component(String),
    /// A component file.
    Path {
        /// Resolved against the manifest's directory.
        path: PathBuf,
        /// Its file name, or the path as written when another part has the same file name.
        name: String,
    },
}

impl ComposePart {
    /// How plans and the inventory name it: the id, or the file's name.
    pub fn name(&self) -> &str {
        match self {
            ComposePart::Component(id) => id,
            ComposePart::Path { name, .. } => name,
        }
    }
}

/// How a link is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LinkMode {
    /// Over the lattice (the default).
    Runtime,
    /// Built into the source at build time.
    Composed,
}

impl Check<'_> {
    /// Provider `i`'s `mode`: in its own process (the default, `process`) or in the host's
    /// (`in-process`, for the providers the host links in).
    pub(super) fn provider_mode(
        &self,
        i: usize,
        mode: Option<&Spanned<String>>,
        source: &super::Source,
    ) -> Result<Option<InProcessKind>, ManifestError> {
        let field = format!("providers[{i}].mode");
        let Some(m) = mode else { return Ok(None) };
        match m.value.as_str() {
            "process" => Ok(None),
            "in-process" => {
                let kind = match source {
                    super::Source::Ref(name) => InProcessKind::from_name(name),
                    super::Source::Path(_) => None,
                };
                kind.map(Some).ok_or_else(|| {
                    let names: Vec<&str> = InProcessKind::ALL.iter().map(|k| k.name()).collect();
                    let why = format!(
                        "in-process runs a provider shipped with Trellis, by `ref`: {}",
                        names.join(", ")
                    );
                    self.invalid(&m.referenced, field.clone(), why)
                })
            }
            other => Err(self.invalid(
                &m.referenced,
                field,
                format!("{other:?} is not a provider mode (process, in-process)"),
            )),
        }
    }

    /// A link's `mode`.
    pub(super) fn link_mode(
        &self,
        field: &str,
        mode: Option<&Spanned<String>>,
    ) -> Result<LinkMode, ManifestError> {
        match mode {
            None => Ok(LinkMode::Runtime),
            Some(m) if m.value == "runtime" => Ok(LinkMode::Runtime),
            Some(m) if m.value == "composed" => Ok(LinkMode::Composed),
            Some(m) => Err(self.invalid(
                &m.referenced,
                format!("{field}.mode"),
                format!("{:?} is not a link mode (runtime, composed)", m.value),
            )),
        }
    }

    /// Component `i`'s `compose:` entries, each another component of the manifest or a
    /// `.wasm` path.
    pub(super) fn compose_entries(
        &self,
        i: usize,
        components: &[Component],
        entries: Vec<Spanned<String>>,
    ) -> Result<Vec<ComposePart>, ManifestError> {
        let id = &components[i].id;
        let file_name = |written: &str| {
            Path::new(written)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| written.to_string())
        };
        let mut parts: Vec<ComposePart> = Vec::new();
        for (k, e) in entries.iter().enumerate() {
            let field = format!("components[{i}].compose");
            let part = if components.iter().any(|c| c.id == e.value) {
                if &e.value == id {
                    let why = "a component cannot be composed into itself".to_string();
                    return Err(self.invalid(&e.referenced, field, why));
                }
                ComposePart::Component(e.value.clone())
            } else if e.value.ends_with(".wasm") {
                let name = file_name(&e.value);
                let shared = entries
                    .iter()
                    .enumerate()
                    .any(|(j, o)| j != k && o.value != e.value && file_name(&o.value) == name);
                ComposePart::Path {
                    path: self.base.join(&e.value),
                    name: if shared { e.value.clone() } else { name },
                }
            } else {
                let why = format!(
                    "{:?} is neither a component of this manifest nor a .wasm file",
                    e.value
                );
                return Err(self.invalid(&e.referenced, field, why));
            };
            if parts.iter().any(|p| p.name() == part.name()) {
                let why = format!("{} is listed twice", part.name());
                return Err(self.invalid(&e.referenced, field, why));
            }
            parts.push(part);
        }
        Ok(parts)
    }

    /// Folds link `i` (`mode: composed`) into its source component: the target becomes a
    /// part, and the part serving each of the link's interfaces.
    pub(super) fn fold_composed_link(
        &self,
        i: usize,
        link: Link,
        at: &serde_saphyr::Location,
        components: &mut [Component],
    ) -> Result<(), ManifestError> {
        let field = format!("links[{i}]");
        let is_component = |id: &str| components.iter().any(|c| c.id == id);
        if !is_component(&link.source) || !is_component(&link.target) {
            let why = "a composed link joins two components of this manifest (providers and \
                       external services are reached over the lattice)";
            return Err(self.invalid(at, format!("{field}.mode"), why.into()));
        }
        if link.source == link.target {
            let why = "a component cannot be composed into itself";
            return Err(self.invalid(at, format!("{field}.mode"), why.into()));
        }
        let carries = !link.source_config.is_empty()
            || !link.target_config.is_empty()
            || !link.source_secrets.is_empty()
            || !link.target_secrets.is_empty();
        if carries {
            let why = "a composed link carries no config or secrets (there is no call over \
                       the lattice to carry them): give them to the components";
            return Err(self.invalid(at, format!("{field}.mode"), why.into()));
        }
        // Without names, two composed links cannot take one interface from two components:
        // the manifest's check of duplicate links refuses that already.
        if link.name != trellis_sdk::link::DEFAULT_LINK_NAME {
            let why = "a composed link has no `name`: names choose among runtime links";
            return Err(self.invalid(at, format!("{field}.name"), why.into()));
        }
        let Some(source) = components.iter_mut().find(|c| c.id == link.source) else {
            return Ok(());
        };
        let part = ComposePart::Component(link.target.clone());
        if !source.compose.contains(&part) {
            source.compose.push(part);
        }
        for iface in &link.interfaces {
            source.compose_uses.push((
                format!("{}:{}/{iface}", link.namespace, link.package),
                link.target.clone(),
            ));
        }
        Ok(())
    }
}
