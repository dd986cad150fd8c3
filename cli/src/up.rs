//! `trellis up`: a whole local lattice from one manifest, stopped cleanly on Ctrl-C.
//!
//! Order matters and is the same every time: NATS (started, or joined), the host, named
//! config and components, links (so providers find them in their host data), providers,
//! then a wait until every provider runs and every link it holds is reported by link ping.
//! Stopping goes the other way: providers (graceful shutdown, then a kill after the grace
//! period), components, and NATS last. On a lattice we joined (`--nats-url`), links and
//! config stay: other machines may run the same app on it.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use trellis_host::engine::Limits;
use trellis_host::lattice::LatticeAdmin;
use trellis_host::supervisor::{
    ProviderSpec, ProviderState, SupervisedProvider, SupervisorOptions,
};
use trellis_host::{Host, HostOptions, RunningComponent};
use trellis_sdk::admin::{ping_links, provider_health};
use trellis_sdk::connect::{NatsAuth, NatsOptions};
use trellis_sdk::host_data::SecretValue;
use trellis_sdk::link::LinkState;
use trellis_sdk::sealing::SecretReference;
use trellis_sdk::store::{LatticeStore, SECRET_PREFIX, StoredLink};
use trellis_sdk::subjects::LatticeSubjects;

use crate::authorize::{self, Authorization};
use crate::inspect;
use crate::manifest::{Link, Manifest, SecretSource, Source};
use crate::nats_server::{self, NatsServer};
use crate::session::{self, Session, State};

/// What `up` was asked for.
#[derive(Debug)]
pub struct UpOptions {
    /// The manifest.
    pub manifest: PathBuf,
    /// The lattice.
    pub lattice: String,
    /// Join this NATS instead of starting one.
    pub join: Option<NatsOptions>,
    /// How to connect to the NATS we start (credentials do not apply to it).
    pub port: u16,
    /// The nats-server binary, if given.
    pub nats_server: Option<PathBuf>,
    /// How long to wait for providers and links before reporting what is not ready.
    pub ready_timeout: Duration,
    /// The secret store's key file (used, and created when missing, when the manifest has
    /// secrets).
    pub secrets_key: PathBuf,
}

/// Progress lines, on stderr (stdout stays free for what scripts read).
fn step(mark: &str, what: &str, detail: impl std::fmt::Display) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "  {mark} {what:<28} {detail}");
}

/// A config name from parts, keeping only characters named config allows.
fn config_name(parts: &[&str]) -> String {
    parts
        .join("-")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '=') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Where a provider's binary is: a `path:` as given, or the binary for this machine inside
/// a provider archive (`.par.gz`/`.par`, unpacked once under the Trellis home); a `ref` next
/// to the `trellis` binary (a build or an install puts them together), else on PATH.
async fn provider_binary(source: &Source) -> anyhow::Result<PathBuf> {
    match source {
        Source::Path(path) if !path.is_file() => {
            bail!("provider binary {} does not exist", path.display())
        }
        Source::Path(path) if is_archive(path) => {
            crate::package::unpack(path, &session::home().join("providers")).await
        }
        Source::Path(path) => Ok(path.clone()),
        Source::Ref(name) => {
            let sibling = std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|d| d.join(name)));
            let on_path = std::env::var_os("PATH")
                .into_iter()
                .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .map(|d| d.join(name));
            sibling
                .into_iter()
                .chain(on_path)
                .find(|p| p.is_file())
                .with_context(|| {
                    format!(
                        "provider {name:?} not found next to the trellis binary or on PATH \
                         (build it with `cargo build --bins`, or give `path:`)"
                    )
                })
        }
    }
}

/// Whether `path` names a provider archive.
pub(crate) fn is_archive(path: &Path) -> bool {
    let name = path.to_string_lossy();
    name.ends_with(".par.gz") || name.ends_with(".par")
}

pub(crate) fn component_ref(source: &Source) -> String {
    match source {
        Source::Path(p) => p.display().to_string(),
        Source::Ref(r) => r.clone(),
    }
}

