//! Starting and supervising provider processes, the 1.x way.
//!
//! A provider binary is started with a cleared environment (only `RUST_LOG`, `OTEL_*` and
//! `TRELLIS_PROVIDER_THREADS` pass) and one line of host data on stdin: the lattice, NATS, its id,
//! a fresh instance id, its config and every link it is source or target of, resolved from the
//! lattice store. Its output goes to the host log. The supervisor polls its health, restarts it
//! when it exits unasked — or hangs: stops answering health (an unhealthy answer is an
//! answer: a provider whose backend is down is alive, and a restart would not bring the
//! backend back) — with capped exponential backoff, gives up after a bound of consecutive
//! failures (and says so, in its status and as a lattice event), and stops it gracefully: a
//! shutdown request first, a kill after the grace period.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use trellis_sdk::events;
use trellis_sdk::host_data::HostData;
use trellis_sdk::link::{LinkDefinition, LinkSecrets};
use trellis_sdk::provider::HealthStatus;
use trellis_sdk::runtime::THREADS_ENV;
use trellis_sdk::store::LatticeStore;
use trellis_sdk::subjects::LatticeSubjects;

/// How to run one provider.
#[derive(Clone, Debug)]
pub struct ProviderSpec {
    /// Provider id.
    pub id: String,
    /// The provider binary.
    pub path: PathBuf,
    /// The provider's own config.
    pub config: HashMap<String, String>,
}

/// Supervision policy.
#[derive(Clone, Debug)]
pub struct SupervisorOptions {
    /// How often health is polled.
    pub health_interval: Duration,
    /// How long one health poll waits for the answer.
    pub health_timeout: Duration,
    /// Consecutive unanswered health polls after which the provider counts as hung and is
    /// killed and restarted (0: never).
    pub unanswered_limit: u32,
    /// How long a provider that has not answered health yet may take to start answering.
    pub start_grace: Duration,
    /// First delay before a restart; doubles per consecutive failure.
    pub backoff_base: Duration,
    /// Largest delay before a restart.
    pub backoff_max: Duration,
    /// Consecutive failed starts after which the supervisor gives up.
    pub max_restarts: u32,
    /// A provider that ran this long counts as started well (its failure count resets).
    pub stable_after: Duration,
    /// How long a stopping provider may take before it is killed.
    pub shutdown_grace: Duration,
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        Self {
            health_interval: Duration::from_secs(30),
            health_timeout: Duration::from_secs(5),
            unanswered_limit: 3,
            start_grace: Duration::from_secs(60),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_restarts: 10,
            stable_after: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// What a supervised provider is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderState {
    /// Being started.
    Starting,
    /// Running as process `pid`.
    Running {
        /// Its process id.
        pid: u32,
    },
    /// Exited unasked; restarting after a delay.
    Restarting {
        /// Why it stopped.
        reason: String,
    },
    /// Failed `max_restarts` times in a row; no longer restarted.
    GaveUp {
        /// The last failure.
        reason: String,
    },
    /// Stopped on request.
    Stopped,
}

/// A provider's state as the supervisor last saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderStatus {
    /// The state.
    pub state: ProviderState,
    /// Restarts so far.
    pub restarts: u32,
    /// The last health answer, if any.
    pub health: Option<HealthStatus>,
}

/// Everything the supervisor needs from the host.
#[derive(Clone)]
pub(crate) struct SupervisorEnv {
    pub(crate) nats: async_nats::Client,
    pub(crate) nats_url: String,
    pub(crate) nats_auth: trellis_sdk::connect::NatsAuth,
    pub(crate) nats_tls: trellis_sdk::connect::TlsOptions,
    pub(crate) subjects: LatticeSubjects,
    pub(crate) store: LatticeStore,
    pub(crate) host_id: String,
    pub(crate) rpc_timeout: Duration,
    pub(crate) sealer: Arc<crate::link_secrets::LinkSealer>,
    /// The provider's own inbox prefix, when it has an identity of its own.
    pub(crate) inbox_prefix: Option<String>,
}

