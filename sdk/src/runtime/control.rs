//! The control subjects a provider answers: link put/delete, health, shutdown, config update
//! (*1.x*), and link ping and purge (Trellis).
//!
//! Every payload comes from the network and is checked before use: a message that does not
//! parse is logged, answered with an error when it has a reply subject, and changes nothing.
//! Each subject has its own task, so a slow link set-up never delays a health reply.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::links::LinkCommand;
use super::{Inner, RuntimeError};
use crate::admin::{ErrorReply, PingReply, PurgeReply};
use crate::link::{LinkDefinition, LinkSelector};
use crate::provider::{HealthStatus, Provider};

/// Longest a health check may take before it is answered as unhealthy.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// *1.x* shutdown request. `host_id` is required: a message without it is not a shutdown
/// request, whatever else it says.
#[derive(Debug, Deserialize)]
struct ShutdownRequest {
    host_id: String,
}

/// *1.x* reply to a link put (when the host asks for one).
#[derive(Debug, Serialize)]
struct PutReply {
    success: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    message: String,
}

async fn reply(inner: &Inner, to: Option<async_nats::Subject>, body: &impl Serialize) {
    let Some(to) = to else { return };
    match serde_json::to_vec(body) {
        Ok(body) => {
            if let Err(err) = inner.nats.publish(to, Bytes::from(body)).await {
                warn!(%err, "failed to send a control reply");
            }
        }
        Err(err) => warn!(%err, "failed to encode a control reply"),
    }
}

fn bad_payload(subject: &str, err: &serde_json::Error) -> ErrorReply {
    warn!(subject, %err, "ignoring an unreadable control message");
    ErrorReply {
        error: format!("unreadable payload on {subject}: {err}"),
    }
}

/// Parses a control payload; a payload that does not parse is logged and answered with an
/// [`ErrorReply`] (when the message has a reply subject), and yields `None`.
async fn parse<T: serde::de::DeserializeOwned>(
    inner: &Inner,
    msg: &async_nats::Message,
) -> Option<T> {
    match serde_json::from_slice(&msg.payload) {
        Ok(v) => Some(v),
        Err(err) => {
            reply(
                inner,
                msg.reply.clone(),
                &bad_payload(msg.subject.as_str(), &err),
            )
            .await;
            None
        }
    }
}

/// Subscribes `subject` and runs `handle` for every message, in a task of the runtime.
async fn on<F, Fut>(inner: &Arc<Inner>, subject: String, handle: F) -> Result<(), RuntimeError>
where
    F: Fn(Arc<Inner>, async_nats::Message) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let mut sub =
        inner
            .nats
            .subscribe(subject.clone())
            .await
            .map_err(|e| RuntimeError::Subscribe {
                subject: subject.clone(),
                message: e.to_string(),
            })?;
    let task_inner = Arc::clone(inner);
    inner.spawn(async move {
        while let Some(msg) = sub.next().await {
            handle(Arc::clone(&task_inner), msg).await;
        }
        debug!(subject, "control subscription ended");
    });
    Ok(())
}

/// Subscribes every control subject of the provider, one named handler each, and waits
/// until the server has all the subscriptions.
pub(crate) async fn subscribe_all<P: Provider>(
    inner: &Arc<Inner>,
    provider: &Arc<P>,
) -> Result<(), RuntimeError> {
    let s = &inner.subjects;
    let id = inner.config.provider_id.clone();
    // 1.x hosts address link puts to the provider id or to the instance's xkey; listening on
    // the wildcard and keeping only links naming this provider covers both.
    on(inner, s.link_put("*"), on_link_put).await?;
    on(inner, s.link_del(&id), on_link_del).await?;
    let p = Arc::clone(provider);
    on(inner, s.health(&id), move |inner, msg| {
        on_health(Arc::clone(&p), inner, msg)
    })
    .await?;
    on(inner, s.shutdown(&id), on_shutdown).await?;
    on(inner, s.config_update(&id), on_config_update).await?;
    for subject in [s.link_ping(&id), s.link_ping_all()] {
        on(inner, subject, on_link_ping).await?;
    }
    on(inner, s.link_purge(&id), on_link_purge).await?;

    // Make sure the server has every subscription before anyone is told we are up.
    inner
        .wrpc
        .sync()
        .await
        .map_err(|e| RuntimeError::Subscribe {
            subject: "(sync)".into(),
            message: format!("{e:#}"),
        })?;
    Ok(())
}