/// Everything `up` started, to stop in order.
struct Running {
    host: Host,
    components: Vec<RunningComponent>,
    providers: Vec<SupervisedProvider>,
    in_process: Vec<trellis_host::in_process::InProcessProvider>,
    links: Vec<StoredLink>,
    configs: Vec<String>,
    /// Keeps the NATS authorization in step with the links (while `up` runs).
    _authorization: Option<trellis_sdk::task::AbortOnDrop>,
}

/// Runs `up` until Ctrl-C or SIGTERM.
pub async fn up(opts: UpOptions) -> anyhow::Result<()> {
    let manifest = Manifest::load(&opts.manifest)?;
    let home = session::home();
    let wasm = preflight(&manifest, &home).await?;
    let session = Session::acquire(&home)?;
    // From here on Ctrl-C is ours: it must stop what was started, even half way through
    // starting (the children are in their own process groups and would outlive us).
    let mut signals = Signals::new()?;
    let subjects = LatticeSubjects::new(&opts.lattice)?;
    let mut provider_bins = Vec::new();
    for p in manifest.providers.iter().filter(|p| p.in_process.is_none()) {
        let binary = provider_binary(&p.source).await;
        provider_bins.push(binary.with_context(|| format!("provider {}", p.id))?);
    }

    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "trellis up: app {:?} on lattice {:?}",
        manifest.name, opts.lattice
    );
    drop(err);
    let started = Instant::now();

    let run_dir = home.join("up");
    let host_id = format!("trellis-up-{}", std::process::id());
    let Some((server, nats_opts, authz)) =
        start_nats(&manifest, &opts, &subjects, &home, &host_id, &mut signals).await?
    else {
        return Ok(()); // interrupted
    };
    let admin_creds = match &authz {
        Some(a) => Some(issue_credentials(a, &run_dir, &nats_opts.url)?),
        None => None,
    };
    let authz = authz.map(|a| Arc::new(Mutex::new(a)));
    let nats_url = nats_opts.url.clone();
    let nats = nats_opts
        .connect()
        .await
        .with_context(|| format!("cannot join the lattice at {nats_url}"))?;
    if server.is_none() {
        step("✓", "nats", format!("{nats_url} (joined)"));
    }

    let starting = start(
        &manifest,
        &opts,
        nats.clone(),
        &nats_opts,
        &provider_bins,
        &home,
        wasm,
        Access {
            host_id: &host_id,
            authz,
            reloader: server.as_ref().and_then(NatsServer::reloader),
        },
    );
    // Interrupted while starting: dropping the half-built state kills what it started.
    let result = tokio::select! {
        r = starting => r.map(Some),
        () = signals.recv() => Ok(None),
    };
    let running = match result {
        Ok(Some(running)) => running,
        other => {
            if let Some(server) = server {
                server.stop(Duration::from_secs(5)).await;
                let _ = std::fs::remove_dir_all(&run_dir);
            }
            return other.map(|_| ());
        }
    };

    let urls = http_urls(&manifest);
    let ready = tokio::select! {
        ready = wait_ready(&manifest, &running, &nats, &subjects, opts.ready_timeout) => Some(ready),
        () = signals.recv() => None,
    };
    let Some(ready) = ready else {
        finish(running, opts.join.is_some(), &nats, server, &run_dir).await;
        return Ok(());
    };
    session.publish(&State {
        pid: std::process::id(),
        app: manifest.name.clone(),
        lattice: opts.lattice.clone(),
        nats_url: nats_url.clone(),
        urls: urls.clone(),
        nats_creds: admin_creds.clone(),
    })?;
    {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "\n{} in {:.1} s: {} component(s), {} provider(s), {} link(s){}",
            if ready {
                "ready"
            } else {
                "started with problems (above)"
            },
            started.elapsed().as_secs_f64(),
            manifest.components.len(),
            manifest.providers.len(),
            manifest.links.len(),
            if ready {
                ""
            } else {
                "; see `trellis link ping`"
            },
        );
        let _ = writeln!(err, "  lattice  {} on {}", opts.lattice, nats_url);
        for url in &urls {
            let _ = writeln!(err, "  http     {url}");
        }
        let _ = writeln!(
            err,
            "  try      trellis inventory   (in another terminal)\nCtrl-C stops everything."
        );
    }

    signals.recv().await;
    finish(running, opts.join.is_some(), &nats, server, &run_dir).await;
    drop(session);
    Ok(())
}

