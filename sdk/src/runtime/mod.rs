//! The provider runtime: joins the lattice, keeps links, serves exports, shuts down cleanly.
//!
//! [`ProviderHandle::start`] wires everything for one provider instance:
//! - the NATS connection and one wRPC [`trellis_wrpc_nats::Connection`];
//! - the link loop (module `links`) fed by host data, 1.x pushes and the lattice store;
//! - the control subjects (module `control`): link put/delete, health, shutdown, config update,
//!   link ping and link purge;
//! - serving with per-link context and calling linked components (module `serve`).
//!
//! [`run_provider`] is the whole life of a provider binary in one call, on the runtime
//! [`provider_runtime`] builds.

mod control;
mod executor;
mod links;
mod secrets;
mod serve;
mod store_sync;

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use executor::{THREADS_ENV, provider_runtime};
pub use serve::{CallContext, LinkedClient, ProviderServer};

use crate::config::{ConfigError, ProviderConfig};
use crate::connect::ConnectError;
use crate::link::{LinkKey, LinkSelector, LinkStatus, LinkTable};
use crate::provider::Provider;
use crate::subjects::LatticeSubjects;
use links::LinkCommand;
use trellis_wrpc_nats::{self as transport, Connection, TransportOptions};

/// Why a provider could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// NATS is unreachable or refused us.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Subscribing to a control subject failed.
    #[error("cannot subscribe to {subject}: {message}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// What failed.
        message: String,
    },
    /// The wRPC transport could not be set up.
    #[error("cannot set up the wRPC transport: {0}")]
    Transport(String),
    /// The provider's [`Provider::init`] refused its config.
    #[error("provider failed to initialise: {0:#}")]
    Init(anyhow::Error),
    /// Serving an export failed.
    #[error("cannot serve exports: {0}")]
    Serve(String),
    /// [`THREADS_ENV`] is not a usable number of threads.
    #[error("{THREADS_ENV} must be a number of threads from 0 (one per CPU) to 1024, not {0:?}")]
    Threads(String),
    /// The tokio runtime could not start.
    #[error("cannot start the tokio runtime: {0}")]
    Tokio(#[source] std::io::Error),
}

pub(crate) struct Inner {
    pub(crate) config: ProviderConfig,
    pub(crate) subjects: LatticeSubjects,
    pub(crate) nats: async_nats::Client,
    pub(crate) wrpc: Connection,
    links: Mutex<LinkTable>,
    link_cmds: mpsc::Sender<LinkCommand>,
    /// `true` once shutdown was asked for.
    shutdown: watch::Sender<bool>,
    /// Whether new calls are admitted.
    accepting: AtomicBool,
    /// One permit per call being served.
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) inflight: AtomicUsize,
    clients: Mutex<HashMap<String, transport::Client>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Where to answer the host's shutdown request, once the stop sequence is done.
    shutdown_reply: Mutex<Option<async_nats::Subject>>,
    /// Checks that callers speak for the sources they name.
    pub(crate) proofs: crate::source_proof::ProofChecker,
    /// Signs the proof that this provider speaks for itself, when it joined with a key.
    pub(crate) signer: Option<Arc<crate::source_proof::ProofSigner>>,
}

/// What a provider answers a 1.x shutdown request with, once it has stopped serving.
pub(crate) const SHUTDOWN_REPLY: &[u8] = b"shutting down";

/// A signer with the key the provider joined NATS with, if any (a lattice may record its
/// public half as the key that speaks for the provider).
fn signer(config: &ProviderConfig) -> Option<Arc<crate::source_proof::ProofSigner>> {
    let seed = match &config.nats.auth {
        crate::connect::NatsAuth::Jwt { seed, .. } | crate::connect::NatsAuth::NkeySeed(seed) => {
            seed.clone()
        }
        crate::connect::NatsAuth::CredsFile(path) => crate::connect::read_creds(path).ok()?.1,
        _ => return None,
    };
    crate::source_proof::ProofSigner::new(&seed, &config.lattice)
        .ok()
        .map(Arc::new)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    pub(crate) fn table(&self) -> MutexGuard<'_, LinkTable> {
        lock(&self.links)
    }

    pub(crate) fn accepting(&self) -> bool {
        self.accepting.load(Ordering::Acquire)
    }

    fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        lock(&self.tasks).push(tokio::spawn(fut));
    }

    pub(crate) fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Asks for shutdown on behalf of a host that waits for the answer at `reply`: it is sent
    /// when [`ProviderHandle::stop`] has drained.
    pub(crate) fn request_shutdown_answering(&self, reply: Option<async_nats::Subject>) {
        if let Some(reply) = reply {
            *lock(&self.shutdown_reply) = Some(reply);
        }
        self.request_shutdown();
    }

    pub(crate) async fn command(&self, cmd: LinkCommand) {
        if self.link_cmds.send(cmd).await.is_err() {
            warn!("link loop is gone; dropping a link command");
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }
}

