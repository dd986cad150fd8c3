//! The provider's links and the consumer interface. A target link (component → provider)
//! keeps the producer its publishes use and, once it makes a request, the reader of its
//! reply topic; a source link (provider → component) keeps its group member, replaced when
//! the link changes and stopped when it goes.

use std::time::Duration;

use bytes::Bytes;
use rdkafka::producer::{FutureProducer, Producer as _};
use tokio::sync::OnceCell;
use trellis_interfaces::messaging::{Consumer, Message};
use trellis_sdk::link::{LinkDefinition, LinkStates};
use trellis_sdk::provider::{HealthStatus, LinkConfig, Provider};
use trellis_sdk::runtime::CallContext;

use crate::backend::{self, Subscription};
use crate::replies::{self, Replies};
use crate::settings::{SourceSettings, TargetSettings, valid_topic};

/// How long a health check waits for a link's brokers.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest request a component may ask for.
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// A target link: its settings, its producer, its reply reader once needed.
struct Target {
    settings: TargetSettings,
    producer: FutureProducer,
    replies: OnceCell<Replies>,
}

/// The provider: each target link's producer and each source link's group member.
#[derive(Clone, Default)]
pub struct MessagingKafka {
    targets: LinkStates<Target>,
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
        let producer = backend::producer(&settings.connection)?;
        self.targets.insert(
            link.link,
            Target {
                settings,
                producer,
                replies: OnceCell::new(),
            },
        );
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

    /// Healthy when the brokers of every target link answer a metadata request within two
    /// seconds; otherwise unhealthy, naming each link whose brokers do not. (A delivering
    /// link's member reconnects by itself and shows in its delivery counters.)
    async fn health(&self) -> anyhow::Result<HealthStatus> {
        let checks = self
            .targets
            .all()
            .into_iter()
            .map(|(key, target)| async move {
                let producer = target.producer.clone();
                let asked = tokio::task::spawn_blocking(move || {
                    producer
                        .client()
                        .fetch_metadata(None, HEALTH_TIMEOUT)
                        .map(drop)
                        .map_err(|e| format!("the brokers do not answer: {e}"))
                })
                .await;
                (
                    key,
                    asked.unwrap_or_else(|e| Err(format!("the check failed: {e}"))),
                )
            });
        Ok(HealthStatus::of_links(
            futures::future::join_all(checks).await,
        ))
    }
}

impl MessagingKafka {
    fn target(&self, cx: &CallContext) -> Result<std::sync::Arc<Target>, String> {
        self.targets
            .get(&cx.link)
            .ok_or_else(|| "this link has no messaging-kafka settings (yet)".to_string())
    }
}

impl Consumer<CallContext> for MessagingKafka {
    /// Publishes the request with `reply-to` `REPLY_TOPIC#ID` and waits for the answer
    /// carrying that id on the link's `reply_topic` (see `replies`); a link without one
    /// refuses requests saying so.
    async fn request(
        &self,
        cx: CallContext,
        subject: String,
        body: Bytes,
        timeout_ms: u32,
    ) -> Result<Message, String> {
        if !valid_topic(&subject) {
            return Err(format!("{subject:?} is not a valid Kafka topic"));
        }
        let target = self.target(&cx)?;
        let Some(topic) = &target.settings.reply_topic else {
            return Err(format!(
                "request on {subject}: this link names no reply_topic to read answers from"
            ));
        };
        let replies = target
            .replies
            .get_or_try_init(|| Replies::start(&target.settings.connection, topic))
            .await?;
        let timeout = Duration::from_millis(u64::from(timeout_ms)).min(MAX_REQUEST_TIMEOUT);
        replies
            .request(&target.producer, subject, body, timeout)
            .await
    }

    /// Publishes `msg`; a subject `TOPIC#ID` (a request's `reply_to`) is an answer: it goes
    /// to `TOPIC` with the request's id in a header.
    async fn publish(&self, cx: CallContext, msg: Message) -> Result<(), String> {
        let (topic, id) = replies::split_reply(&msg.subject);
        if !valid_topic(topic) {
            return Err(format!("{:?} is not a valid Kafka topic", msg.subject));
        }
        let target = self.target(&cx)?;
        match id {
            None => backend::publish(&target.producer, &msg, &[]).await,
            Some(id) => {
                let answer = Message {
                    subject: topic.to_string(),
                    ..msg.clone()
                };
                backend::publish(&target.producer, &answer, &[(replies::CORRELATION, id)]).await
            }
        }
    }
}