/// NATS: ours (fresh JetStream each time, with authorization derived from the manifest) or
/// the one we were pointed at (its operator's authorization); `None` if interrupted.
async fn start_nats(
    manifest: &Manifest,
    opts: &UpOptions,
    subjects: &LatticeSubjects,
    home: &Path,
    host_id: &str,
    signals: &mut Signals,
) -> anyhow::Result<Option<(Option<NatsServer>, NatsOptions, Option<Authorization>)>> {
    if let Some(join) = &opts.join {
        return Ok(Some((None, join.clone(), None)));
    }
    let run_dir = home.join("up");
    let binary = nats_server::locate(opts.nats_server.as_deref(), home)?;
    let _ = std::fs::remove_dir_all(&run_dir);
    let mut authz = Authorization::for_manifest(manifest, subjects, host_id)?;
    let config = authz.server_config()?;
    // Interrupted here, the half-started server is killed on drop.
    let server = tokio::select! {
        server = NatsServer::start(&binary, opts.port, &run_dir, Some(&config)) => server?,
        () = signals.recv() => return Ok(None),
    };
    let nats_opts = NatsOptions {
        url: server.url.clone(),
        auth: NatsAuth::Jwt {
            jwt: authz.admin.jwt.clone().into(),
            seed: authz.admin.seed.clone(),
        },
        ..NatsOptions::default()
    };
    step(
        "✓",
        "nats-server",
        format!(
            "{} (JetStream; an identity per process, granted by the links)",
            server.url
        ),
    );
    Ok(Some((Some(server), nats_opts, Some(authz))))
}

/// Writes the admin's credentials (answered, for `up.json`) and each external service's,
/// saying where the latter are.
fn issue_credentials(authz: &Authorization, run_dir: &Path, url: &str) -> anyhow::Result<PathBuf> {
    let admin = authz.write_admin_creds(run_dir)?;
    for (id, creds) in authz.write_external_creds(run_dir)? {
        step(
            "✓",
            &format!("external {id}"),
            format!(
                "credentials {} (start it standalone: --provider-id {id} --nats-url {url} --nats-creds …)",
                creds.display(),
            ),
        );
    }
    Ok(admin)
}

/// Stops everything, NATS last.
async fn finish(
    running: Running,
    joined: bool,
    nats: &async_nats::Client,
    server: Option<NatsServer>,
    run_dir: &Path,
) {
    let _ = writeln!(std::io::stderr().lock(), "\nstopping…");
    stop(running, joined, nats).await;
    if let Some(server) = server {
        server.stop(Duration::from_secs(5)).await;
        step("✓", "nats-server", "stopped");
        let _ = std::fs::remove_dir_all(run_dir);
    }
}

fn lock(authz: &Mutex<Authorization>) -> std::sync::MutexGuard<'_, Authorization> {
    authz.lock().unwrap_or_else(|p| p.into_inner())
}

/// Who may do what on the lattice `up` runs.
struct Access<'a> {
    host_id: &'a str,
    /// The authorization of the NATS `up` started (none when it joined one).
    authz: Option<Arc<Mutex<Authorization>>>,
    /// What reloads that server's authorization.
    reloader: Option<nats_server::Reloader>,
}

