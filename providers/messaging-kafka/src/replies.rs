//! Request/reply on Kafka, which has none of its own: a request is published with the
//! `reply-to` header `REPLY_TOPIC#ID` (`#` is not a topic character, so the two never mix),
//! and its answer is the first record on the link's reply topic whose
//! `trellis-correlation-id` header is `ID`.
//!
//! A component answering through this provider publishes to the `reply_to` it was handed;
//! [`split_reply`] turns such a subject back into the topic and the header. Any other Kafka
//! client answers by producing to the topic with the header.
//!
//! The reply topic is read by a consumer of its own per link — assigned every partition at
//! its end when the first request is made (no consumer group: nothing to join or commit),
//! so it sees only answers produced after it started. Answers nobody waits for (another
//! instance's, or late ones) are skipped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::oneshot;
use trellis_interfaces::messaging::Message;
use trellis_sdk::task::AbortOnDrop;

use crate::backend;
use crate::settings::Connection;

/// The header carrying a request's id on its answer.
pub const CORRELATION: &str = "trellis-correlation-id";

/// How long setting up the reply consumer may take (metadata and watermarks).
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// `TOPIC#ID` → (`TOPIC`, `Some(ID)`); any other subject → (it, `None`).
pub fn split_reply(subject: &str) -> (&str, Option<&str>) {
    match subject.split_once('#') {
        Some((topic, id)) => (topic, Some(id)),
        None => (subject, None),
    }
}

type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<Message>>>>;

/// A link's reply topic, read for the answers its requests wait for.
pub struct Replies {
    topic: String,
    waiting: Waiting,
    _reader: AbortOnDrop,
}

impl Replies {
    /// Starts reading `topic` from its end.
    pub async fn start(connection: &Connection, topic: &str) -> Result<Self, String> {
        let consumer: StreamConsumer = backend::client_config(connection)
            .set(
                "group.id",
                format!("trellis-replies-{}", uuid::Uuid::new_v4()),
            )
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| format!("cannot read reply topic {topic}: {e}"))?;
        let consumer = Arc::new(consumer);
        let assigning = Arc::clone(&consumer);
        let name = topic.to_string();
        tokio::task::spawn_blocking(move || assign_at_end(&assigning, &name))
            .await
            .map_err(|e| format!("cannot read reply topic {topic}: {e}"))??;
        let waiting = Waiting::default();
        let reader = AbortOnDrop::spawn(read(consumer, Arc::clone(&waiting)));
        Ok(Self {
            topic: topic.to_string(),
            waiting,
            _reader: reader,
        })
    }

    /// Publishes `body` on `subject` as a request and waits up to `timeout` for its answer.
    pub async fn request(
        &self,
        producer: &FutureProducer,
        subject: String,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Message, String> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (tx, rx) = oneshot::channel();
        let _waiting = Registered::new(&self.waiting, &id, tx);
        let msg = Message {
            subject: subject.clone(),
            body,
            reply_to: Some(format!("{}#{id}", self.topic)),
        };
        backend::publish(producer, &msg, &[]).await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(format!("request on {subject}: the reply reader stopped")),
            Err(_) => Err(format!(
                "request on {subject}: no answer on {} within {timeout:?}",
                self.topic
            )),
        }
    }
}

/// A request's place in the waiting list, removed when the request ends however it ends.
struct Registered<'a> {
    waiting: &'a Waiting,
    id: String,
}

impl<'a> Registered<'a> {
    fn new(waiting: &'a Waiting, id: &str, tx: oneshot::Sender<Message>) -> Self {
        lock(waiting).insert(id.to_string(), tx);
        Self {
            waiting,
            id: id.to_string(),
        }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        lock(self.waiting).remove(&self.id);
    }
}

fn lock(waiting: &Waiting) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Message>>> {
    waiting.lock().unwrap_or_else(|e| e.into_inner())
}

/// Assigns `consumer` every partition of `topic` at its current end (blocking calls).
fn assign_at_end(consumer: &StreamConsumer, topic: &str) -> Result<(), String> {
    let failed = |e: rdkafka::error::KafkaError| format!("cannot read reply topic {topic}: {e}");
    let metadata = consumer
        .fetch_metadata(Some(topic), SETUP_TIMEOUT)
        .map_err(failed)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(format!(
            "reply topic {topic} does not exist (or has no partitions)"
        ));
    }
    let mut list = TopicPartitionList::new();
    for partition in partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, SETUP_TIMEOUT)
            .map_err(failed)?;
        list.add_partition_offset(topic, partition, Offset::Offset(high))
            .map_err(failed)?;
    }
    consumer.assign(&list).map_err(failed)
}

/// Hands each answer to the request waiting for its id.
async fn read(consumer: Arc<StreamConsumer>, waiting: Waiting) {
    loop {
        let record = match consumer.recv().await {
            Ok(record) => record,
            Err(err) => {
                tracing::warn!(error = %err, "reading the reply topic failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let id = record.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == CORRELATION)
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_string)
        });
        let Some(tx) = id.and_then(|id| lock(&waiting).remove(&id)) else {
            continue;
        };
        let _ = tx.send(Message {
            subject: record.topic().to_string(),
            body: Bytes::copy_from_slice(record.payload().unwrap_or_default()),
            reply_to: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_subjects_split_at_the_hash() {
        assert_eq!(split_reply("answers#abc"), ("answers", Some("abc")));
        assert_eq!(split_reply("answers"), ("answers", None));
        assert_eq!(split_reply("a#b#c"), ("a", Some("b#c")));
    }
}
