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

    /// The in-process provider `id`, if it runs in this host.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<Local>> {
        self.read().get(id).cloned()
    }
}

type Stopper = Box<dyn FnOnce(ProviderHandle) -> BoxFuture<'static, ()> + Send + Sync>;

/// A provider running in the host's process. Stop it with [`InProcessProvider::stop`]; dropped,
/// it stops taking calls from this host's components and leaves the lattice.
pub struct InProcessProvider {
    id: String,
    handle: ProviderHandle,
    stopper: Option<Stopper>,
    providers: LocalProviders,
    status: Arc<Mutex<ProviderStatus>>,
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

    /// Graceful stop: no more calls from this host's components, in-flight calls drained,
    /// the provider's own shutdown, then it leaves the lattice.
    pub async fn stop(mut self) {
        self.providers.write().remove(&self.id);
        if let Some(stopper) = self.stopper.take() {
            stopper(self.handle.clone()).await;
        }
        set_state(&self.status, ProviderState::Stopped);
        info!(provider = self.id, "in-process provider stopped");
    }
}

impl Drop for InProcessProvider {
    fn drop(&mut self) {
        if self.stopper.is_some() {
            self.providers.write().remove(&self.id);
            self.handle.request_shutdown();
            set_state(&self.status, ProviderState::Stopped);
        }
    }
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
    serve(handle.clone(), kv.clone()).await?;
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
    Ok(InProcessProvider {
        id,
        handle,
        stopper: Some(stopper),
        providers: providers.clone(),
        status,
    })
}