#[allow(clippy::too_many_arguments)]
async fn start(
    manifest: &Manifest,
    opts: &UpOptions,
    nats: async_nats::Client,
    nats_opts: &NatsOptions,
    provider_bins: &[PathBuf],
    home: &Path,
    wasm: HashMap<String, Loaded>,
    access: Access<'_>,
) -> anyhow::Result<Running> {
    let subjects = LatticeSubjects::new(&opts.lattice)?;
    // The lattice's buckets exist before anyone with narrower grants opens them.
    let store = LatticeStore::open(&nats, &subjects)
        .await
        .context("cannot open the lattice store")?;
    let secrets_key = put_secrets(manifest, opts, &nats).await?;
    let host = start_host(opts, &nats, nats_opts, home, &access, secrets_key).await?;
    step("✓", "host", access.host_id);
    record_identities(manifest, &store, &host, &access).await?;
    let admin = LatticeAdmin::new(
        store.clone(),
        nats.clone(),
        subjects.clone(),
        access.host_id.to_string(),
    );
    let mut running = Running {
        host,
        components: Vec::new(),
        providers: Vec::new(),
        in_process: Vec::new(),
        links: Vec::new(),
        configs: Vec::new(),
        _authorization: None,
    };
    start_components(manifest, &admin, &mut running, wasm).await?;
    put_links(manifest, &admin, &mut running).await?;
    for p in &manifest.providers {
        let Some(kind) = p.in_process else { continue };
        let identity = access.authz.as_ref().and_then(|a| lock(a).provider(&p.id));
        let config = p.config.clone().into_iter().collect();
        let provider = running
            .host
            .start_in_process(&p.id, kind, config, identity)
            .await
            .with_context(|| format!("cannot start provider {}", p.id))?;
        step(
            "✓",
            &format!("provider {}", p.id),
            format!("in-process ({})", kind.name()),
        );
        running.in_process.push(provider);
    }
    let own_process = manifest.providers.iter().filter(|p| p.in_process.is_none());
    for (p, bin) in own_process.zip(provider_bins) {
        let spec = ProviderSpec {
            id: p.id.clone(),
            path: bin.clone(),
            config: p.config.clone().into_iter().collect(),
        };
        let identity = access.authz.as_ref().and_then(|a| lock(a).provider(&p.id));
        let provider = running
            .host
            .start_provider_as(spec, SupervisorOptions::default(), identity)
            .with_context(|| format!("cannot start provider {}", p.id))?;
        running.providers.push(provider);
    }
    // From here on, links changed at runtime change the grants (the manifest's links are
    // granted from the start).
    if let (Some(authz), Some(reloader)) = (&access.authz, access.reloader) {
        running._authorization = Some(authorize::follow(
            Arc::clone(authz),
            store.clone(),
            reloader,
        ));
    }
    Ok(running)
}

/// The host: joined as its own identity when the server knows identities (as `up`
/// otherwise), signing its components' calls with that identity's key.
async fn start_host(
    opts: &UpOptions,
    nats: &async_nats::Client,
    nats_opts: &NatsOptions,
    home: &Path,
    access: &Access<'_>,
    secrets_key: Option<Arc<trellis_sdk::sealing::XKeyPair>>,
) -> anyhow::Result<Host> {
    let mut source_key = None;
    let host_nats = match &access.authz {
        Some(authz) => {
            let (auth, inbox) = lock(authz).host_auth();
            if let NatsAuth::Jwt { seed, .. } = &auth {
                source_key = Some(seed.clone());
            }
            NatsOptions {
                auth,
                inbox_prefix: Some(inbox),
                name: Some(access.host_id.to_string()),
                ..nats_opts.clone()
            }
            .connect()
            .await
            .context("the host cannot join the lattice")?
        }
        None => nats.clone(),
    };
    Host::new(
        host_nats,
        HostOptions {
            lattice: opts.lattice.clone(),
            host_id: access.host_id.to_string(),
            // The providers join as `up` did (unless they have identities of their own):
            // same server, credentials and TLS.
            nats_url: nats_opts.url.clone(),
            nats_auth: nats_opts.auth.clone(),
            nats_tls: nats_opts.tls.clone(),
            limits: Limits::default(),
            cache_dir: Some(home.join("compiled")),
            secrets_key,
            source_key,
            ..HostOptions::default()
        },
    )
    .await
    .context("cannot start the host")
}