/// A provider under supervision. Dropping it kills the process; [`SupervisedProvider::stop`]
/// stops it gracefully.
pub struct SupervisedProvider {
    id: String,
    status: Arc<Mutex<ProviderStatus>>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SupervisedProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisedProvider")
            .field("id", &self.id)
            .field("status", &self.status())
            .finish()
    }
}

impl SupervisedProvider {
    /// The provider id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its current status.
    pub fn status(&self) -> ProviderStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The shared status cell (the host's inventory reads it).
    pub(crate) fn status_handle(&self) -> &Arc<Mutex<ProviderStatus>> {
        &self.status
    }

    /// Stops it gracefully and waits until it is gone.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SupervisedProvider {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        // The task kills the child when it sees the flag (kill_on_drop covers an abort).
    }
}

pub(crate) fn supervise(
    env: SupervisorEnv,
    spec: ProviderSpec,
    opts: SupervisorOptions,
) -> SupervisedProvider {
    let status = Arc::new(Mutex::new(ProviderStatus {
        state: ProviderState::Starting,
        restarts: 0,
        health: None,
    }));
    let (stop, stop_rx) = watch::channel(false);
    let id = spec.id.clone();
    let task = tokio::spawn(run(env, spec, opts, Arc::clone(&status), stop_rx));
    SupervisedProvider {
        id,
        status,
        stop,
        task: Some(task),
    }
}

fn set(status: &Mutex<ProviderStatus>, f: impl FnOnce(&mut ProviderStatus)) {
    f(&mut status.lock().unwrap_or_else(|p| p.into_inner()));
}

/// The host data for provider `spec` (also what an in-process provider starts with).
pub(crate) async fn host_data(
    env: &SupervisorEnv,
    spec: &ProviderSpec,
) -> Result<HostData, trellis_sdk::connect::CredsError> {
    let instance_key = env.sealer.new_instance(&spec.id);
    let links: Vec<LinkDefinition> = match env.store.links_for(&spec.id).await {
        Ok(found) => {
            for (link, err) in found.broken {
                warn!(provider = spec.id, %err, link = ?link.name, "link left out of host data");
            }
            let mut links = Vec::with_capacity(found.links.len());
            for (key, mut link) in found.links {
                if found.needing_secrets.contains(&key) {
                    match env.sealer.sealed_for(&spec.id, &key).await {
                        Ok(sealed) => {
                            let sealed = Some(LinkSecrets::from_sealed(&sealed));
                            if link.target == spec.id {
                                link.target_secrets = sealed;
                            } else {
                                link.source_secrets = sealed;
                            }
                        }
                        Err(error) => {
                            // The provider pulls it and reports the same error on the link.
                            warn!(provider = spec.id, link = %key, %error, "link left out of host data");
                            continue;
                        }
                    }
                }
                links.push(link);
            }
            links
        }
        Err(err) => {
            warn!(provider = spec.id, %err, "cannot read links for host data; the provider will pull them");
            Vec::new()
        }
    };
    let mut data = HostData {
        host_id: env.host_id.clone(),
        lattice_rpc_prefix: env.subjects.lattice().to_string(),
        lattice_rpc_url: env.nats_url.clone(),
        provider_key: spec.id.clone(),
        instance_id: uuid_v4(),
        link_definitions: links,
        config: spec.config.clone(),
        default_rpc_timeout_ms: u64::try_from(env.rpc_timeout.as_millis()).ok(),
        log_level: Some("info".into()),
        host_xkey_public_key: env.sealer.host_public_key(),
        provider_xkey_private_key: instance_key.seed().unwrap_or_default(),
        ..HostData::new()
    };
    // The provider joins as the host does (credentials and TLS alike).
    data.set_nats_credentials(&env.nats_auth, &env.nats_tls)?;
    data.set_inbox_prefix(env.inbox_prefix.clone());
    Ok(data)
}

fn uuid_v4() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The longest last line of a provider's stderr kept to explain its exit.
const LAST_LINE_MAX: usize = 300;

