//! The link loop: the one task that applies link changes, in order, to the table and the
//! provider.
//!
//! Pushes from a host, pulls from the lattice store, purge requests and config updates all
//! become [`LinkCommand`]s on one channel, so the provider sees them one at a time and the
//! table never disagrees with what the provider was told. A provider callback that fails,
//! panics or hangs marks the link failed and is reported (lattice event and link ping); it
//! never stops the loop.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::{Inner, ProviderHandle};
use crate::events::{self, kind};
use crate::host_data::SecretValue;
use crate::link::{
    LinkDefinition, LinkKey, LinkRole, LinkSecrets, LinkSelector, LinkState, PutOutcome,
};
use crate::provider::{LinkConfig, Provider};
use crate::sealing::SecretMap;

/// A change to apply.
pub(crate) enum LinkCommand {
    /// A link was put (pushed by a host, or from host data).
    Put {
        link: LinkDefinition,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// Links were deleted (pushed by a host).
    Delete {
        selector: LinkSelector,
        reply: Option<oneshot::Sender<usize>>,
    },
    /// Purge request.
    Purge {
        selector: LinkSelector,
        reply: oneshot::Sender<Vec<LinkKey>>,
    },
    /// What the lattice store holds for this provider now (config resolved), and the links
    /// it holds that could not be resolved.
    StoreSnapshot {
        links: BTreeMap<LinkKey, LinkDefinition>,
        broken: Vec<(LinkDefinition, String)>,
    },
    /// The provider's own config changed.
    ConfigUpdate(HashMap<String, String>),
    /// Answers once every command sent before it has been applied.
    Barrier(oneshot::Sender<()>),
}

/// Longest a provider callback may take before the link is marked failed.
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a provider callback with a timeout, turning errors and panics into a message.
async fn guarded<F>(what: &str, fut: F) -> Result<(), String>
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    match tokio::time::timeout(CALLBACK_TIMEOUT, AssertUnwindSafe(fut).catch_unwind()).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(err))) => Err(format!("{err:#}")),
        Ok(Err(_)) => Err(format!("the provider panicked in {what}")),
        Err(_) => Err(format!("{what} did not finish within {CALLBACK_TIMEOUT:?}")),
    }
}