/// Records in the lattice store who speaks for each source (calls naming a component must
/// prove it with the host's key, calls naming a provider with the provider's own) and which
/// ids are external services.
async fn record_identities(
    manifest: &Manifest,
    store: &LatticeStore,
    host: &Host,
    access: &Access<'_>,
) -> anyhow::Result<()> {
    let mut speakers: Vec<(String, String)> = Vec::new();
    if let Some(key) = host.source_public_key() {
        speakers.extend(
            manifest
                .components
                .iter()
                .map(|c| (c.id.clone(), key.clone())),
        );
    }
    if let Some(authz) = &access.authz {
        speakers.extend(lock(authz).provider_source_keys());
    }
    for e in &manifest.externals {
        let wits = |list: &[(String, String, Vec<String>)]| {
            list.iter()
                .map(|(ns, pkg, ifaces)| format!("{ns}:{pkg}/{}", ifaces.join(",")))
                .collect()
        };
        let spec = trellis_sdk::store::ExternalSpec {
            exports: wits(&e.exports),
            imports: wits(&e.imports),
        };
        store
            .set_external(&e.id, spec)
            .await
            .with_context(|| format!("cannot declare external service {}", e.id))?;
    }
    for (id, key) in speakers {
        store
            .set_source_keys(&id, vec![key])
            .await
            .with_context(|| format!("cannot record the key speaking for {id}"))?;
    }
    Ok(())
}

/// Puts named config `name` (answered back, to record).
async fn put_config(
    admin: &LatticeAdmin,
    name: String,
    values: &BTreeMap<String, String>,
) -> anyhow::Result<String> {
    let values: HashMap<String, String> = values.clone().into_iter().collect();
    admin
        .put_config(&name, &values)
        .await
        .with_context(|| format!("cannot put config {name}"))?;
    Ok(name)
}

/// Each component with its config, secrets and target policy.
async fn start_components(
    manifest: &Manifest,
    admin: &LatticeAdmin,
    running: &mut Running,
    mut wasm: HashMap<String, Loaded>,
) -> anyhow::Result<()> {
    for c in &manifest.components {
        let mut names = Vec::new();
        if !c.config.is_empty() {
            let name = config_name(&[&manifest.name, &c.id]);
            names.push(put_config(admin, name, &c.config).await?);
        }
        running.configs.extend(names.iter().cloned());
        let Some(loaded) = wasm.remove(&c.id) else {
            bail!("component {} was not loaded", c.id);
        };
        let reference = loaded.reference;
        let secrets = running
            .host
            .component_secrets(&c.id, &c.secrets)
            .await
            .with_context(|| format!("cannot read the secrets of component {}", c.id))?;
        running.host.allow_targets(&c.id, c.targets.clone());
        let component = running
            .host
            .start_component_loaded(&c.id, loaded.wasm, &reference, &names, secrets)
            .await
            .with_context(|| format!("cannot start component {}", c.id))?;
        step("✓", &format!("component {}", c.id), &reference);
        running.components.push(component);
    }
    Ok(())
}

/// Each link, with its config and secret references as named config.
async fn put_links(
    manifest: &Manifest,
    admin: &LatticeAdmin,
    running: &mut Running,
) -> anyhow::Result<()> {
    for (i, l) in manifest.links.iter().enumerate() {
        let index = i.to_string();
        let mut link = StoredLink::new(
            &l.source,
            &l.target,
            &l.namespace,
            &l.package,
            l.interfaces.iter().cloned(),
        )
        .named(&l.name);
        for (side, config) in [("source", &l.source_config), ("target", &l.target_config)] {
            if config.is_empty() {
                continue;
            }
            let name = config_name(&[&manifest.name, "link", &index, side]);
            let name = put_config(admin, name, config).await?;
            running.configs.push(name.clone());
            side_config(&mut link, side).push(name);
        }
        for (side, secrets) in [("source", &l.source_secrets), ("target", &l.target_secrets)] {
            for (key, secret) in secrets {
                // A 1.x secret reference: named config the host resolves, never the value.
                let reference = SecretReference::to_store(key.as_str(), secret.as_str());
                let name = format!(
                    "{SECRET_PREFIX}{}",
                    config_name(&[&manifest.name, "link", &index, side, key])
                );
                admin
                    .put_config(&name, &reference.to_config())
                    .await
                    .with_context(|| format!("cannot put secret reference {name}"))?;
                running.configs.push(name.clone());
                side_config(&mut link, side).push(name);
            }
        }
        admin
            .put_link(link.clone())
            .await
            .with_context(|| format!("cannot put link {}", describe(l)))?;
        running.links.push(link);
        step("✓", "link", describe(l));
    }
    Ok(())
}

