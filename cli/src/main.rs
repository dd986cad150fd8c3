//! `trellis`: bring up a local lattice from an app manifest, and manage links, named config
//! and what runs on any lattice.
//!
//! ```text
//! trellis up examples/counter/app.yaml          # NATS + host + providers + links; Ctrl-C stops all
//! trellis inventory                             # hosts, components, providers, links (live)
//! trellis link ping                             # every provider's links and their state
//! trellis config put greeting message=hello
//! ```
//!
//! Without `--nats-url` / `--lattice`, commands talk to the lattice of the running `trellis
//! up` (found through its state file), else to `nats://127.0.0.1:4222`, lattice `default`.

mod authorize;
mod commands;
mod compose;
mod inspect;
mod manifest;
mod nats_server;
mod output;
mod package;
mod secret;
mod session;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use trellis_sdk::connect::NatsArgs;
use trellis_sdk::link::LinkSelector;
use trellis_sdk::subjects::LatticeSubjects;

use crate::commands::{Ctx, exit};
use crate::output::Out;

const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  failed (NATS unreachable, refused by validation, provider error, another `up` running)
  2  bad command line or manifest
  3  done, but something is unhealthy (a failed link or provider)
  4  not found (no such config, link or answering provider)";

/// Trellis: WebAssembly components on real infrastructure, over wRPC and NATS.
#[derive(Debug, Parser)]
#[command(name = "trellis", version, after_help = EXIT_CODES)]
struct Cli {
    /// Lattice name (default: the running `trellis up`'s, else `default`).
    #[arg(
        long,
        global = true,
        env = "TRELLIS_LATTICE",
        default_value = "default"
    )]
    lattice: String,
    #[command(flatten)]
    nats: NatsArgs,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// How long to collect answers from providers and hosts, in milliseconds.
    #[arg(long, global = true, default_value_t = 500)]
    wait_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local lattice from an app manifest: NATS (unless --nats-url is given), a host,
    /// the manifest's providers, components, config and links. Ctrl-C stops everything.
    Up {
        /// The app manifest (YAML).
        manifest: PathBuf,
        /// Port of the NATS server started for the lattice (0: any free port).
        #[arg(long, default_value_t = 4222)]
        nats_port: u16,
        /// The nats-server binary (default: the one `scripts/services.sh install nats` puts in ~/.cache/trellis/venv/bin, else PATH).
        #[arg(long, env = "TRELLIS_NATS_SERVER")]
        nats_server: Option<PathBuf>,
        /// How long to wait for providers and links to be ready, in seconds.
        #[arg(long, default_value_t = 60)]
        ready_timeout: u64,
        /// The secret store's key file, used (and created when missing) when the manifest
        /// has secrets (default: keys/secrets-LATTICE.xk in the Trellis home).
        #[arg(long, env = "TRELLIS_SECRETS_KEY")]
        secrets_key: Option<PathBuf>,
    },
    /// Stop the running `trellis up` (as Ctrl-C in its terminal would).
    Down,
    /// Links between components and providers.
    #[command(subcommand)]
    Link(LinkCommand),
    /// Named config.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The lattice's secret store (values go in, never come out).
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Hosts, components, providers and links, with live state.
    Inventory,
    /// Components on their own (no lattice needed).
    #[command(subcommand)]
    Component(ComponentCommand),
    /// Compose components at build time: each import of MAIN (and, in turn, of the
    /// components it uses) that exactly one given component exports is wired to it; the
    /// rest stay imports, served by the host and links at runtime. Prints what was wired to
    /// what; the originals are left as they are (no lattice needed).
    Compose {
        /// Where to write the composed component.
        out: PathBuf,
        /// The main component: the result exports what it exports.
        main: PathBuf,
        /// The components it may use.
        #[arg(required = true)]
        deps: Vec<PathBuf>,
        /// Pick the component serving an interface several export:
        /// `--use wasi:keyvalue/store=cache.wasm` (repeatable).
        #[arg(long = "use", value_name = "INTERFACE=COMPONENT")]
        uses: Vec<trellis_compose::Use>,
        /// Print the plan; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Provider binaries on their own (no lattice needed).
    #[command(subcommand)]
    Provider(ProviderCommand),
}

