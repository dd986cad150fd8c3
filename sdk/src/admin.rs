//! Asking the lattice what runs in it: link ping and link purge to providers (Trellis
//! extensions), health to providers and host ping to hosts (1.x control subjects; health is
//! all a 1.x provider answers about itself).
//!
//! All are scatter-gather requests: one message, answered by every instance that listens,
//! collected until the wait runs out. The host and the CLI use these functions; the provider
//! side that answers link requests lives in the runtime, the host side of host ping in the
//! host.

use std::time::Duration;

use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

use crate::link::{LinkKey, LinkSelector, LinkStatus};
use crate::subjects::LatticeSubjects;

/// One provider instance's answer to a link ping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PingReply {
    /// The provider id.
    pub provider_id: String,
    /// The answering instance.
    pub instance_id: String,
    /// The host that started it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    /// Every link the instance holds, with its state and call counts.
    pub links: Vec<LinkStatus>,
}

/// One provider instance's answer to a link purge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PurgeReply {
    /// The provider id.
    pub provider_id: String,
    /// The answering instance.
    pub instance_id: String,
    /// The links it purged now.
    pub purged: Vec<LinkKey>,
}

/// The 1.x control-interface reply envelope: `{"success", "message", "response"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CtlReply<T> {
    /// Whether the request succeeded.
    pub success: bool,
    /// Why not, when it did not.
    #[serde(default)]
    pub message: String,
    /// The answer.
    pub response: Option<T>,
}

/// What one host runs: its answer to a host ping.
///
/// Field names follow the 1.x host inventory where they overlap (`host_id`, `components`,
/// `providers`, `id`, `image_ref`), so 1.x tooling reads the common part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostInventory {
    /// The host id.
    pub host_id: String,
    /// The lattice it serves.
    #[serde(default)]
    pub lattice: String,
    /// Trellis version of the host.
    #[serde(default)]
    pub version: String,
    /// Seconds since the host started.
    #[serde(default)]
    pub uptime_seconds: u64,
    /// Components it serves.
    #[serde(default)]
    pub components: Vec<ComponentInventory>,
    /// Providers it supervises.
    #[serde(default)]
    pub providers: Vec<ProviderInventory>,
}

/// A component a host serves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComponentInventory {
    /// Component id.
    pub id: String,
    /// Where it was loaded from.
    #[serde(default)]
    pub image_ref: String,
    /// Invocations served so far by this host.
    #[serde(default)]
    pub served: u64,
    /// For a composed component (`trellis compose`, or `compose:` in a manifest): the
    /// components composed into it, the main one first. A Trellis field; 1.x readers ignore
    /// it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<String>,
}

/// A provider a host supervises.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProviderInventory {
    /// Provider id.
    pub id: String,
    /// Its binary.
    #[serde(default)]
    pub image_ref: String,
    /// `starting`, `running`, `restarting`, `failed` or `stopped`.
    #[serde(default)]
    pub state: String,
    /// Why it is restarting or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Its process id while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Restarts so far.
    #[serde(default)]
    pub restarts: u32,
}

/// An error answer from a provider (a request it could not parse).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What was wrong.
    pub error: String,
}

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// NATS refused the request.
    #[error("NATS request failed: {0}")]
    Nats(String),
    /// The request could not be encoded.
    #[error("cannot encode request: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Sends `payload` to `subject` and collects the replies that parse as `T` until `wait`
/// elapses (or `max` replies arrived). Replies that do not parse are logged and skipped.
async fn gather<T: serde::de::DeserializeOwned>(
    nats: &async_nats::Client,
    subject: String,
    payload: Vec<u8>,
    wait: Duration,
    max: usize,
) -> Result<Vec<T>, AdminError> {
    let inbox = nats.new_inbox();
    let mut sub = nats
        .subscribe(inbox.clone())
        .await
        .map_err(|e| AdminError::Nats(e.to_string()))?;
    nats.publish_with_reply(subject, inbox, payload.into())
        .await
        .map_err(|e| AdminError::Nats(e.to_string()))?;
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while out.len() < max {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(msg)) => {
                if msg.status.is_some() {
                    // "No responders": nobody listens; nothing more will come.
                    break;
                }
                match serde_json::from_slice::<T>(&msg.payload) {
                    Ok(reply) => out.push(reply),
                    Err(err) => tracing::warn!(%err, "skipping an unreadable admin reply"),
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    let _ = sub.unsubscribe().await;
    Ok(out)
}

/// Pings the links of every instance of `provider_id` (or of every provider in the lattice
/// when `None`), collecting answers for `wait`.
pub async fn ping_links(
    nats: &async_nats::Client,
    subjects: &LatticeSubjects,
    provider_id: Option<&str>,
    wait: Duration,
) -> Result<Vec<PingReply>, AdminError> {
    let subject = match provider_id {
        Some(id) => subjects.link_ping(id),
        None => subjects.link_ping_all(),
    };
    gather(nats, subject, b"{}".to_vec(), wait, usize::MAX).await
}

/// Asks provider `provider_id` for its health (the 1.x subject every provider answers):
/// `None` when nothing answers within `wait`, an unhealthy status when the answer does not
/// parse.
pub async fn provider_health(
    nats: &async_nats::Client,
    subjects: &LatticeSubjects,
    provider_id: &str,
    wait: Duration,
) -> Option<crate::provider::HealthStatus> {
    use crate::provider::HealthStatus;
    let request = nats.request(subjects.health(provider_id), "".into());
    match tokio::time::timeout(wait, request).await {
        Ok(Ok(msg)) => {
            Some(serde_json::from_slice(&msg.payload).unwrap_or_else(|e| {
                HealthStatus::unhealthy(format!("unreadable health reply: {e}"))
            }))
        }
        Ok(Err(_)) | Err(_) => None,
    }
}

/// Pings every host of the lattice, collecting their inventories for `wait`. Replies that
/// are not successful inventories (a 1.x host answers with less) are skipped.
pub async fn ping_hosts(
    nats: &async_nats::Client,
    subjects: &LatticeSubjects,
    wait: Duration,
) -> Result<Vec<HostInventory>, AdminError> {
    let replies: Vec<CtlReply<HostInventory>> =
        gather(nats, subjects.host_ping(), b"{}".to_vec(), wait, usize::MAX).await?;
    Ok(replies
        .into_iter()
        .filter(|r| r.success)
        .filter_map(|r| r.response)
        .collect())
}

/// Purges the links `selector` matches in every instance of `provider_id`, collecting
/// answers for `wait`.
pub async fn purge_links(
    nats: &async_nats::Client,
    subjects: &LatticeSubjects,
    provider_id: &str,
    selector: &LinkSelector,
    wait: Duration,
) -> Result<Vec<PurgeReply>, AdminError> {
    let payload = serde_json::to_vec(selector)?;
    gather(
        nats,
        subjects.link_purge(provider_id),
        payload,
        wait,
        usize::MAX,
    )
    .await
}
