//! A source link's subscription: messages read from core NATS or a JetStream consumer and
//! handed to the SDK's delivery engine, which calls the component's `handle-message` — in
//! order per subject, retried, dead-lettered — and, for JetStream, acknowledges each message
//! once its delivery ended. Reading waits whenever the engine's lanes are full, so a slow
//! component leaves the backlog in NATS, not in this process.

use std::sync::Arc;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use bytes::Bytes;
use futures::StreamExt as _;
use trellis_interfaces::messaging::{HandlerClient, Message};
use trellis_sdk::connect::NatsOptions;
use trellis_sdk::delivery::{Deliver, Delivery, DeliveryStats, Outcome};
use trellis_sdk::runtime::LinkedClient;
use trellis_sdk::task::AbortOnDrop;

use crate::settings::{Source, SourceSettings};

/// Header of a dead letter: why its delivery failed.
pub const DEAD_LETTER_REASON: &str = "trellis-dead-letter-reason";
/// Header of a dead letter: the subject it was published on.
pub const DEAD_LETTER_SUBJECT: &str = "trellis-original-subject";

/// The NATS client a link uses: its own server's, or the lattice's.
pub async fn connect(
    server: Option<&NatsOptions>,
    lattice: &async_nats::Client,
) -> anyhow::Result<async_nats::Client> {
    match server {
        Some(opts) => Ok(opts.connect().await?),
        None => Ok(lattice.clone()),
    }
}

/// Delivers to the linked component.
struct ToComponent {
    component: LinkedClient,
    nats: async_nats::Client,
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
        let Some(subject) = &self.dead_letter else {
            return Ok(false);
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(DEAD_LETTER_REASON, header_text(why).as_str());
        headers.insert(DEAD_LETTER_SUBJECT, msg.subject.as_str());
        self.nats
            .publish_with_headers(subject.clone(), headers, msg.body.clone())
            .await
            .map_err(|e| e.to_string())?;
        Ok(true)
    }
}

/// `text` as a header value: one line, bounded.
fn header_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1024)
        .collect()
}

/// A running subscription; dropping it stops reading and abandons what is in flight (a
/// JetStream consumer redelivers it).
pub type Subscription = AbortOnDrop;

/// Starts delivering `settings`' subjects to `component`.
pub async fn subscribe(
    nats: async_nats::Client,
    settings: SourceSettings,
    component: LinkedClient,
    stats: Arc<DeliveryStats>,
) -> anyhow::Result<Subscription> {
    let deliver = ToComponent {
        component,
        nats: nats.clone(),
        dead_letter: settings.dead_letter.clone(),
    };
    let delivery = Delivery::start(deliver, settings.delivery.clone(), stats);
    let reader = match &settings.source {
        Source::Core { queue_group } => {
            let mut subs = Vec::new();
            for subject in &settings.subjects {
                let sub = match queue_group {
                    Some(group) => nats.queue_subscribe(subject.clone(), group.clone()).await?,
                    None => nats.subscribe(subject.clone()).await?,
                };
                subs.push(sub);
            }
            AbortOnDrop::spawn(read_core(futures::stream::select_all(subs), delivery))
        }
        Source::JetStream {
            stream,
            consumer,
            ack_wait,
        } => {
            let js = jetstream::new(nats);
            let stream = js
                .get_stream(stream)
                .await
                .map_err(|e| anyhow::anyhow!("JetStream stream {stream:?}: {e}"))?;
            let config = pull::Config {
                durable_name: Some(consumer.clone()),
                filter_subjects: settings.subjects.clone(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: *ack_wait,
                max_ack_pending: i64::try_from(
                    settings.delivery.lanes * (settings.delivery.lane_queue + 1),
                )
                .unwrap_or(i64::MAX),
                ..Default::default()
            };
            let consumer = stream
                .get_or_create_consumer(consumer, config)
                .await
                .map_err(|e| anyhow::anyhow!("JetStream consumer {consumer:?}: {e}"))?;
            let messages = consumer
                .messages()
                .await
                .map_err(|e| anyhow::anyhow!("JetStream consumer: {e}"))?;
            AbortOnDrop::spawn(read_jetstream(messages, delivery))
        }
    };
    Ok(reader)
}

/// Core NATS: each message submitted on its subject's lane; nothing to acknowledge.
async fn read_core(
    mut messages: futures::stream::SelectAll<async_nats::Subscriber>,
    delivery: Delivery<ToComponent>,
) {
    while let Some(msg) = messages.next().await {
        let message = Message {
            subject: msg.subject.to_string(),
            body: msg.payload,
            reply_to: msg.reply.map(|r| r.to_string()),
        };
        if delivery
            .submit(message.subject.clone(), message, |_| {})
            .await
            .is_err()
        {
            break;
        }
    }
    tracing::debug!("core NATS subscription ended");
}

/// JetStream: each message acknowledged once its delivery ended — delivered or
/// dead-lettered: acknowledged; dropped: terminated (not redelivered; the drop is counted and
/// logged).
async fn read_jetstream(mut messages: pull::Stream, delivery: Delivery<ToComponent>) {
    while let Some(next) = messages.next().await {
        let msg = match next {
            Ok(msg) => msg,
            Err(err) => {
                // The consumer's stream reconnects by itself; a failed pull is only noted.
                tracing::warn!(error = %err, "JetStream pull failed");
                continue;
            }
        };
        let message = Message {
            subject: msg.subject.to_string(),
            body: Bytes::copy_from_slice(&msg.payload),
            reply_to: None,
        };
        let done = move |outcome: Outcome| {
            tokio::spawn(async move {
                let kind = match outcome {
                    Outcome::Delivered | Outcome::DeadLettered => AckKind::Ack,
                    Outcome::Dropped => AckKind::Term,
                };
                if let Err(err) = msg.ack_with(kind).await {
                    tracing::warn!(error = %err, "cannot acknowledge a JetStream message");
                }
            });
        };
        if delivery
            .submit(message.subject.clone(), message, done)
            .await
            .is_err()
        {
            break;
        }
    }
    tracing::debug!("JetStream consumer stream ended");
}