#[derive(Debug, Subcommand)]
enum ProviderCommand {
    /// Write a provider archive (`.par.gz`, the wasmCloud 1.x format, claims signed) around a
    /// provider binary for this machine: what a 1.x host starts with `wash start provider
    /// file://…`, and what a manifest's `path:` accepts. The signing keys are kept in the
    /// Trellis home's `keys/` (created on first use).
    Package {
        /// The provider binary.
        binary: PathBuf,
        /// The provider's name in its claims (default: the binary's file name).
        #[arg(long)]
        name: Option<String>,
        /// Its vendor.
        #[arg(long, default_value = "trellis")]
        vendor: String,
        /// Its version.
        #[arg(long)]
        version: Option<String>,
        /// Its revision.
        #[arg(long)]
        revision: Option<i32>,
        /// The archive to write (default: NAME.par.gz here).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ComponentCommand {
    /// List a component's imports and exports and what serves each import: the host, a link
    /// (given a manifest: the manifest's links from the component), or nothing. Exits 1 when
    /// an import would be unmet.
    Inspect {
        /// The component (.wasm).
        wasm: PathBuf,
        /// An app manifest whose links to consider.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// The component's id in the manifest (default: the one whose path is `wasm`, else
        /// the file's stem).
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum LinkCommand {
    /// Put a link (replacing the one with the same source, WIT package and name).
    Put {
        /// The caller (component or provider id).
        source: String,
        /// The callee.
        target: String,
        /// What it carries: `namespace:package/interface[,interface…]`,
        /// e.g. `wasi:keyvalue/store,atomics`.
        wit: String,
        /// Link name.
        #[arg(long, default_value = "default")]
        name: String,
        /// Named config for the source side (repeatable).
        #[arg(long = "source-config", value_name = "NAME")]
        source_config: Vec<String>,
        /// Named config for the target side (repeatable).
        #[arg(long = "target-config", value_name = "NAME")]
        target_config: Vec<String>,
    },
    /// List links (of one source, or all) with their live state.
    Get {
        /// Only links from this source.
        source: Option<String>,
    },
    /// Delete a link.
    Del {
        /// The caller.
        source: String,
        /// `namespace:package` (interfaces, if given, are ignored).
        wit: String,
        /// Link name.
        #[arg(long, default_value = "default")]
        name: String,
    },
    /// Ask providers (one, or all) for the state of every link they hold.
    Ping {
        /// Only this provider.
        provider: Option<String>,
    },
    /// Make a provider drop the resources of links (until they are put again).
    Purge {
        /// The provider.
        provider: String,
        /// Links from this source.
        #[arg(long)]
        source: String,
        /// Only links to this target.
        #[arg(long)]
        target: Option<String>,
        /// Link name.
        #[arg(long, default_value = "default")]
        name: String,
        /// Only links for this `namespace:package`.
        #[arg(long)]
        wit: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Put named config (replacing it).
    Put {
        /// Its name.
        name: String,
        /// Values, as KEY=VALUE.
        #[arg(required = true, value_name = "KEY=VALUE")]
        values: Vec<String>,
    },
    /// Show named config.
    Get {
        /// Its name.
        name: String,
    },
    /// Delete named config (refused while links use it).
    Del {
        /// Its name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum SecretCommand {
    /// Give the lattice's secret store its key: an xkey seed kept in a file (created if
    /// missing) that hosts are given to read secrets; only its public half goes on the
    /// lattice.
    Init {
        /// The key file (default: keys/secrets-LATTICE.xk in the Trellis home).
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Put a secret (a new version), read from stdin unless --from-file or --from-env says.
    Put {
        /// Its name.
        name: String,
        /// Read the value from this file, byte for byte.
        #[arg(long, conflicts_with = "from_env")]
        from_file: Option<PathBuf>,
        /// Read the value from this environment variable.
        #[arg(long)]
        from_env: Option<String>,
        /// Store it as bytes even when it is UTF-8 text.
        #[arg(long)]
        binary: bool,
        /// A component or provider id that may read it (repeatable; none: no one may).
        #[arg(long = "reader", value_name = "ID")]
        readers: Vec<String>,
    },
    /// Delete a secret.
    Del {
        /// Its name.
        name: String,
    },
    /// List the secrets: names, kinds, versions and readers — never values.
    List,
}

fn defaulted(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::DefaultValue) | None
    )
}

/// `trellis component inspect`.
async fn inspect_component(
    wasm: &std::path::Path,
    manifest: Option<&std::path::Path>,
    id: Option<String>,
) -> anyhow::Result<u8> {
    let bytes = std::fs::read(wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    let world = trellis_host::imports::inspect(&bytes)
        .with_context(|| format!("cannot inspect {}", wasm.display()))?;
    let parts = trellis_host::imports::composition_parts(&bytes);
    let manifest = manifest.map(manifest::Manifest::load).transpose()?;
    let id = id
        .or_else(|| {
            let wasm = std::fs::canonicalize(wasm).ok()?;
            manifest
                .as_ref()?
                .components
                .iter()
                .find_map(|c| match &c.source {
                    manifest::Source::Path(p) => {
                        (std::fs::canonicalize(p).ok()? == wasm).then(|| c.id.clone())
                    }
                    manifest::Source::Ref(_) => None,
                })
        })
        .or_else(|| wasm.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let links = manifest.as_ref().map(|m| m.links.as_slice());
    let declared = manifest
        .as_ref()
        .and_then(|m| m.components.iter().find(|c| c.id == id));
    let imports = match (&manifest, declared) {
        // A component the manifest composes: what its parts serve, and what the composed
        // component (the parts' open imports too) still needs.
        (Some(m), Some(c)) if !c.compose.is_empty() => {
            let (plan, composed) = composition_of(m, c, bytes).await?;
            let composed = trellis_host::imports::inspect(&composed)
                .with_context(|| format!("cannot inspect the composition of {id}"))?;
            inspect::with_composed(inspect::classify(&id, &composed, links), &plan)
        }
        _ => inspect::classify(&id, &world, links),
    };
    print!("{}", inspect::render(&imports, &world, &parts));
    Ok(if inspect::unmet_lines(&id, &imports).is_empty() {
        exit::OK
    } else {
        exit::FAILED
    })
}

/// The composition of manifest component `c`, whose own wasm is `main`: its plan and the
/// composed component (built, not cached, so inspecting writes nothing).
async fn composition_of(
    m: &manifest::Manifest,
    c: &manifest::Component,
    main: Vec<u8>,
) -> anyhow::Result<(trellis_compose::Plan, Vec<u8>)> {
    let mut others = std::collections::HashMap::new();
    for part in &c.compose {
        if let manifest::ComposePart::Component(pid) = part
            && let Some(p) = m.components.iter().find(|x| &x.id == pid)
        {
            let reference = up::component_ref(&p.source);
            let wasm = trellis_host::fetch::load_component(&reference)
                .await
                .with_context(|| format!("component {pid}"))?;
            others.insert(pid.clone(), wasm);
        }
    }
    let (parts, uses) = compose::component_parts(c, main, |pid| {
        others
            .get(pid)
            .cloned()
            .with_context(|| format!("component {pid} is not in the manifest"))
    })?;
    let composer = trellis_compose::Composer::new(parts)?;
    let plan = composer.plan(&uses)?;
    let wasm = composer.encode(&plan)?;
    Ok((plan, wasm))
}

/// `trellis provider …`.
async fn provider_command(home: &std::path::Path, command: ProviderCommand) -> anyhow::Result<u8> {
    let ProviderCommand::Package {
        binary,
        name,
        vendor,
        version,
        revision,
        out,
    } = command;
    let name = name
        .or_else(|| binary.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "provider".into());
    let opts = package::PackageOptions {
        out: out.unwrap_or_else(|| PathBuf::from(format!("{name}.par.gz"))),
        binary,
        name,
        vendor,
        version,
        revision,
        keys_dir: home.join("keys"),
    };
    let done = package::package(&opts).await?;
    println!(
        "wrote {} ({} for {}): provider {} signed by {}",
        done.path.display(),
        opts.name,
        done.target,
        done.subject,
        done.issuer
    );
    Ok(exit::OK)
}

async fn run(cli: Cli, matches: &ArgMatches) -> anyhow::Result<u8> {
    let home = session::home();
    let running = session::running(&home);
    let mut lattice = cli.lattice.clone();
    let mut nats = cli.nats.clone();
    let url_given = !defaulted(matches, "nats_url");
    if let Command::Up {
        manifest,
        nats_port,
        nats_server,
        ready_timeout,
        secrets_key,
    } = cli.command
    {
        let secrets_key = secrets_key.unwrap_or_else(|| secret::default_key_file(&home, &lattice));
        up::up(up::UpOptions {
            manifest,
            secrets_key,
            lattice,
            join: url_given.then(|| nats.into_options()),
            port: nats_port,
            nats_server,
            ready_timeout: Duration::from_secs(ready_timeout),
        })
        .await?;
        return Ok(exit::OK);
    }
    if let Command::Down = cli.command {
        return down(&home, running.as_ref()).await;
    }
    if let Command::Compose {
        out,
        main,
        deps,
        uses,
        dry_run,
    } = cli.command
    {
        compose::compose_command(compose::ComposeOptions {
            out,
            parts: std::iter::once(main).chain(deps).collect(),
            uses,
            dry_run,
            json: cli.json,
        })?;
        return Ok(exit::OK);
    }
    if let Command::Component(ComponentCommand::Inspect { wasm, manifest, id }) = cli.command {
        return inspect_component(&wasm, manifest.as_deref(), id).await;
    }
    if let Command::Provider(command) = cli.command {
        return provider_command(&home, command).await;
    }
    // Follow the running `up` unless told otherwise.
    if let Some(state) = &running {
        if defaulted(matches, "lattice") {
            lattice = state.lattice.clone();
        }
        if !url_given {
            nats.nats_url = state.nats_url.clone();
            let no_credentials = nats.nats_user.is_none()
                && nats.nats_token.is_none()
                && nats.nats_nkey.is_none()
                && nats.nats_jwt.is_none()
                && nats.nats_creds.is_none();
            if no_credentials {
                nats.nats_creds = state.nats_creds.clone();
            }
        }
    }
    let opts = nats.into_options();
    let url = opts.url.clone();
    let client = opts
        .connect()
        .await
        .with_context(|| format!("cannot reach the lattice at {url} (is `trellis up` running?)"))?;
    let cx = Ctx {
        nats: client,
        subjects: LatticeSubjects::new(&lattice)?,
        wait: Duration::from_millis(cli.wait_ms.max(1)),
        out: Out { json: cli.json },
    };
    let outcome = match cli.command {
        Command::Link(LinkCommand::Put {
            source,
            target,
            wit,
            name,
            source_config,
            target_config,
        }) => {
            commands::link_put(
                &cx,
                &source,
                &target,
                &wit,
                &name,
                &source_config,
                &target_config,
            )
            .await?
        }
        Command::Link(LinkCommand::Get { source }) => {
            commands::link_get(&cx, source.as_deref()).await?
        }
        Command::Link(LinkCommand::Del { source, wit, name }) => {
            commands::link_del(&cx, &source, &wit, &name).await?
        }
        Command::Link(LinkCommand::Ping { provider }) => {
            commands::link_ping(&cx, provider.as_deref()).await?
        }
        Command::Link(LinkCommand::Purge {
            provider,
            source,
            target,
            name,
            wit,
        }) => {
            let (wit_namespace, wit_package) = match wit.as_deref().map(|w| w.split_once(':')) {
                Some(Some((n, p))) => (
                    Some(n.to_string()),
                    Some(p.split('/').next().unwrap_or_default().to_string()),
                ),
                Some(None) => anyhow::bail!("--wit {wit:?} is not of the form namespace:package"),
                None => (None, None),
            };
            let selector = LinkSelector {
                source_id: source,
                target,
                name,
                wit_namespace,
                wit_package,
            };
            commands::link_purge(&cx, &provider, selector).await?
        }
        Command::Config(ConfigCommand::Put { name, values }) => {
            commands::config_put(&cx, &name, &values).await?
        }
        Command::Config(ConfigCommand::Get { name }) => commands::config_get(&cx, &name).await?,
        Command::Config(ConfigCommand::Del { name }) => commands::config_del(&cx, &name).await?,
        Command::Inventory => commands::inventory(&cx).await?,
        Command::Secret(SecretCommand::Init { key }) => {
            let key = key.unwrap_or_else(|| secret::default_key_file(&home, &lattice));
            secret::init(&cx, &key).await?
        }
        Command::Secret(SecretCommand::Put {
            name,
            from_file,
            from_env,
            binary,
            readers,
        }) => {
            let from = match (from_file, from_env) {
                (Some(file), _) => secret::ValueFrom::File(file),
                (None, Some(var)) => secret::ValueFrom::Env(var),
                (None, None) => secret::ValueFrom::Stdin,
            };
            secret::put(&cx, &name, &from, binary, &readers).await?
        }
        Command::Secret(SecretCommand::Del { name }) => secret::del(&cx, &name).await?,
        Command::Secret(SecretCommand::List) => secret::list(&cx).await?,
        Command::Up { .. }
        | Command::Down
        | Command::Component(_)
        | Command::Compose { .. }
        | Command::Provider(_) => unreachable_command(),
    };
    trellis_sdk::connect::final_flush(&cx.nats, trellis_sdk::connect::FINAL_FLUSH_TIMEOUT)
        .await
        .ok();
    Ok(outcome.code)
}

/// `up` and `down` return before the lattice connection is made.
fn unreachable_command() -> commands::Outcome {
    commands::Outcome { code: exit::FAILED }
}

/// Stops the running `up` with SIGTERM and waits until it has released its lock.
async fn down(home: &std::path::Path, running: Option<&session::State>) -> anyhow::Result<u8> {
    let Some(state) = running else {
        let _ = std::io::Write::write_all(&mut std::io::stderr(), b"no `trellis up` is running\n");
        return Ok(exit::NOT_FOUND);
    };
    let pid = i32::try_from(state.pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .context("the state file names no valid process")?;
    rustix::process::kill_process(pid, rustix::process::Signal::TERM)
        .with_context(|| format!("cannot signal process {}", state.pid))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while session::running(home).is_some() {
        if std::time::Instant::now() >= deadline {
            anyhow::bail!("`trellis up` (pid {}) did not stop within 60 s", state.pid);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "stopped `trellis up` (pid {}, app {:?})\n",
            state.pid, state.app
        )
        .as_bytes(),
    );
    Ok(exit::OK)
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // Logs are for trouble: warnings by default (progress and results are printed).
    trellis_sdk::logging::init(false, Some("warn"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // The host's streaming futures are large in debug builds.
        .thread_stack_size(8 << 20)
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("error: cannot start the runtime: {e}\n").as_bytes(),
            );
            return ExitCode::from(exit::FAILED);
        }
    };
    match runtime.block_on(run(cli, &matches)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = if e.downcast_ref::<manifest::ManifestError>().is_some() {
                exit::USAGE
            } else {
                exit::FAILED
            };
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("error: {e:#}\n").as_bytes(),
            );
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `trellis …` command the README shows parses as written (connection flags after
    /// the subcommand included).
    #[test]
    fn the_readme_commands_parse() {
        let commands = trellis_tests::readme_commands("trellis");
        assert!(
            commands.len() >= 3,
            "the README shows fewer trellis commands than expected: {commands:?}"
        );
        for words in commands {
            if let Err(e) = Cli::try_parse_from(&words) {
                panic!("README command {words:?} does not parse: {e}");
            }
        }
    }

    /// The help of every subcommand names only scripts the repository has.
    #[test]
    fn help_names_only_scripts_that_exist() {
        fn walk(cmd: &mut clap::Command, scripts: &mut Vec<String>) {
            let help = cmd.render_long_help().to_string();
            for word in help.split(|c: char| c.is_whitespace() || "`(),;".contains(c)) {
                if let Some(at) = word.find("scripts/") {
                    scripts.push(word[at..].trim_end_matches('.').to_string());
                }
            }
            for sub in cmd.get_subcommands_mut() {
                walk(sub, scripts);
            }
        }
        let mut scripts = Vec::new();
        walk(&mut Cli::command(), &mut scripts);
        assert!(
            !scripts.is_empty(),
            "no script is named: the check checks nothing"
        );
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for script in scripts {
            assert!(
                root.join(&script).is_file(),
                "the help names {script}, which does not exist"
            );
        }
    }
}
