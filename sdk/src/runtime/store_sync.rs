//! Pulling links from the lattice store and following it live.
//!
//! At start the provider reads every link that names it (config resolved) and applies them
//! before it is reported started. Then it watches both buckets: any change — a link put or
//! deleted, a named config edited — triggers a re-read, and the link loop delivers only what
//! changed. If the watch breaks (NATS restarted, JetStream moved), the task re-syncs and
//! watches again with backoff, so nothing that happened meanwhile is missed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tracing::{debug, warn};

use super::links::LinkCommand;
use super::{Inner, secrets};
use crate::link::LinkDefinition;
use crate::store::{LatticeStore, StoreError};

/// Changes arriving within this window are handled by one re-read.
const DEBOUNCE: Duration = Duration::from_millis(30);

async fn sync(inner: &Inner, store: &LatticeStore) -> Result<(), StoreError> {
    let found = store.links_for(&inner.config.provider_id).await?;
    inner.proofs.set_keys(found.source_keys);
    let mut broken: Vec<(LinkDefinition, String)> = found
        .broken
        .into_iter()
        .map(|(l, err)| {
            let def = LinkDefinition {
                source_id: l.source_id,
                target: l.target,
                name: l.name,
                wit_namespace: l.wit_namespace,
                wit_package: l.wit_package,
                interfaces: l.interfaces,
                source_config: Default::default(),
                target_config: Default::default(),
                source_secrets: None,
                target_secrets: None,
            };
            (def, err.to_string())
        })
        .collect();
    let mut links = found.links;
    for key in &found.needing_secrets {
        let Some(mut link) = links.remove(key) else {
            continue;
        };
        match secrets::seal_in(inner, &mut link).await {
            Ok(()) => {
                links.insert(key.clone(), link);
            }
            Err(error) => broken.push((link, error)),
        }
    }
    inner
        .command(LinkCommand::StoreSnapshot { links, broken })
        .await;
    Ok(())
}

/// Does the first sync (so links are in place before serving starts), then keeps following.
pub(crate) async fn start(inner: &Arc<Inner>) {
    let first = match LatticeStore::open(&inner.nats, &inner.subjects).await {
        Ok(store) => match sync(inner, &store).await {
            Ok(()) => Some(store),
            Err(err) => {
                warn!(%err, "initial link pull failed; will retry");
                None
            }
        },
        Err(err) => {
            warn!(%err, "lattice store unavailable; will retry");
            None
        }
    };
    let task_inner = Arc::clone(inner);
    inner.spawn(follow(task_inner, first));
}

async fn follow(inner: Arc<Inner>, mut store: Option<LatticeStore>) {
    let mut attempt: u32 = 0;
    loop {
        let s = match store.take() {
            Some(s) => s,
            None => match LatticeStore::open(&inner.nats, &inner.subjects).await {
                Ok(s) => {
                    if let Err(err) = sync(&inner, &s).await {
                        warn!(%err, "link pull failed");
                        backoff(&mut attempt).await;
                        continue;
                    }
                    s
                }
                Err(err) => {
                    debug!(%err, "lattice store unavailable");
                    backoff(&mut attempt).await;
                    continue;
                }
            },
        };
        let mut changes = match s.watch().await {
            Ok(w) => Box::pin(w),
            Err(err) => {
                warn!(%err, "cannot watch the lattice store");
                backoff(&mut attempt).await;
                continue;
            }
        };
        // The watch may have started after a change we did not see: read once more.
        if sync(&inner, &s).await.is_err() {
            backoff(&mut attempt).await;
            continue;
        }
        attempt = 0;
        loop {
            match changes.next().await {
                Some(Ok(_)) => {
                    // Coalesce a burst of changes into one re-read.
                    let window = tokio::time::sleep(DEBOUNCE);
                    tokio::pin!(window);
                    loop {
                        tokio::select! {
                            _ = &mut window => break,
                            more = changes.next() => match more {
                                Some(Ok(_)) => continue,
                                _ => break,
                            },
                        }
                    }
                    if let Err(err) = sync(&inner, &s).await {
                        warn!(%err, "link re-read failed");
                        break;
                    }
                }
                Some(Err(err)) => {
                    warn!(%err, "lattice store watch failed; re-syncing");
                    break;
                }
                None => {
                    debug!("lattice store watch ended; re-syncing");
                    break;
                }
            }
        }
        backoff(&mut attempt).await;
    }
}

async fn backoff(attempt: &mut u32) {
    *attempt = attempt.saturating_add(1);
    let ms = 100u64.saturating_mul(1 << (*attempt).min(6)).min(5_000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}
