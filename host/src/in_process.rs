//! Providers run in the host's own process: the same provider code as the out-of-process
//! binaries (each provider crate is also a library), started with the host data the
//! supervisor would hand a child, so it joins the lattice as that child would — links pulled
//! and live, link config and secrets, link ping, purge, health — and also serves its
//! interfaces over the lattice for callers on other hosts. What changes is the calls of this
//! host's components over their links to it: the router hands them straight to the
//! provider's handler (`crate::keyvalue`), admitted by the provider's runtime exactly as a
//! call from the lattice would be, with no NATS round trip and no wRPC encoding.
//!
//! Calls made in-process are bounded by the calling component's own limits (instances,
//! memory, deadline) rather than by the provider's `max_concurrent_calls`, which bounds what
//! arrives over the lattice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use futures::future::BoxFuture;
use tracing::info;
use trellis_interfaces::keyvalue::{self, SharedHandler};
use trellis_sdk::config::ProviderConfig;
use trellis_sdk::provider::Provider;
use trellis_sdk::runtime::{CallContext, ProviderHandle};

use crate::supervisor::{ProviderState, ProviderStatus};

/// The providers the host can run in its own process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InProcessKind {
    /// `keyvalue-redis`.
    KeyvalueRedis,
    /// `keyvalue-nats`.
    KeyvalueNats,
}

impl InProcessKind {
    /// Every kind, by the name its binary has.
    pub const ALL: [InProcessKind; 2] = [InProcessKind::KeyvalueRedis, InProcessKind::KeyvalueNats];

    /// The provider's name (its binary's).
    pub fn name(self) -> &'static str {
        match self {
            InProcessKind::KeyvalueRedis => "keyvalue-redis",
            InProcessKind::KeyvalueNats => "keyvalue-nats",
        }
    }

    /// The kind named `name`, if the host can run it in-process.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// One in-process provider as the router sees it.
pub(crate) struct Local {
    pub(crate) handle: ProviderHandle,
    pub(crate) keyvalue: Option<SharedHandler<CallContext>>,
}

/// The host's in-process providers, by provider id.
#[derive(Clone, Default)]
pub(crate) struct LocalProviders(Arc<RwLock<HashMap<String, Arc<Local>>>>);

impl std::fmt::Debug for LocalProviders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.read().keys().cloned().collect();
        f.debug_tuple("LocalProviders").field(&ids).finish()
    }
}

impl LocalProviders {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Local>>> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Local>>> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether no provider runs in this host's process (the common case: no lookup then).
    pub(crate) fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// The in-process provider `id`, if it runs in this host.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<Local>> {
        self.read().get(id).cloned()
    }
}

type Stopper = Box<dyn FnOnce(ProviderHandle) -> BoxFuture<'static, ()> + Send + Sync>;

/// A provider running in the host's process. It stops — no more calls from this host's
/// components, in-flight lattice calls drained, the provider's own shutdown, off the
/// lattice — when [`InProcessProvider::stop`] is awaited, when it is dropped, or when the
/// lattice asks it to (a host shutdown request), as a child process would.
pub struct InProcessProvider {
    id: String,
    handle: ProviderHandle,
    /// Runs the stop once shutdown is requested, whoever requests it.
    stopping: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for InProcessProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessProvider")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl InProcessProvider {
    /// Its provider id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its runtime (links, ping, health), as a child process's would be.
    pub fn handle(&self) -> &ProviderHandle {
        &self.handle
    }

    /// Graceful stop, awaited to the end.
    pub async fn stop(mut self) {
        self.handle.request_shutdown();
        if let Some(stopping) = self.stopping.take() {
            let _ = stopping.await;
        }
    }
}

impl Drop for InProcessProvider {
    fn drop(&mut self) {
        // The stopping task finishes the stop on its own.
        self.handle.request_shutdown();
    }
}

/// Waits for `handle`'s shutdown to be requested, then takes the provider out of
/// `providers` (this host's components stop calling it) and stops it.
fn stop_on_shutdown(
    id: String,
    handle: ProviderHandle,
    stopper: Stopper,
    providers: LocalProviders,
    status: Arc<Mutex<ProviderStatus>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        handle.wait_for_shutdown().await;
        providers.write().remove(&id);
        stopper(handle).await;
        set_state(&status, ProviderState::Stopped);
        info!(provider = id, "in-process provider stopped");
    })
}

/// Starts keyvalue provider `kv` with `config` and lets `serve` serve it on the lattice:
/// its runtime, its handler for this host's components, and how to stop it.
async fn launch<P, F, Fut>(
    config: ProviderConfig,
    kv: P,
    serve: F,
) -> anyhow::Result<(ProviderHandle, SharedHandler<CallContext>, Stopper)>
where
    P: Provider + keyvalue::Handler<CallContext>,
    F: FnOnce(ProviderHandle, P) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let handle = ProviderHandle::start(config, Arc::new(kv.clone())).await?;
    if let Err(err) = serve(handle.clone(), kv.clone()).await {
        // Started but not serving: it must not linger on the lattice.
        handle.stop(&kv).await;
        return Err(err);
    }
    let stop_kv = kv.clone();
    let stopper: Stopper = Box::new(move |h| Box::pin(async move { h.stop(&stop_kv).await }));
    Ok((handle, Arc::new(kv), stopper))
}

fn set_state(status: &Mutex<ProviderStatus>, state: ProviderState) {
    status.lock().unwrap_or_else(|p| p.into_inner()).state = state;
}

/// Starts provider `kind` with `config` in this process, serving it on the lattice and
/// registering its handler in `providers`.
pub(crate) async fn start(
    kind: InProcessKind,
    config: ProviderConfig,
    providers: &LocalProviders,
    status: Arc<Mutex<ProviderStatus>>,
) -> anyhow::Result<InProcessProvider> {
    let id = config.provider_id.clone();
    if providers.get(&id).is_some() {
        anyhow::bail!("provider {id} already runs in this host's process");
    }
    let (handle, keyvalue, stopper) = match kind {
        InProcessKind::KeyvalueRedis => {
            use trellis_provider_keyvalue_redis as p;
            launch(config, p::provider(), |h, kv| async move {
                p::serve(&h, kv).await
            })
            .await?
        }
        InProcessKind::KeyvalueNats => {
            use trellis_provider_keyvalue_nats as p;
            launch(config, p::provider(), |h, kv| async move {
                p::serve(&h, kv).await
            })
            .await?
        }
    };
    providers.write().insert(
        id.clone(),
        Arc::new(Local {
            handle: handle.clone(),
            keyvalue: Some(keyvalue),
        }),
    );
    set_state(
        &status,
        ProviderState::Running {
            pid: std::process::id(),
        },
    );
    info!(
        provider = id,
        kind = kind.name(),
        "in-process provider started"
    );
    let stopping = stop_on_shutdown(
        id.clone(),
        handle.clone(),
        stopper,
        providers.clone(),
        status,
    );
    Ok(InProcessProvider {
        id,
        handle,
        stopping: Some(stopping),
    })
}