/// Forwards a child's output lines to the host log; the task answers the last non-empty line
/// (ANSI escapes removed, at most [`LAST_LINE_MAX`] bytes), which says why a provider exited.
fn forward(
    provider: String,
    stream: &'static str,
    out: impl AsyncRead + Unpin + Send + 'static,
) -> tokio::task::JoinHandle<Option<String>> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(out).lines();
        let mut last = None;
        while let Ok(Some(line)) = lines.next_line().await {
            info!(provider, stream, "{line}");
            let plain = strip_ansi(&line);
            if !plain.trim().is_empty() {
                last = Some(plain);
            }
        }
        last.map(|mut l| {
            if l.len() > LAST_LINE_MAX {
                let mut cut = LAST_LINE_MAX;
                while !l.is_char_boundary(cut) {
                    cut -= 1;
                }
                l.truncate(cut);
                l.push('…');
            }
            l.trim().to_string()
        })
    })
}

/// `line` without ANSI escape sequences (a 1.x provider may colour its log).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte (0x40..=0x7e).
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A running provider process and the task reading its stderr.
struct Running {
    child: Child,
    stderr: Option<tokio::task::JoinHandle<Option<String>>>,
}

impl Running {
    /// Why it exited: its status, and its last line on stderr when it wrote one.
    async fn exit_reason(&mut self, exit: std::io::Result<std::process::ExitStatus>) -> String {
        let status = match exit {
            Ok(code) => format!("exited with {code}"),
            Err(err) => return format!("cannot wait for it: {err}"),
        };
        // The pipe closes with the process; give the reader a moment to finish.
        let last = match self.stderr.take() {
            Some(task) => tokio::time::timeout(Duration::from_millis(500), task)
                .await
                .ok()
                .and_then(Result::ok)
                .flatten(),
            None => None,
        };
        match last {
            Some(line) => format!("{status}: {line}"),
            None => status,
        }
    }
}

async fn spawn(env: &SupervisorEnv, spec: &ProviderSpec) -> std::io::Result<Running> {
    let line = host_data(env, spec)
        .await
        .map_err(std::io::Error::other)?
        .encode()
        .map_err(std::io::Error::other)?;
    let mut cmd = Command::new(&spec.path);
    cmd.env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a Ctrl-C in the host's terminal reaches the host alone,
        // which stops its providers in order instead of racing them (and restarting them).
        .process_group(0)
        .kill_on_drop(true);
    for (k, v) in std::env::vars_os() {
        let pass = k
            .to_str()
            .is_some_and(|k| k == "RUST_LOG" || k == THREADS_ENV || k.starts_with("OTEL_"));
        if pass {
            cmd.env(k, v);
        }
    }
    let mut child = cmd.spawn()?;
    // Its output is read before its host data is written: a provider that fails at once
    // (before reading stdin) must still say why.
    if let Some(out) = child.stdout.take() {
        forward(spec.id.clone(), "stdout", out);
    }
    let stderr = child
        .stderr
        .take()
        .map(|err| forward(spec.id.clone(), "stderr", err));
    if let Some(mut stdin) = child.stdin.take() {
        let written = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.write_all(b"\r\n").await?;
            stdin.shutdown().await
        };
        if let Err(err) = written.await {
            // It exited (or closed stdin) already; its exit says why.
            warn!(provider = spec.id, %err, "cannot hand the provider its host data");
        }
    }
    Ok(Running { child, stderr })
}

/// The wait before restarting after the `failures`-th consecutive failure: the base,
/// doubled per earlier failure, capped.
fn restart_delay(opts: &SupervisorOptions, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    opts.backoff_base
        .saturating_mul(1u32 << exp)
        .min(opts.backoff_max)
}

/// The provider's health answer, `None` if none came within `wait`.
async fn check_health(env: &SupervisorEnv, id: &str, wait: Duration) -> Option<HealthStatus> {
    trellis_sdk::admin::provider_health(&env.nats, &env.subjects, id, wait).await
}

async fn stop_child(env: &SupervisorEnv, id: &str, child: &mut Child, grace: Duration) {
    let body = serde_json::json!({ "host_id": env.host_id }).to_string();
    let asked = env
        .nats
        .request(env.subjects.shutdown(id), body.into_bytes().into());
    let _ = tokio::time::timeout(grace, asked).await;
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        warn!(provider = id, "provider did not stop in time; killing it");
        let _ = child.kill().await;
    }
}

/// Resolves once stop was asked for (the watch guard is not held across awaits).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

