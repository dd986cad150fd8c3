//! Kafka clients of one link: a producer for publishing (and dead letters), and for a source
//! link a consumer group member whose records go through the SDK's delivery engine.
//!
//! At least once: a record is submitted on its partition's lane, so the records of a
//! partition are handled one after another, in offset order. When one's delivery has ended
//! (handled, or dead-lettered after its attempts) its next offset becomes the partition's
//! committable position — never past a record not yet done, since every earlier record of
//! the partition ended first. A committer sends those positions every 200 ms, and the
//! group's rebalance callback commits them synchronously before partitions are revoked; what
//! was not yet handled is not committed, and the partition's next owner reads it again.
//!
//! Reading waits while the engine's lanes are full (librdkafka's own prefetch is capped
//! small), so a slow component leaves the backlog in Kafka. After a total broker outage the
//! group member is rebuilt once a broker answers again; the delivery engine (and what it
//! holds) carries on across members.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use trellis_interfaces::messaging::{HandlerClient, Message};
use trellis_sdk::delivery::{Deliver, Delivery, DeliveryStats, Outcome};
use trellis_sdk::runtime::LinkedClient;

use crate::settings::{Connection, SourceSettings};

/// Header carrying a message's `reply-to` (both ways).
pub const REPLY_TO: &str = "reply-to";
/// Header of a dead letter: why its delivery failed.
pub const DEAD_LETTER_REASON: &str = "trellis-dead-letter-reason";
/// Header of a dead letter: the topic it was published on.
pub const DEAD_LETTER_TOPIC: &str = "trellis-original-topic";

/// How long a publish may wait for room in the producer's queue.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often handled positions are committed.
const COMMIT_EVERY: Duration = Duration::from_millis(200);

/// The client settings of `connection` (brokers, security).
pub fn client_config(connection: &Connection) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in connection.client_config() {
        config.set(key, value);
    }
    config
}

/// A producer for `connection`: idempotent (so retries neither duplicate nor reorder), all
/// in-sync replicas acknowledging.
pub fn producer(connection: &Connection) -> anyhow::Result<FutureProducer> {
    let mut config = client_config(connection);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "30000");
    Ok(config.create()?)
}

/// Publishes `msg` (`reply_to` as the `reply-to` header, plus `extra` headers).
pub async fn publish(
    producer: &FutureProducer,
    msg: &Message,
    extra: &[(&str, &str)],
) -> Result<(), String> {
    let mut headers = OwnedHeaders::new();
    if let Some(reply) = &msg.reply_to {
        headers = headers.insert(Header {
            key: REPLY_TO,
            value: Some(reply.as_bytes()),
        });
    }
    for (key, value) in extra {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&msg.subject)
        .payload(&msg.body[..])
        .headers(headers);
    producer
        .send(record, QUEUE_TIMEOUT)
        .await
        .map(|_| ())
        .map_err(|(err, _)| format!("publish on {} failed: {err}", msg.subject))
}

/// Committable positions (next offset) per partition, not yet committed.
type Positions = Arc<Mutex<HashMap<(String, i32), i64>>>;

fn take(positions: &Positions) -> TopicPartitionList {
    let mut map = positions.lock().unwrap_or_else(|e| e.into_inner());
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), next) in map.drain() {
        // A topic and partition that came from the broker: adding them cannot fail.
        let _ = tpl.add_partition_offset(&topic, partition, Offset::Offset(next));
    }
    tpl
}

/// The group member's context: commits what was handled before partitions are revoked.
struct GroupContext {
    positions: Positions,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(revoked) = rebalance {
            let tpl = take(&self.positions);
            if tpl.count() > 0
                && let Err(err) = consumer.commit(&tpl, CommitMode::Sync)
            {
                tracing::warn!(error = %err, "cannot commit before a rebalance");
            }
            tracing::debug!(partitions = revoked.count(), "partitions revoked");
        }
    }
}

/// Delivers to the linked component; dead letters go to the link's topic.
struct ToComponent {
    component: LinkedClient,
    producer: FutureProducer,
    dead_letter: Option<String>,
}

impl Deliver for ToComponent {
    type Message = Message;

    async fn deliver(&self, msg: &Message) -> Result<(), String> {
        HandlerClient::new(&self.component, ())
            .handle_message(msg.clone())
            .await
            .map_err(|e| e.to_string())
    }

    async fn dead_letter(&self, msg: &Message, why: &str) -> Result<bool, String> {
        let Some(topic) = &self.dead_letter else {
            return Ok(false);
        };
        let dead = Message {
            subject: topic.clone(),
            ..msg.clone()
        };
        let why: String = why.chars().take(1024).collect();
        publish(
            &self.producer,
            &dead,
            &[
                (DEAD_LETTER_REASON, &why),
                (DEAD_LETTER_TOPIC, &msg.subject),
            ],
        )
        .await?;
        Ok(true)
    }
}