/// A running provider instance. Cheap to clone.
///
/// The provider runs until [`ProviderHandle::stop`]; dropping handles does not stop it (its
/// tasks keep serving the lattice), so call `stop` — [`run_provider`] does.
#[derive(Clone)]
pub struct ProviderHandle {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for ProviderHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderHandle")
            .field("lattice", &self.inner.config.lattice)
            .field("provider_id", &self.inner.config.provider_id)
            .field("instance_id", &self.inner.config.instance_id)
            .finish()
    }
}

impl ProviderHandle {
    /// Starts `provider` as configured: connects, applies the links from host data and the
    /// lattice store, and answers control subjects. Serve exports with
    /// [`ProviderHandle::serve`] afterwards.
    pub async fn start<P: Provider>(
        mut config: ProviderConfig,
        provider: Arc<P>,
    ) -> Result<Self, RuntimeError> {
        config.call_deadline = Some(config.call_deadline.unwrap_or(provider.call_deadline()));
        let subjects = LatticeSubjects::new(&config.lattice).map_err(ConfigError::from)?;
        provider.init(&config).await.map_err(RuntimeError::Init)?;
        let nats = config.nats.connect().await?;
        let wrpc = Connection::new(
            nats.clone(),
            TransportOptions {
                timeout: config.rpc_timeout,
                ..TransportOptions::default()
            },
        )
        .await
        .map_err(|e| RuntimeError::Transport(format!("{e:#}")))?;
        let (link_cmds, link_rx) = mpsc::channel(1024);
        let inner = Arc::new(Inner {
            subjects,
            nats,
            wrpc,
            links: Mutex::new(LinkTable::new(config.provider_id.clone())),
            link_cmds,
            shutdown: watch::Sender::new(false),
            accepting: AtomicBool::new(true),
            slots: Arc::new(Semaphore::new(config.max_concurrent_calls)),
            inflight: AtomicUsize::new(0),
            clients: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            shutdown_reply: Mutex::new(None),
            proofs: crate::source_proof::ProofChecker::default(),
            signer: signer(&config),
            config,
        });
        inner.spawn(links::run(
            Arc::clone(&inner),
            Arc::clone(&provider),
            link_rx,
        ));

        // Links the host handed over first, then control subjects, then the store: a push
        // that races the pull is harmless because the table deduplicates.
        for link in inner.config.initial_links.clone() {
            inner.command(LinkCommand::Put { link, reply: None }).await;
        }
        control::subscribe_all(&inner, &provider).await?;
        if inner.config.pull_links {
            store_sync::start(&inner).await;
        }
        // Serve nothing before the links known now are in place.
        let (tx, rx) = oneshot::channel();
        inner.command(LinkCommand::Barrier(tx)).await;
        let _ = rx.await;
        info!(
            lattice = %inner.config.lattice,
            provider_id = %inner.config.provider_id,
            instance_id = %inner.config.instance_id,
            "provider started"
        );
        Ok(Self { inner })
    }

    /// The configuration the provider runs with.
    pub fn config(&self) -> &ProviderConfig {
        &self.inner.config
    }

    /// The lattice's subjects.
    pub fn subjects(&self) -> &LatticeSubjects {
        &self.inner.subjects
    }

    /// The NATS client.
    pub fn nats(&self) -> &async_nats::Client {
        &self.inner.nats
    }

    /// The status of every link this instance holds.
    pub fn links(&self) -> Vec<LinkStatus> {
        self.inner.table().statuses()
    }

    /// The status of link `key`, if held.
    pub fn link(&self, key: &LinkKey) -> Option<LinkStatus> {
        self.links().into_iter().find(|s| s.link == *key)
    }

