//! The provider's links and the consumer interface. A target link (component → provider)
//! keeps the NATS client its publishes and requests use; a source link (provider →
//! component) keeps its running subscription, replaced when the link changes and stopped when
//! it goes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use trellis_interfaces::messaging::{Consumer, Message};
use trellis_sdk::link::{LinkDefinition, LinkStates};
use trellis_sdk::provider::{HealthStatus, LinkConfig, Provider};
use trellis_sdk::runtime::CallContext;
use trellis_sdk::subjects::validate_subject;

use crate::backend::{self, Subscription};
use crate::settings::{SourceSettings, TargetSettings};

/// The longest request a component may ask for.
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// The provider: each target link's client and each source link's subscription.
#[derive(Clone, Default)]
pub struct MessagingNats {
    targets: LinkStates<async_nats::Client>,
    sources: LinkStates<Subscription>,
}

/// The durable consumer a source link uses unless its config names one: one per link, so
/// instances of this provider serving the same link share it (and split its messages).
fn default_consumer(link: &LinkDefinition) -> String {
    let raw = format!("trellis-{}-{}-{}", link.source_id, link.target, link.name);
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect()
}

impl Provider for MessagingNats {
    async fn receive_link_config_as_target(&self, link: LinkConfig<'_>) -> anyhow::Result<()> {
        let settings = TargetSettings::parse(link.config)?;
        let nats = backend::connect(settings.server.as_ref(), link.handle.nats()).await?;
        self.targets.insert(link.link, nats);
        Ok(())
    }

    async fn receive_link_config_as_source(&self, link: LinkConfig<'_>) -> anyhow::Result<()> {
        let settings = SourceSettings::parse(link.config, &default_consumer(link.link))?;
        // The old subscription (a changed link) stops before the new one starts.
        self.sources.remove(link.link);
        let nats = backend::connect(settings.server.as_ref(), link.handle.nats()).await?;
        let subscription =
            backend::subscribe(nats, settings, link.linked_client(), link.delivery_stats()).await?;
        self.sources.insert(link.link, subscription);
        Ok(())
    }

    async fn delete_link_as_target(&self, link: &LinkDefinition) -> anyhow::Result<()> {
        self.targets.remove(link);
        Ok(())
    }

    async fn delete_link_as_source(&self, link: &LinkDefinition) -> anyhow::Result<()> {
        self.sources.remove(link);
        Ok(())
    }

    async fn shutdown(&self) -> anyhow::Result<()> {
        self.sources.clear();
        Ok(())
    }

    /// Healthy when every target link's NATS connection is up; otherwise unhealthy, naming
    /// each link whose connection is not (not its URL: it may carry credentials).
    async fn health(&self) -> anyhow::Result<HealthStatus> {
        let checks = self.targets.all().into_iter().map(|(key, nats)| {
            let up = nats.connection_state() == async_nats::connection::State::Connected;
            (
                key,
                up.then_some(())
                    .ok_or_else(|| "its NATS server is not connected".to_string()),
            )
        });
        Ok(HealthStatus::of_links(checks))
    }
}

impl MessagingNats {
    fn client(&self, cx: &CallContext) -> Result<Arc<async_nats::Client>, String> {
        self.targets
            .get(&cx.link)
            .ok_or_else(|| "this link has no messaging-nats settings (yet)".to_string())
    }
}

/// A component's subject, checked before it reaches NATS: a whole subject, no wildcards.
fn publishable(subject: &str) -> Result<(), String> {
    validate_subject("subject", subject, false).map_err(|e| e.to_string())
}

impl Consumer<CallContext> for MessagingNats {
    async fn request(
        &self,
        cx: CallContext,
        subject: String,
        body: Bytes,
        timeout_ms: u32,
    ) -> Result<Message, String> {
        publishable(&subject)?;
        let nats = self.client(&cx)?;
        let timeout = Duration::from_millis(u64::from(timeout_ms)).min(MAX_REQUEST_TIMEOUT);
        let request = async_nats::Request::new()
            .payload(body)
            .timeout(Some(timeout));
        let reply = nats
            .send_request(subject.clone(), request)
            .await
            .map_err(|e| format!("request on {subject} failed: {e}"))?;
        Ok(Message {
            subject: reply.subject.to_string(),
            body: reply.payload,
            reply_to: None,
        })
    }

    async fn publish(&self, cx: CallContext, msg: Message) -> Result<(), String> {
        publishable(&msg.subject)?;
        if let Some(reply) = &msg.reply_to {
            publishable(reply)?;
        }
        let nats = self.client(&cx)?;
        let subject = msg.subject.clone();
        let sent = match msg.reply_to {
            Some(reply) => nats.publish_with_reply(msg.subject, reply, msg.body).await,
            None => nats.publish(msg.subject, msg.body).await,
        };
        sent.map_err(|e| format!("publish on {subject} failed: {e}"))
    }
}
