//! The provider's links and the consumer interface. A target link (component → provider)
//! keeps the producer its publishes use; a source link (provider → component) keeps its
//! group member, replaced when the link changes and stopped when it goes.

use bytes::Bytes;
use rdkafka::producer::FutureProducer;
use trellis_interfaces::messaging::{Consumer, Message};
use trellis_sdk::link::{LinkDefinition, LinkStates};
use trellis_sdk::provider::{LinkConfig, Provider};
use trellis_sdk::runtime::CallContext;

use crate::backend::{self, Subscription};
use crate::settings::{SourceSettings, TargetSettings, valid_topic};

/// The provider: each target link's producer and each source link's group member.
#[derive(Clone, Default)]
pub struct MessagingKafka {
    targets: LinkStates<FutureProducer>,
    sources: LinkStates<Subscription>,
}

/// The consumer group a source link joins unless its config names one: one per link, so
/// instances of this provider serving the same link split its partitions.
fn default_group(link: &LinkDefinition) -> String {
    format!("trellis-{}-{}-{}", link.source_id, link.target, link.name)
}

impl Provider for MessagingKafka {
    async fn receive_link_config_as_target(&self, link: LinkConfig<'_>) -> anyhow::Result<()> {
        let settings = TargetSettings::parse(link.config)?;
        self.targets
            .insert(link.link, backend::producer(&settings.connection)?);
        Ok(())
    }

    async fn receive_link_config_as_source(&self, link: LinkConfig<'_>) -> anyhow::Result<()> {
        let settings = SourceSettings::parse(link.config, &default_group(link.link))?;
        // The old member (a changed link) leaves before the new one joins.
        self.sources.remove(link.link);
        let subscription =
            backend::subscribe(settings, link.linked_client(), link.delivery_stats())?;
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
}

impl Consumer<CallContext> for MessagingKafka {
    /// Kafka has no request/reply: said plainly, so a component can publish with a
    /// `reply-to` instead (it travels as the `reply-to` header, and the handler of the
    /// request sees it as the message's `reply_to`).
    async fn request(
        &self,
        _cx: CallContext,
        subject: String,
        _body: Bytes,
        _timeout_ms: u32,
    ) -> Result<Message, String> {
        Err(format!(
            "request on {subject}: Kafka has no request/reply; publish with reply_to and handle the answer as a message"
        ))
    }

    async fn publish(&self, cx: CallContext, msg: Message) -> Result<(), String> {
        if !valid_topic(&msg.subject) {
            return Err(format!("{:?} is not a valid Kafka topic", msg.subject));
        }
        let producer = self
            .targets
            .get(&cx.link)
            .ok_or_else(|| "this link has no messaging-kafka settings (yet)".to_string())?;
        backend::publish(&producer, &msg, &[]).await
    }
}
