//! A link's configuration. Target side (a component publishes and requests through the
//! provider): which NATS server. Source side (the provider delivers to a component): which
//! server, which subjects, core NATS or a JetStream consumer, and how delivery retries.
//! Parsed once per link put; a bad value fails the link with the reason, secrets never
//! appear in errors or `Debug`.

use std::collections::HashMap;
use std::time::Duration;

use trellis_sdk::config::{ConfigValueError, ConfigValues};
use trellis_sdk::connect::NatsOptions;
use trellis_sdk::delivery::DeliveryOptions;
use trellis_sdk::subjects::validate_subject;

/// Why a link's configuration is unusable.
pub type ConfigError = ConfigValueError;

fn bad(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigValueError::new(key, message)
}

/// The NATS server a link uses: its own (`url` and credentials; `cluster_uris`, as 1.x
/// called it, is read as `url`) or, with neither, the lattice's connection.
fn server(config: &HashMap<String, String>) -> Result<Option<NatsOptions>, ConfigError> {
    let mut config = config.clone();
    if let Some(uris) = ConfigValues::new(&config).get("cluster_uris")
        && ConfigValues::new(&config).get("url").is_none()
    {
        config.insert("url".into(), uris);
    }
    NatsOptions::from_link_config(&ConfigValues::new(&config), "messaging-nats")
}

/// A target link's settings: where its publishes and requests go.
#[derive(Debug)]
pub struct TargetSettings {
    /// Another NATS server than the lattice's, if configured.
    pub server: Option<NatsOptions>,
}

impl TargetSettings {
    /// Parses a target link's config.
    pub fn parse(config: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Ok(Self {
            server: server(config)?,
        })
    }
}

/// Where a source link's messages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Core NATS subscriptions, in a queue group if one is named: at most once from the
    /// server, retried by the provider while it runs.
    Core {
        /// Queue group shared by the provider instances that split the messages.
        queue_group: Option<String>,
    },
    /// A durable JetStream pull consumer on `stream`: a message is acknowledged only once
    /// its delivery ended, so one the provider never finished comes again.
    JetStream {
        /// The stream.
        stream: String,
        /// The durable consumer's name (instances sharing it split the messages).
        consumer: String,
        /// How long JetStream waits for an acknowledgement before it redelivers.
        ack_wait: Duration,
    },
}

/// A source link's settings.
#[derive(Debug)]
pub struct SourceSettings {
    /// Another NATS server than the lattice's, if configured.
    pub server: Option<NatsOptions>,
    /// The subjects (wildcards allowed).
    pub subjects: Vec<String>,
    /// Core NATS or JetStream.
    pub source: Source,
    /// Where messages whose attempts are spent go, if anywhere.
    pub dead_letter: Option<String>,
    /// Lanes, attempts, deadline and backoff of the delivery engine.
    pub delivery: DeliveryOptions,
}

/// Whether `name` may name a JetStream stream or consumer.
fn valid_js_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl SourceSettings {
    /// Parses a source link's config; `default_consumer` names the durable consumer unless
    /// `consumer` does.
    pub fn parse(
        config: &HashMap<String, String>,
        default_consumer: &str,
    ) -> Result<Self, ConfigError> {
        let values = ConfigValues::new(config);
        let subjects = values.list("subscriptions")?;
        if subjects.is_empty() {
            return Err(bad(
                "subscriptions",
                "required: the subjects to deliver (comma separated)",
            ));
        }
        for s in &subjects {
            validate_subject("subscription", s, true)
                .map_err(|e| bad("subscriptions", e.to_string()))?;
        }
        let delivery = DeliveryOptions::from_config(&values)?;
        let source = match values.get("stream") {
            Some(stream) => {
                let consumer = values
                    .get("consumer")
                    .unwrap_or_else(|| default_consumer.to_string());
                for (key, name) in [("stream", &stream), ("consumer", &consumer)] {
                    if !valid_js_name(name) {
                        return Err(bad(key, format!("{name:?} is not a valid JetStream name")));
                    }
                }
                // Long enough for every attempt and backoff of one message, so JetStream
                // does not redeliver a message the provider is still working on.
                let worst = delivery.deadline * delivery.attempts
                    + delivery.max_backoff * delivery.attempts;
                let ack_wait = values.millis("ack_wait_ms", worst.max(Duration::from_secs(30)))?;
                Source::JetStream {
                    stream,
                    consumer,
                    ack_wait,
                }
            }
            None => Source::Core {
                queue_group: values.get("queue_group"),
            },
        };
        Ok(Self {
            server: server(config)?,
            subjects,
            source,
            dead_letter: values.get("dead_letter_subject"),
            delivery,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn core_and_jetstream_sources_parse() {
        let s = SourceSettings::parse(
            &cfg(&[("subscriptions", "orders.*, audit"), ("queue_group", "q")]),
            "dflt",
        )
        .unwrap();
        assert_eq!(s.subjects, ["orders.*", "audit"]);
        assert_eq!(
            s.source,
            Source::Core {
                queue_group: Some("q".into())
            }
        );
        assert!(s.server.is_none());
        let s = SourceSettings::parse(
            &cfg(&[
                ("subscriptions", "orders.>"),
                ("stream", "ORDERS"),
                ("max_attempts", "3"),
                ("handler_timeout_ms", "1000"),
                ("CLUSTER_URIS", "nats://h:4222"),
            ]),
            "trellis-comp",
        )
        .unwrap();
        match s.source {
            Source::JetStream {
                consumer, ack_wait, ..
            } => {
                assert_eq!(consumer, "trellis-comp");
                assert!(ack_wait >= Duration::from_secs(30));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.delivery.attempts, 3);
        assert_eq!(s.server.unwrap().url, "nats://h:4222");
    }

    #[test]
    fn bad_configs_say_which_key() {
        for (pairs, key) in [
            (vec![], "subscriptions"),
            (vec![("subscriptions", "a b")], "subscriptions"),
            (
                vec![("subscriptions", "a"), ("stream", "no.dots")],
                "stream",
            ),
            (
                vec![("subscriptions", "a"), ("max_attempts", "0")],
                "max_attempts",
            ),
            (vec![("subscriptions", "a"), ("token", "s3cret")], "url"),
        ] {
            let err = SourceSettings::parse(&cfg(&pairs), "c")
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{pairs:?}: {err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
    }
}