pub(crate) async fn run<P: Provider>(
    inner: Arc<Inner>,
    provider: Arc<P>,
    mut rx: mpsc::Receiver<LinkCommand>,
) {
    // What the store reported last, so a snapshot only delivers what changed in the store
    // (a purged link stays purged until it is really put again).
    let mut store_view: BTreeMap<LinkKey, LinkDefinition> = BTreeMap::new();
    while let Some(cmd) = rx.recv().await {
        match cmd {
            LinkCommand::Put { link, reply } => {
                let res = put(&inner, &*provider, link).await;
                if let Some(reply) = reply {
                    let _ = reply.send(res);
                }
            }
            LinkCommand::Delete { selector, reply } => {
                let removed = inner.table().remove(&selector);
                let n = removed.len();
                for entry in removed {
                    if entry.state != LinkState::Purged {
                        teardown(&inner, &*provider, &entry.definition).await;
                    }
                    info!(link = %entry.definition.key(), "link deleted");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(n);
                }
            }
            LinkCommand::Purge { selector, reply } => {
                let purged = inner.table().purge(&selector);
                let mut keys = Vec::with_capacity(purged.len());
                for link in purged {
                    teardown(&inner, &*provider, &link).await;
                    let key = link.key();
                    info!(link = %key, "link purged");
                    events::publish(
                        &inner.nats,
                        &inner.subjects,
                        &inner.config.provider_id,
                        kind::LINK_PURGED,
                        serde_json::json!({
                            "provider_id": inner.config.provider_id,
                            "instance_id": inner.config.instance_id,
                            "link": key,
                        }),
                    )
                    .await;
                    keys.push(key);
                }
                let _ = reply.send(keys);
            }
            LinkCommand::StoreSnapshot { links, broken } => {
                for (key, link) in &links {
                    if store_view.get(key) != Some(link) {
                        let _ = put(&inner, &*provider, link.clone()).await;
                    }
                }
                let gone: Vec<LinkKey> = store_view
                    .keys()
                    .filter(|k| !links.contains_key(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    let removed = inner.table().remove_key(&key);
                    if let Some(entry) = removed {
                        if entry.state != LinkState::Purged {
                            teardown(&inner, &*provider, &entry.definition).await;
                        }
                        info!(link = %key, "link deleted from the lattice store");
                    }
                }
                for (link, error) in broken {
                    let key = link.key();
                    let already = inner.table().get(&key).is_some_and(|e| {
                        e.state
                            == (LinkState::Failed {
                                error: error.clone(),
                            })
                    });
                    if !already {
                        fail(&inner, link, error).await;
                    }
                }
                store_view = links;
            }
            LinkCommand::Barrier(done) => {
                let _ = done.send(());
            }
            LinkCommand::ConfigUpdate(config) => {
                if let Err(err) =
                    guarded("on_config_update", provider.on_config_update(&config)).await
                {
                    warn!(error = %err, "provider config update failed");
                }
            }
        }
    }
    debug!("link loop ended");
}

/// Applies one put: new and changed links reach the provider; the same link again does not.
async fn put<P: Provider>(
    inner: &Arc<Inner>,
    provider: &P,
    link: LinkDefinition,
) -> Result<(), String> {
    if let Err(err) = link.validate() {
        return Err(err.to_string());
    }
    let role = {
        let table = inner.table();
        let Some(role) = table.role(&link) else {
            return Ok(()); // not ours: a put for another provider on a shared subject
        };
        match table.classify(&link) {
            PutOutcome::Unchanged => return Ok(()),
            outcome => (role, outcome),
        }
    };
    let (role, outcome) = role;
    let is_update = outcome == PutOutcome::Changed;
    let (side_config, sealed) = match role {
        LinkRole::Target => (&link.target_config, &link.target_secrets),
        LinkRole::Source => (&link.source_config, &link.source_secrets),
    };
    let secrets = match open_secrets(inner, sealed.as_ref()) {
        Ok(secrets) => secrets,
        Err(error) => {
            fail(inner, link, error.clone()).await;
            return Err(error);
        }
    };
    let config = with_secrets(side_config, &secrets);
    let cfg = LinkConfig {
        link: &link,
        config: &config,
        secrets: &secrets,
        is_update,
        handle: ProviderHandle {
            inner: Arc::clone(inner),
        },
    };
    let res = match role {
        LinkRole::Target => {
            guarded(
                "receive_link_config_as_target",
                provider.receive_link_config_as_target(cfg),
            )
            .await
        }
        LinkRole::Source => {
            guarded(
                "receive_link_config_as_source",
                provider.receive_link_config_as_source(cfg),
            )
            .await
        }
    };
    match res {
        Ok(()) => {
            info!(link = %link.key(), ?outcome, "link set up");
            inner.table().record(link, LinkState::Active);
            Ok(())
        }
        Err(error) => {
            fail(inner, link, error.clone()).await;
            Err(error)
        }
    }
}

/// Opens a side's sealed secrets with this instance's xkey; a link that carries secrets the
/// instance cannot open fails with the reason (never the values).
fn open_secrets(inner: &Inner, sealed: Option<&LinkSecrets>) -> Result<SecretMap, String> {
    let Some(sealed) = sealed else {
        return Ok(SecretMap::new());
    };
    let bytes = sealed
        .sealed()
        .ok_or("the link's secrets are not sealed bytes")?;
    let keys = inner.config.secret_keys.as_ref().ok_or(
        "the link carries sealed secrets, but this provider has no xkey to open them \
         (started without host data from a host that seals secrets)",
    )?;
    keys.instance
        .open_map(&bytes, &keys.host_public)
        .map_err(|e| e.to_string())
}

/// A side's config with its text secrets laid over it (a secret wins over config of the
/// same key).
fn with_secrets(config: &HashMap<String, String>, secrets: &SecretMap) -> HashMap<String, String> {
    let mut merged = config.clone();
    for (key, value) in secrets {
        if let SecretValue::String(text) = value {
            merged.insert(key.clone(), text.expose().to_string());
        }
    }
    merged
}

/// Records a failed link and reports it on the lattice.
async fn fail(inner: &Inner, link: LinkDefinition, error: String) {
    warn!(link = %link.key(), %error, "link set-up failed");
    let data = serde_json::json!({
        "provider_id": inner.config.provider_id,
        "instance_id": inner.config.instance_id,
        "source_id": link.source_id,
        "target": link.target,
        "name": link.name,
        "wit_namespace": link.wit_namespace,
        "wit_package": link.wit_package,
        "interfaces": link.interfaces,
        "error": error,
    });
    inner.table().record(link, LinkState::Failed { error });
    events::publish(
        &inner.nats,
        &inner.subjects,
        &inner.config.provider_id,
        kind::LINK_SET_FAILED,
        data,
    )
    .await;
}

/// Tells the provider to drop what it holds for `link`.
async fn teardown<P: Provider>(inner: &Inner, provider: &P, link: &LinkDefinition) {
    let role = inner.table().role(link);
    let res = match role {
        Some(LinkRole::Target) => {
            guarded(
                "delete_link_as_target",
                provider.delete_link_as_target(link),
            )
            .await
        }
        Some(LinkRole::Source) => {
            guarded(
                "delete_link_as_source",
                provider.delete_link_as_source(link),
            )
            .await
        }
        None => Ok(()),
    };
    if let Err(error) = res {
        warn!(link = %link.key(), %error, "provider failed to drop a link");
    }
}
