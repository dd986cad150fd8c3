//! `trellis-host`: one host process on a lattice — runs the components and supervises the
//! providers named on its command line until SIGINT or SIGTERM, then stops them cleanly.
//!
//! ```text
//! trellis-host --lattice demo --nats-url nats://127.0.0.1:4222 \
//!     --component echo=tests/components/prebuilt/echo.wasm --config echo=echo-cfg \
//!     --provider kv=target/debug/keyvalue-nats
//! ```
//!
//! Several processes given the same component share its load (queue group per component).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use tracing::info;
use trellis_host::engine::Limits;
use trellis_host::supervisor::{ProviderSpec, SupervisorOptions};
use trellis_host::{Host, HostOptions, load_component};
use trellis_sdk::connect::NatsArgs;

/// A Trellis host: runs WebAssembly components on a lattice and supervises providers.
#[derive(Debug, Parser)]
#[command(version, long_about = None)]
struct Args {
    /// Lattice to join.
    #[arg(long, env = "TRELLIS_LATTICE", default_value = "default")]
    lattice: String,
    /// This host's id (default: trellis-host-<pid>).
    #[arg(long, env = "TRELLIS_HOST_ID")]
    host_id: Option<String>,
    #[command(flatten)]
    nats: NatsArgs,
    /// A component to run: `ID=REF`, a file path or a `file://`, `http://` or `https://` URL.
    /// Repeatable.
    #[arg(long = "component", value_name = "ID=REF")]
    components: Vec<String>,
    /// Named config of a component: `ID=NAME`, merged in the order given. Repeatable.
    #[arg(long = "config", value_name = "ID=NAME")]
    configs: Vec<String>,
    /// A provider binary to start and supervise: `ID=PATH`. Repeatable.
    #[arg(long = "provider", value_name = "ID=PATH")]
    providers: Vec<String>,
    /// Largest linear memory of one instance, in MiB.
    #[arg(long, default_value_t = 64)]
    max_memory_mib: usize,
    /// Longest one invocation may run, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    deadline_ms: u64,
    /// Most instances of one component alive at once.
    #[arg(long, default_value_t = 64)]
    max_instances: usize,
    /// Timeout of calls components make over the lattice, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    call_timeout_ms: u64,
    /// The secret store's key (a file holding the xkey seed the operator keeps): lets this
    /// host read secrets for its components and seal link secrets for its providers.
    #[arg(long, env = "TRELLIS_SECRETS_KEY")]
    secrets_key: Option<PathBuf>,
    /// A secret a component reads through `wasmcloud:secrets`: `ID=AS=NAME` (the component,
    /// the name it asks for, the secret's name in the store). Repeatable.
    #[arg(long = "secret", value_name = "ID=AS=NAME")]
    secrets: Vec<String>,
    /// Where compiled components are cached.
    #[arg(long, env = "TRELLIS_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long)]
    json_logs: bool,
}

fn id_and_value<'a>(what: &str, entry: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    match entry.split_once('=') {
        Some((id, value)) if !id.is_empty() && !value.is_empty() => Ok((id, value)),
        _ => bail!("--{what} {entry:?} is not of the form ID=VALUE"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    trellis_sdk::logging::init(args.json_logs, None);

    let mut configs: HashMap<&str, Vec<String>> = HashMap::new();
    for entry in &args.configs {
        let (id, name) = id_and_value("config", entry)?;
        configs.entry(id).or_default().push(name.to_string());
    }
    let nats_opts = args.nats.clone().into_options();
    let nats_url = nats_opts.url.clone();
    let nats = nats_opts
        .connect()
        .await
        .context("cannot join the lattice")?;
    let mut opts = HostOptions {
        lattice: args.lattice.clone(),
        nats_url,
        nats_auth: nats_opts.auth.clone(),
        nats_tls: nats_opts.tls.clone(),
        limits: Limits {
            max_memory_bytes: args.max_memory_mib << 20,
            execution_deadline: Duration::from_millis(args.deadline_ms),
            max_concurrent_instances: args.max_instances.max(1),
            ..Limits::default()
        },
        cache_dir: args.cache_dir.clone(),
        call_timeout: Duration::from_millis(args.call_timeout_ms.max(1)),
        ..HostOptions::default()
    };
    if let Some(id) = &args.host_id {
        opts.host_id = id.clone();
    }
    if let Some(path) = &args.secrets_key {
        opts.secrets_key = Some(Arc::new(trellis_host::secret_store::load_key(path, false)?));
    }
    let mut grants: HashMap<&str, BTreeMap<String, String>> = HashMap::new();
    for entry in &args.secrets {
        let (id, rest) = id_and_value("secret", entry)?;
        let (asked_as, name) = id_and_value("secret", rest)?;
        grants
            .entry(id)
            .or_default()
            .insert(asked_as.to_string(), name.to_string());
    }
    let host = Host::new(nats, opts)
        .await
        .context("cannot start the host")?;

    let mut components = Vec::new();
    for entry in &args.components {
        let (id, reference) = id_and_value("component", entry)?;
        let wasm = load_component(reference).await?;
        let names = configs.remove(id).unwrap_or_default();
        let secrets = host
            .component_secrets(id, &grants.remove(id).unwrap_or_default())
            .await
            .with_context(|| format!("secrets of component {id}"))?;
        let running = host
            .start_component_loaded(id, wasm, reference, &names, secrets)
            .await
            .with_context(|| format!("cannot start component {id}"))?;
        components.push(running);
    }
    if let Some(id) = configs.keys().next() {
        bail!("--config names component {id:?}, which is not started here");
    }
    let mut providers = Vec::new();
    for entry in &args.providers {
        let (id, path) = id_and_value("provider", entry)?;
        let spec = ProviderSpec {
            id: id.to_string(),
            path: PathBuf::from(path),
            config: HashMap::new(),
        };
        providers.push(host.start_provider(spec, SupervisorOptions::default())?);
    }
    info!(
        lattice = args.lattice,
        components = components.len(),
        providers = providers.len(),
        "host ready"
    );

    shutdown_signal().await?;
    info!("stopping");
    for provider in providers {
        provider.stop().await;
    }
    for component in components {
        info!(
            component = component.id(),
            served = component.served(),
            "component stopped"
        );
        component.stop();
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot watch SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `trellis-host …` command the README shows parses as written.
    #[test]
    fn the_readme_commands_parse() {
        let commands = [
            trellis_tests::readme_commands("trellis-host"),
            trellis_tests::readme_cargo_runs("trellis-host", "trellis-host"),
        ]
        .concat();
        assert!(
            commands.len() >= 2,
            "the README shows fewer trellis-host commands than expected: {commands:?}"
        );
        for words in commands {
            if let Err(e) = Args::try_parse_from(&words) {
                panic!("README command {words:?} does not parse: {e}");
            }
        }
    }
}