/// *1.x* link put: a link naming this provider (as source or target) goes into the table;
/// the answer says whether it was accepted.
async fn on_link_put(inner: Arc<Inner>, msg: async_nats::Message) {
    let subject = msg.subject.to_string();
    let link: LinkDefinition = match serde_json::from_slice(&msg.payload) {
        Ok(l) => l,
        Err(err) => {
            let body = bad_payload(&subject, &err);
            let body = PutReply {
                success: false,
                message: body.error,
            };
            return reply(&inner, msg.reply, &body).await;
        }
    };
    if link.target != inner.config.provider_id && link.source_id != inner.config.provider_id {
        return;
    }
    let (tx, rx) = oneshot::channel();
    inner
        .command(LinkCommand::Put {
            link,
            reply: Some(tx),
        })
        .await;
    let res = rx
        .await
        .unwrap_or_else(|_| Err("provider is stopping".into()));
    let body = match res {
        Ok(()) => PutReply {
            success: true,
            message: String::new(),
        },
        Err(message) => PutReply {
            success: false,
            message,
        },
    };
    reply(&inner, msg.reply, &body).await;
}

/// *1.x* link delete: every link the selector matches leaves the table.
async fn on_link_del(inner: Arc<Inner>, msg: async_nats::Message) {
    let Some(selector) = parse::<LinkSelector>(&inner, &msg).await else {
        return;
    };
    let (tx, rx) = oneshot::channel();
    inner
        .command(LinkCommand::Delete {
            selector,
            reply: Some(tx),
        })
        .await;
    let removed = rx.await.unwrap_or(0);
    let body = serde_json::json!({ "success": true, "removed": removed });
    reply(&inner, msg.reply, &body).await;
}

/// *1.x* health: the provider's own check, bounded (see [`health`]).
async fn on_health<P: Provider>(provider: Arc<P>, inner: Arc<Inner>, msg: async_nats::Message) {
    let status = health(&*provider).await;
    if !status.healthy {
        warn!(message = ?status.message, "health check failed");
    }
    reply(&inner, msg.reply, &status).await;
}

/// *1.x* shutdown, when it names this provider's host: the provider stops, and answers once
/// it has drained (see [`ProviderHandle::stop`](super::ProviderHandle::stop)).
async fn on_shutdown(inner: Arc<Inner>, msg: async_nats::Message) {
    let Some(req) = parse::<ShutdownRequest>(&inner, &msg).await else {
        return;
    };
    if let Some(ours) = &inner.config.host_id
        && req.host_id != *ours
    {
        debug!(host_id = req.host_id, "ignoring shutdown for another host");
        return;
    }
    info!("shutdown requested over the lattice");
    inner.request_shutdown_answering(msg.reply);
}

/// *1.x* provider config update.
async fn on_config_update(inner: Arc<Inner>, msg: async_nats::Message) {
    if let Some(config) = parse::<HashMap<String, String>>(&inner, &msg).await {
        inner.command(LinkCommand::ConfigUpdate(config)).await;
    }
}

/// Trellis link ping: every link this provider holds, with its state.
async fn on_link_ping(inner: Arc<Inner>, msg: async_nats::Message) {
    let body = PingReply {
        provider_id: inner.config.provider_id.clone(),
        instance_id: inner.config.instance_id.clone(),
        host_id: inner.config.host_id.clone(),
        links: inner.table().statuses(),
    };
    reply(&inner, msg.reply, &body).await;
}

/// Trellis link purge: the matching links' resources are dropped and their calls refused.
async fn on_link_purge(inner: Arc<Inner>, msg: async_nats::Message) {
    let Some(selector) = parse::<LinkSelector>(&inner, &msg).await else {
        return;
    };
    let (tx, rx) = oneshot::channel();
    inner
        .command(LinkCommand::Purge {
            selector,
            reply: tx,
        })
        .await;
    let purged = rx.await.unwrap_or_default();
    let body = PurgeReply {
        provider_id: inner.config.provider_id.clone(),
        instance_id: inner.config.instance_id.clone(),
        purged,
    };
    reply(&inner, msg.reply, &body).await;
}

/// Runs the provider's health check; errors, panics and hangs are unhealthy, never fatal.
async fn health<P: Provider>(provider: &P) -> HealthStatus {
    match tokio::time::timeout(
        HEALTH_TIMEOUT,
        AssertUnwindSafe(provider.health()).catch_unwind(),
    )
    .await
    {
        Ok(Ok(Ok(status))) => status,
        Ok(Ok(Err(err))) => HealthStatus::unhealthy(format!("health check failed: {err:#}")),
        Ok(Err(_)) => HealthStatus::unhealthy("health check panicked"),
        Err(_) => {
            HealthStatus::unhealthy(format!("health check took longer than {HEALTH_TIMEOUT:?}"))
        }
    }
}