    /// Purges the links `selector` matches in this instance; returns the purged keys.
    pub async fn purge(&self, selector: LinkSelector) -> Vec<LinkKey> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .command(LinkCommand::Purge {
                selector,
                reply: tx,
            })
            .await;
        rx.await.unwrap_or_default()
    }

    /// A server for this provider's exports: calls are admitted by link (see
    /// [`CallContext`]).
    pub fn server(&self) -> ProviderServer {
        ProviderServer::new(self.clone())
    }

    /// A cached client for calling `target_id` on the lattice, with the default timeout.
    pub fn client(&self, target_id: &str) -> transport::Client {
        let mut clients = lock(&self.inner.clients);
        clients
            .entry(target_id.to_string())
            .or_insert_with(|| {
                self.inner
                    .wrpc
                    .client(self.inner.subjects.wrpc_prefix(target_id))
            })
            .clone()
    }

    /// A client for calling the target of `link` (this provider being its source), which
    /// sends the 1.x headers (`source-id`, `link-name`, `target-id`) with every call.
    pub fn linked_client(&self, link: &crate::link::LinkDefinition) -> LinkedClient {
        let client = LinkedClient::new(
            self.client(&link.target),
            &self.inner.config.provider_id,
            &link.name,
        )
        .with_target(&link.target);
        match &self.inner.signer {
            Some(signer) => client.with_proof(Arc::clone(signer), &link.target),
            None => client,
        }
    }

    /// Calls being served right now.
    pub fn inflight(&self) -> usize {
        self.inner.inflight.load(Ordering::Acquire)
    }

    /// Asks the provider to shut down ([`ProviderHandle::wait_for_shutdown`] returns).
    pub fn request_shutdown(&self) {
        self.inner.request_shutdown();
    }

    /// Waits until shutdown is asked for: by the host, by SIGINT/SIGTERM (when
    /// [`run_provider`] installed the handlers), or by [`ProviderHandle::request_shutdown`].
    pub async fn wait_for_shutdown(&self) {
        let mut rx = self.inner.shutdown.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Graceful stop: refuses new calls, waits for in-flight calls up to the configured
    /// deadline, calls [`Provider::shutdown`] (bounded by the same deadline, at least 1 s),
    /// answers the host's shutdown request if one came, then leaves the lattice.
    ///
    /// A 1.x host kills a provider as soon as it has the answer (and at the latest after its
    /// `--provider-shutdown-delay-ms`), so the answer comes last: in-flight calls are never
    /// cut by it.
    pub async fn stop<P: Provider>(&self, provider: &P) {
        self.inner.request_shutdown();
        self.inner.accepting.store(false, Ordering::Release);
        let max = u32::try_from(self.inner.config.max_concurrent_calls).unwrap_or(u32::MAX);
        let deadline = self.inner.config.shutdown_deadline;
        match tokio::time::timeout(deadline, self.inner.slots.acquire_many(max)).await {
            Ok(_) => info!("in-flight calls drained"),
            Err(_) => warn!(
                inflight = self.inflight(),
                ?deadline,
                "shutdown deadline reached with calls still in flight"
            ),
        }
        // The provider's own drain (open HTTP connections, say) gets the same deadline.
        if let Err(err) =
            tokio::time::timeout(deadline.max(Duration::from_secs(1)), provider.shutdown())
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("provider shutdown timed out")))
        {
            warn!(error = %format!("{err:#}"), "provider shutdown failed");
        }
        let reply = lock(&self.inner.shutdown_reply).take();
        if let Some(to) = reply
            // 1.x providers answer with these raw bytes.
            && let Err(err) = self.inner.nats.publish(to, SHUTDOWN_REPLY.into()).await
        {
            warn!(%err, "failed to answer the shutdown request");
        }
        for t in lock(&self.inner.tasks).drain(..) {
            t.abort();
        }
        // Bounded: with the NATS server gone, an unbounded flush would keep the process from
        // ever exiting.
        let flushed =
            crate::connect::final_flush(&self.inner.nats, crate::connect::FINAL_FLUSH_TIMEOUT)
                .await;
        if let Err(err) = flushed {
            warn!(%err, "final NATS flush failed");
        }
        info!("provider stopped");
    }
}

/// Runs a provider binary from start to exit: reads its configuration (host data on stdin, or
/// standalone flags/environment), sets up logging, starts the provider, lets `serve` register
/// its exports, and on shutdown (host request, SIGINT, SIGTERM) stops gracefully.
///
/// Returns when the provider has stopped.
pub async fn run_provider<P, F, Fut>(provider: P, serve: F) -> anyhow::Result<()>
where
    P: Provider,
    F: FnOnce(ProviderHandle) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let args: Vec<OsString> = std::env::args_os().collect();
    let config = match ProviderConfig::load(args).await {
        Ok(c) => c,
        Err(ConfigError::Args(err)) => err.exit(),
        Err(err) => return Err(err.into()),
    };
    crate::logging::init(config.structured_logging, config.log_level.as_deref());
    let provider = Arc::new(provider);
    let handle = ProviderHandle::start(config, Arc::clone(&provider)).await?;
    serve(handle.clone()).await?;
    let signals = {
        let handle = handle.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            info!("signal received; shutting down");
            handle.request_shutdown();
        })
    };
    handle.wait_for_shutdown().await;
    handle.stop(&*provider).await;
    signals.abort();
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