/// A running group member; dropping it stops reading and abandons what is in flight (its
/// offsets stay uncommitted, so the group reads it again).
pub struct Subscription {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Joins `settings`' group and starts delivering its topics to `component`.
pub fn subscribe(
    settings: SourceSettings,
    component: LinkedClient,
    stats: Arc<DeliveryStats>,
) -> anyhow::Result<Subscription> {
    let positions = Positions::default();
    // Fail the link now if the config does not make a client (the member is rebuilt later
    // from the same config).
    drop(member(&settings, &positions)?);
    let deliver = ToComponent {
        component,
        producer: producer(&settings.connection)?,
        dead_letter: settings.dead_letter_topic.clone(),
    };
    let delivery = Delivery::start(deliver, settings.delivery.clone(), stats);
    let supervisor = tokio::spawn(supervise(settings, delivery, positions));
    Ok(Subscription {
        tasks: vec![supervisor],
    })
}

/// A consumer group member for `settings`, subscribed to its topics.
fn member(
    settings: &SourceSettings,
    positions: &Positions,
) -> anyhow::Result<StreamConsumer<GroupContext>> {
    let mut config = client_config(&settings.connection);
    config
        .set("group.id", &settings.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", &settings.auto_offset_reset)
        .set(
            "session.timeout.ms",
            settings.session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            settings.heartbeat_interval.as_millis().to_string(),
        )
        // librdkafka's prefetch stays small: the backlog belongs in Kafka.
        .set("queued.max.messages.kbytes", "4096")
        // A subscribed topic created (or recreated) later is found within seconds, not at
        // librdkafka's default five minutes.
        .set("topic.metadata.refresh.interval.ms", "5000");
    let consumer: StreamConsumer<GroupContext> = config.create_with_context(GroupContext {
        positions: Arc::clone(positions),
    })?;
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

/// Why [`read`] returned.
enum Ended {
    /// The delivery engine stopped: the link is going.
    Stopped,
    /// Every broker went away: once one answers again, the member is rebuilt (a fresh join;
    /// librdkafka's own member can stay wedged in a group the brokers forgot).
    BrokersDown,
}

/// Runs group members one after another for as long as the link lives.
async fn supervise(
    settings: SourceSettings,
    delivery: Delivery<ToComponent>,
    positions: Positions,
) {
    loop {
        let consumer = match member(&settings, &positions) {
            Ok(consumer) => Arc::new(consumer),
            Err(err) => {
                tracing::warn!(error = %err, "cannot create the Kafka consumer; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let committer = tokio::spawn(commit_handled(
            Arc::clone(&consumer),
            Arc::clone(&positions),
        ));
        let ended = read(&consumer, &delivery, &positions).await;
        // What was handled goes to the group before this member leaves.
        let tpl = take(&positions);
        if tpl.count() > 0 {
            let _ = consumer.commit(&tpl, CommitMode::Async);
        }
        committer.abort();
        drop(consumer);
        match ended {
            Ended::Stopped => return,
            Ended::BrokersDown => {
                tracing::warn!("every Kafka broker went away; rejoining once one answers");
                wait_for_a_broker(&settings.connection.brokers).await;
            }
        }
    }
}

/// Returns once a TCP connection to one of `brokers` (`host:port,…`) succeeds.
async fn wait_for_a_broker(brokers: &str) {
    loop {
        for broker in brokers.split(',').map(str::trim) {
            let attempt = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::TcpStream::connect(broker),
            );
            if let Ok(Ok(_)) = attempt.await {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Reads records and submits each on its partition's lane; its position becomes committable
/// once its delivery ended.
async fn read(
    consumer: &StreamConsumer<GroupContext>,
    delivery: &Delivery<ToComponent>,
    positions: &Positions,
) -> Ended {
    loop {
        let record = match consumer.recv().await {
            Ok(record) => record,
            Err(err) if err.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) => {
                return Ended::BrokersDown;
            }
            Err(err) => {
                // librdkafka reconnects by itself; a failed poll is only noted.
                tracing::warn!(error = %err, "Kafka consumer error");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let topic = record.topic().to_string();
        let (partition, offset) = (record.partition(), record.offset());
        let reply_to = record.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == REPLY_TO)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        });
        let message = Message {
            subject: topic.clone(),
            body: Bytes::copy_from_slice(record.payload().unwrap_or_default()),
            reply_to,
        };
        drop(record);
        let positions = Arc::clone(positions);
        let key = (topic.clone(), partition);
        let done = move |_outcome: Outcome| {
            // Dropped records are committed past too: their attempts are spent, and
            // reading them again would only fail again (the drop is counted and logged).
            let mut map = positions.lock().unwrap_or_else(|e| e.into_inner());
            let next = map.entry((topic, partition)).or_insert(offset + 1);
            *next = (*next).max(offset + 1);
        };
        if delivery.submit(key, message, done).await.is_err() {
            return Ended::Stopped;
        }
    }
}

/// Commits the handled positions every [`COMMIT_EVERY`].
async fn commit_handled(consumer: Arc<StreamConsumer<GroupContext>>, positions: Positions) {
    let mut tick = tokio::time::interval(COMMIT_EVERY);
    loop {
        tick.tick().await;
        let tpl = take(&positions);
        if tpl.count() == 0 {
            continue;
        }
        if let Err(err) = consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!(error = %err, "cannot commit handled offsets");
        }
    }
}