async fn run(
    env: SupervisorEnv,
    spec: ProviderSpec,
    opts: SupervisorOptions,
    status: Arc<Mutex<ProviderStatus>>,
    mut stop: watch::Receiver<bool>,
) {
    let id = spec.id.clone();
    let mut failures: u32 = 0;
    loop {
        let stop_asked = *stop.borrow();
        if stop_asked {
            set(&status, |s| s.state = ProviderState::Stopped);
            return;
        }
        set(&status, |s| s.state = ProviderState::Starting);
        let started = Instant::now();
        let reason = match spawn(&env, &spec).await {
            Ok(mut running) => {
                let pid = running.child.id().unwrap_or_default();
                set(&status, |s| s.state = ProviderState::Running { pid });
                info!(provider = id, pid, "provider started");
                events::publish(
                    &env.nats,
                    &env.subjects,
                    &env.host_id,
                    "provider_started",
                    serde_json::json!({"host_id": env.host_id, "provider_id": id, "image_ref": spec.path}),
                )
                .await;
                let mut health = tokio::time::interval(opts.health_interval);
                health.tick().await;
                let (mut answered, mut unanswered) = (false, 0u32);
                loop {
                    tokio::select! {
                        exit = running.child.wait() => {
                            break running.exit_reason(exit).await;
                        }
                        _ = health.tick() => {
                            let answer = check_health(&env, &id, opts.health_timeout).await;
                            answered |= answer.is_some();
                            unanswered = if answer.is_some() { 0 } else { unanswered + 1 };
                            if opts.unanswered_limit > 0
                                && unanswered >= opts.unanswered_limit
                                && (answered || started.elapsed() >= opts.start_grace)
                            {
                                let _ = running.child.kill().await;
                                break format!(
                                    "stopped answering health ({unanswered} checks unanswered \
                                     within {:?}); killed",
                                    opts.health_timeout
                                );
                            }
                            let h = answer.unwrap_or_else(|| {
                                HealthStatus::unhealthy(format!(
                                    "no health reply within {:?}",
                                    opts.health_timeout
                                ))
                            });
                            let was = status.lock().unwrap_or_else(|p| p.into_inner()).health.clone();
                            if was.as_ref().map(|w| w.healthy) != Some(h.healthy) {
                                let event = if h.healthy { "health_check_passed" } else { "health_check_failed" };
                                events::publish(&env.nats, &env.subjects, &env.host_id, event,
                                    serde_json::json!({"host_id": env.host_id, "provider_id": id})).await;
                            }
                            set(&status, |s| s.health = Some(h));
                        }
                        _ = stopped(&mut stop) => {
                            stop_child(&env, &id, &mut running.child, opts.shutdown_grace).await;
                            info!(provider = id, "provider stopped");
                            set(&status, |s| s.state = ProviderState::Stopped);
                            return;
                        }
                    }
                }
            }
            Err(err) => format!("cannot start {}: {err}", spec.path.display()),
        };
        if started.elapsed() >= opts.stable_after {
            failures = 0;
        }
        failures = failures.saturating_add(1);
        warn!(provider = id, reason, failures, "provider stopped unasked");
        if failures > opts.max_restarts {
            warn!(provider = id, "giving up on the provider");
            events::publish(
                &env.nats,
                &env.subjects,
                &env.host_id,
                "provider_start_failed",
                serde_json::json!({"host_id": env.host_id, "provider_id": id, "error": reason}),
            )
            .await;
            set(&status, |s| s.state = ProviderState::GaveUp { reason });
            return;
        }
        set(&status, |s| {
            s.state = ProviderState::Restarting {
                reason: reason.clone(),
            };
            s.restarts = s.restarts.saturating_add(1);
        });
        let delay = restart_delay(&opts, failures);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut stop) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_doubling_up_to_the_cap() {
        let opts = SupervisorOptions::default();
        let delays: Vec<u64> = (1..=9)
            .map(|n| restart_delay(&opts, n).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [
                500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000
            ]
        );
        // However many failures, no overflow past the cap.
        assert_eq!(restart_delay(&opts, u32::MAX), opts.backoff_max);
    }
}