/// The config names of `side` (`source` or `target`) of `link`.
fn side_config<'a>(link: &'a mut StoredLink, side: &str) -> &'a mut Vec<String> {
    if side == "source" {
        &mut link.source_config
    } else {
        &mut link.target_config
    }
}

/// A component's wasm, loaded (and composed) before anything starts, and the reference the
/// host's inventory shows for it.
pub(crate) struct Loaded {
    /// The component as it will run.
    pub(crate) wasm: Vec<u8>,
    /// Where it came from (for a composed component: its file in the composition cache).
    pub(crate) reference: String,
}

/// Loads every component of `manifest`, composes those that say so (cached under the
/// Trellis home) and checks their imports against what the host provides and the manifest
/// links; refuses, naming every unmet import at once, before anything starts. Answers the
/// components by id.
async fn preflight(manifest: &Manifest, home: &Path) -> anyhow::Result<HashMap<String, Loaded>> {
    let mut wasm = HashMap::new();
    for c in &manifest.components {
        let reference = component_ref(&c.source);
        let bytes = trellis_host::fetch::load_component(&reference)
            .await
            .with_context(|| format!("component {}", c.id))?;
        wasm.insert(
            c.id.clone(),
            Loaded {
                wasm: bytes,
                reference,
            },
        );
    }
    let mut composed = HashMap::new();
    for c in manifest.components.iter().filter(|c| !c.compose.is_empty()) {
        let done =
            crate::compose::compose_component(c, &wasm, &home.join("cache").join("composed"))
                .with_context(|| format!("component {}: cannot compose it", c.id))?;
        let wired: Vec<String> = done
            .plan
            .wires
            .iter()
            .map(|w| format!("{} ← {}", w.import, w.exporter))
            .collect();
        step("✓", &format!("composed {}", c.id), wired.join(", "));
        let reference = done.reference();
        composed.insert(
            c.id.clone(),
            Loaded {
                wasm: done.wasm,
                reference,
            },
        );
    }
    wasm.extend(composed);
    let mut unmet = Vec::new();
    for c in &manifest.components {
        let Some(loaded) = wasm.get(&c.id) else {
            continue;
        };
        let world = trellis_host::imports::inspect(&loaded.wasm)
            .with_context(|| format!("component {} ({})", c.id, loaded.reference))?;
        let imports = inspect::classify(&c.id, &world, Some(&manifest.links));
        unmet.extend(inspect::unmet_lines(&c.id, &imports));
    }
    if !unmet.is_empty() {
        bail!(
            "{} import(s) would have nothing to serve them:\n  {}\n(`trellis component inspect X.wasm --manifest app.yaml` shows what serves each import)",
            unmet.len(),
            unmet.join("\n  ")
        );
    }
    Ok(wasm)
}

/// Puts the manifest's secrets in the lattice's secret store, keyed with the key file
/// (created when missing); answers the key for the host, or `None` when the manifest uses
/// no secrets.
async fn put_secrets(
    manifest: &Manifest,
    opts: &UpOptions,
    nats: &async_nats::Client,
) -> anyhow::Result<Option<std::sync::Arc<trellis_sdk::sealing::XKeyPair>>> {
    let uses = !manifest.secrets.is_empty()
        || manifest.components.iter().any(|c| !c.secrets.is_empty())
        || manifest
            .links
            .iter()
            .any(|l| !l.source_secrets.is_empty() || !l.target_secrets.is_empty());
    if !uses {
        return Ok(None);
    }
    let subjects = LatticeSubjects::new(&opts.lattice)?;
    let (store, key) = crate::secret::open_keyed(nats, &subjects, &opts.secrets_key).await?;
    for s in &manifest.secrets {
        let value = read_secret(&s.name, &s.source)?;
        store
            .put(&s.name, &value, &s.readers)
            .await
            .with_context(|| format!("cannot put secret {}", s.name))?;
    }
    step(
        "✓",
        "secrets",
        format!(
            "{} put, store key {}",
            manifest.secrets.len(),
            opts.secrets_key.display()
        ),
    );
    Ok(Some(std::sync::Arc::new(key)))
}

