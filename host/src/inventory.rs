//! What this host runs, and its answer to host ping.
//!
//! The registry holds weak references to the running components' counters and the
//! supervised providers' status, so it never keeps anything alive: a component that was
//! stopped (its [`crate::RunningComponent`] dropped) or a provider that was stopped simply
//! disappears from the next answer, with no bookkeeping on the stop paths.
//!
//! The answer goes to the 1.x control subjects `wasmbus.ctl.v1.{lattice}.host.ping` (every
//! host) and `…host.get.{host_id}` (this host), in the 1.x reply envelope.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use futures::StreamExt as _;
use tokio::task::JoinHandle;
use tracing::warn;
use trellis_sdk::admin::{ComponentInventory, CtlReply, HostInventory, ProviderInventory};
use trellis_sdk::subjects::LatticeSubjects;

use crate::supervisor::{ProviderState, ProviderStatus};

struct ComponentEntry {
    id: String,
    image_ref: String,
    parts: Vec<String>,
    served: Weak<AtomicU64>,
}

struct ProviderEntry {
    id: String,
    image_ref: String,
    status: Weak<Mutex<ProviderStatus>>,
}

/// The components and providers of one host.
#[derive(Default)]
pub(crate) struct Registry {
    components: Mutex<Vec<ComponentEntry>>,
    providers: Mutex<Vec<ProviderEntry>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    /// Records a started component (`parts`: what it was composed of, if it was).
    pub(crate) fn component(
        &self,
        id: &str,
        image_ref: &str,
        parts: Vec<String>,
        served: &Arc<AtomicU64>,
    ) {
        let mut list = lock(&self.components);
        list.retain(|c| c.served.strong_count() > 0);
        list.push(ComponentEntry {
            id: id.to_string(),
            image_ref: image_ref.to_string(),
            parts,
            served: Arc::downgrade(served),
        });
    }

    /// Records a supervised provider.
    pub(crate) fn provider(&self, id: &str, image_ref: &str, status: &Arc<Mutex<ProviderStatus>>) {
        let mut list = lock(&self.providers);
        list.retain(|p| p.status.strong_count() > 0);
        list.push(ProviderEntry {
            id: id.to_string(),
            image_ref: image_ref.to_string(),
            status: Arc::downgrade(status),
        });
    }

    fn snapshot(&self, host_id: &str, lattice: &str, started: Instant) -> HostInventory {
        let components = lock(&self.components)
            .iter()
            .filter_map(|c| {
                let served = c.served.upgrade()?;
                Some(ComponentInventory {
                    id: c.id.clone(),
                    image_ref: c.image_ref.clone(),
                    served: served.load(Ordering::Relaxed),
                    parts: c.parts.clone(),
                })
            })
            .collect();
        let providers = lock(&self.providers)
            .iter()
            .filter_map(|p| {
                let cell = p.status.upgrade()?;
                let status = lock(&cell).clone();
                let (state, reason, pid) = match status.state {
                    ProviderState::Starting => ("starting", None, None),
                    ProviderState::Running { pid } => ("running", None, Some(pid)),
                    ProviderState::Restarting { reason } => ("restarting", Some(reason), None),
                    ProviderState::GaveUp { reason } => ("failed", Some(reason), None),
                    ProviderState::Stopped => ("stopped", None, None),
                };
                Some(ProviderInventory {
                    id: p.id.clone(),
                    image_ref: p.image_ref.clone(),
                    state: state.to_string(),
                    reason,
                    pid,
                    restarts: status.restarts,
                })
            })
            .collect();
        HostInventory {
            host_id: host_id.to_string(),
            lattice: lattice.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds: started.elapsed().as_secs(),
            components,
            providers,
        }
    }
}

/// Answers host ping and inventory requests until aborted.
pub(crate) async fn answer(
    nats: async_nats::Client,
    subjects: LatticeSubjects,
    host_id: String,
    registry: Arc<Registry>,
) -> Result<JoinHandle<()>, async_nats::SubscribeError> {
    let started = Instant::now();
    let ping = nats.subscribe(subjects.host_ping()).await?;
    let get = nats.subscribe(subjects.host_inventory(&host_id)).await?;
    let mut requests = futures::stream::select(ping, get);
    Ok(tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            let Some(reply) = msg.reply else { continue };
            let inventory = registry.snapshot(&host_id, subjects.lattice(), started);
            let body = CtlReply {
                success: true,
                message: String::new(),
                response: Some(inventory),
            };
            match serde_json::to_vec(&body) {
                Ok(payload) => {
                    if let Err(err) = nats.publish(reply, payload.into()).await {
                        warn!(%err, "cannot answer host ping");
                    }
                }
                Err(err) => warn!(%err, "cannot encode the host inventory"),
            }
        }
    }))
}