/// Reads secret `name`'s value from where the manifest says.
fn read_secret(name: &str, source: &SecretSource) -> anyhow::Result<SecretValue> {
    Ok(match source {
        SecretSource::Env(var) => match std::env::var_os(var) {
            Some(v) => crate::secret::value_of(v.into_encoded_bytes(), false),
            None => bail!("secret {name}: environment variable {var} is not set"),
        },
        SecretSource::File(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("secret {name}: cannot read {}", path.display()))?;
            crate::secret::value_of(bytes, false)
        }
    })
}

fn describe(l: &Link) -> String {
    let name = if l.name == "default" {
        String::new()
    } else {
        format!(" as {}", l.name)
    };
    format!(
        "{} → {} ({}:{}/{}){name}",
        l.source,
        l.target,
        l.namespace,
        l.package,
        l.interfaces.join(",")
    )
}

/// `http://address/path` for every link from a provider to a component's HTTP handler.
fn http_urls(manifest: &Manifest) -> Vec<String> {
    manifest
        .links
        .iter()
        .filter(|l| l.namespace == "wasi" && l.package == "http")
        .filter_map(|l| {
            let address = l.source_config.get("address")?;
            let path = l
                .source_config
                .get("path")
                .map(String::as_str)
                .unwrap_or("/");
            Some(format!("http://{address}{path} → {}", l.target))
        })
        .collect()
}

/// Waits until every provider runs and link ping reports every link a provider is part
/// of; prints each as it becomes ready, and what is not ready at the deadline. True when
/// all is well.
async fn wait_ready(
    manifest: &Manifest,
    running: &Running,
    nats: &async_nats::Client,
    subjects: &LatticeSubjects,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    let providers: Vec<&str> = manifest.providers.iter().map(|p| p.id.as_str()).collect();
    let mut pending_providers: Vec<usize> = (0..running.providers.len()).collect();
    let mut pending_links: Vec<&Link> = manifest
        .links
        .iter()
        .filter(|l| {
            providers.contains(&l.source.as_str()) || providers.contains(&l.target.as_str())
        })
        .collect();
    let mut ok = true;
    // When every provider was running, and the providers found to speak only 1.x (they
    // answer health, not link ping: their links are put but cannot be reported).
    let mut all_running: Option<Instant> = None;
    let mut legacy: std::collections::HashSet<String> = Default::default();
    loop {
        pending_providers.retain(|&i| {
            let provider = &running.providers[i];
            match provider.status().state {
                ProviderState::Running { pid } => {
                    step(
                        "✓",
                        &format!("provider {}", provider.id()),
                        format!("running (pid {pid})"),
                    );
                    false
                }
                ProviderState::GaveUp { reason } => {
                    step(
                        "✗",
                        &format!("provider {}", provider.id()),
                        format!("failed: {reason}"),
                    );
                    ok = false;
                    false
                }
                _ => true,
            }
        });
        if pending_providers.is_empty() && !pending_links.is_empty() {
            let since = *all_running.get_or_insert_with(Instant::now);
            let replies = ping_links(nats, subjects, None, Duration::from_millis(300))
                .await
                .unwrap_or_default();
            // A provider silent to link ping a second after it runs is asked for its health.
            if since.elapsed() >= Duration::from_secs(1) {
                for l in &pending_links {
                    let provider = if providers.contains(&l.target.as_str()) {
                        &l.target
                    } else {
                        &l.source
                    };
                    let silent = !replies.iter().any(|r| &r.provider_id == provider);
                    if silent
                        && !legacy.contains(provider)
                        && provider_health(nats, subjects, provider, Duration::from_millis(300))
                            .await
                            .is_some()
                    {
                        legacy.insert(provider.clone());
                    }
                }
            }
            pending_links.retain(|l| {
                if legacy.contains(&l.target) || legacy.contains(&l.source) {
                    step(
                        "✓",
                        "link put",
                        format!("{} (1.x provider: no ping)", describe(l)),
                    );
                    return false;
                }
                let status = replies.iter().flat_map(|r| &r.links).find(|s| {
                    s.link.source_id == l.source
                        && s.link.target == l.target
                        && s.link.name == l.name
                        && s.link.wit_namespace == l.namespace
                        && s.link.wit_package == l.package
                });
                match status.map(|s| &s.state) {
                    Some(LinkState::Active) => {
                        step("✓", "link active", describe(l));
                        false
                    }
                    Some(LinkState::Failed { error }) => {
                        step("✗", "link failed", format!("{}: {error}", describe(l)));
                        ok = false;
                        false
                    }
                    _ => true,
                }
            });
        }
        if pending_providers.is_empty() && pending_links.is_empty() {
            return ok;
        }
        if Instant::now() >= deadline {
            for &i in &pending_providers {
                step(
                    "✗",
                    &format!("provider {}", running.providers[i].id()),
                    "not running yet",
                );
            }
            for l in &pending_links {
                step("✗", "link not reported", describe(l));
            }
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stop(running: Running, joined: bool, nats: &async_nats::Client) {
    let Running {
        host,
        components,
        providers,
        in_process,
        links,
        configs,
        _authorization,
    } = running;
    drop(_authorization);
    for p in in_process {
        let id = p.id().to_string();
        p.stop().await;
        step("✓", &format!("provider {id}"), "stopped");
    }
    let stops = providers.into_iter().map(|p| {
        let id = p.id().to_string();
        async move {
            p.stop().await;
            step("✓", &format!("provider {id}"), "stopped");
        }
    });
    futures::future::join_all(stops).await;
    for c in components {
        step(
            "✓",
            &format!("component {}", c.id()),
            format!("stopped ({} served)", c.served()),
        );
        c.stop();
    }
    if joined {
        // The lattice outlives us, and other machines may run the same app on it: its
        // links and config are shared state, left in place (`trellis link del` removes them).
        step(
            "✓",
            "links and config",
            format!(
                "left in the lattice ({} link(s), {} config)",
                links.len(),
                configs.len()
            ),
        );
    }
    drop(host);
    // Bounded: the lattice's NATS may be gone (an external server, say).
    let _ =
        trellis_sdk::connect::final_flush(nats, trellis_sdk::connect::FINAL_FLUSH_TIMEOUT).await;
}

/// SIGINT and SIGTERM, watched from the moment `up` owns anything (registering replaces the
/// default action of killing the process).
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
        })
    }

    /// Resolves on the next SIGINT or SIGTERM.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_read_from_the_environment_and_files() {
        let dir = std::env::temp_dir().join(format!("trellis-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("text"), "line one\n").unwrap();
        std::fs::write(dir.join("binary"), [0xff, 0x00, 0x7f]).unwrap();
        let text = |v: SecretValue| match v {
            SecretValue::String(s) => s.expose().to_string(),
            SecretValue::Bytes(_) => panic!("bytes"),
        };
        // Cargo sets this for every test process.
        let pkg = read_secret("pkg", &SecretSource::Env("CARGO_PKG_NAME".into())).unwrap();
        assert!(!format!("{pkg:?}").contains("trellis-cli"));
        assert_eq!(text(pkg), "trellis-cli");
        let file = read_secret("text", &SecretSource::File(dir.join("text"))).unwrap();
        assert_eq!(text(file), "line one\n");
        let bin = read_secret("bin", &SecretSource::File(dir.join("binary"))).unwrap();
        assert_eq!(bin, SecretValue::Bytes(vec![0xff, 0x00, 0x7f]));

        let unset = SecretSource::Env("TRELLIS_TEST_SURELY_UNSET_VARIABLE".into());
        let err = read_secret("k", &unset).unwrap_err().to_string();
        assert!(err.contains("secret k"), "{err}");
        assert!(
            err.contains("TRELLIS_TEST_SURELY_UNSET_VARIABLE is not set"),
            "{err}"
        );
        let missing = SecretSource::File(dir.join("nope"));
        let err = format!("{:#}", read_secret("k", &missing).unwrap_err());
        assert!(err.contains("cannot read"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
