//! A link's configuration. Both sides: which brokers, and how to reach them (TLS, SASL).
//! Target side (a component publishes through the provider): nothing more. Source side (the
//! provider delivers to a component): which topics, which consumer group, the group's
//! timing, and how delivery retries. Parsed once per link put; a bad value fails the link
//! with the reason; the SASL password is a secret, never in errors or `Debug`.

use std::collections::HashMap;
use std::time::Duration;

use trellis_sdk::config::{ConfigValueError, ConfigValues};
use trellis_sdk::delivery::DeliveryOptions;
use trellis_sdk::secret::Secret;

/// Why a link's configuration is unusable.
pub type ConfigError = ConfigValueError;

fn bad(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigValueError::new(key, message)
}

/// How to reach the brokers: what every rdkafka client of a link is configured with.
#[derive(Debug, Clone)]
pub struct Connection {
    /// `host:port` list (`brokers`; `hosts`, as wasmCloud 1.x named it).
    pub brokers: String,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: String,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`, with SASL.
    pub sasl_mechanism: Option<String>,
    /// The SASL user.
    pub sasl_username: Option<String>,
    /// The SASL password.
    pub sasl_password: Option<Secret>,
    /// PEM roots to trust, with TLS.
    pub tls_ca_file: Option<String>,
}

impl Connection {
    fn parse(values: &ConfigValues<'_>) -> Result<Self, ConfigError> {
        let brokers = values
            .get("brokers")
            .or_else(|| values.get("hosts"))
            .ok_or_else(|| {
                bad(
                    "brokers",
                    "required: the brokers' host:port, comma separated",
                )
            })?;
        let security_protocol = values
            .get("security_protocol")
            .unwrap_or_else(|| "plaintext".into())
            .to_ascii_lowercase();
        if !["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"].contains(&security_protocol.as_str())
        {
            return Err(bad(
                "security_protocol",
                "one of plaintext, ssl, sasl_plaintext, sasl_ssl",
            ));
        }
        let sasl = security_protocol.starts_with("sasl");
        let sasl_mechanism = values.get("sasl_mechanism").map(|m| m.to_ascii_uppercase());
        if let Some(m) = &sasl_mechanism
            && !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&m.as_str())
        {
            return Err(bad(
                "sasl_mechanism",
                "one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
            ));
        }
        let sasl_username = values.get("sasl_username");
        let sasl_password = values.get("sasl_password").map(Secret::from);
        if sasl && (sasl_username.is_none() || sasl_password.is_none()) {
            return Err(bad(
                "sasl_username",
                "SASL needs sasl_username and sasl_password",
            ));
        }
        Ok(Self {
            brokers,
            security_protocol,
            sasl_mechanism: sasl.then(|| sasl_mechanism.unwrap_or_else(|| "PLAIN".into())),
            sasl_username,
            sasl_password,
            tls_ca_file: values.get("tls_ca_file"),
        })
    }

    /// The rdkafka settings for these (secrets included: for the client only).
    pub fn client_config(&self) -> Vec<(&'static str, String)> {
        let mut c = vec![
            ("bootstrap.servers", self.brokers.clone()),
            ("security.protocol", self.security_protocol.clone()),
        ];
        if let Some(m) = &self.sasl_mechanism {
            c.push(("sasl.mechanism", m.clone()));
        }
        if let Some(u) = &self.sasl_username {
            c.push(("sasl.username", u.clone()));
        }
        if let Some(p) = &self.sasl_password {
            c.push(("sasl.password", p.expose().to_string()));
        }
        if let Some(ca) = &self.tls_ca_file {
            c.push(("ssl.ca.location", ca.clone()));
        }
        c
    }
}

/// A target link's settings.
#[derive(Debug)]
pub struct TargetSettings {
    /// The brokers.
    pub connection: Connection,
    /// Where the answers to this link's requests are read from (`reply_topic`); without
    /// one, requests are refused saying so.
    pub reply_topic: Option<String>,
}

impl TargetSettings {
    /// Parses a target link's config.
    pub fn parse(config: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let values = ConfigValues::new(config);
        let reply_topic = values.get("reply_topic");
        if let Some(topic) = &reply_topic
            && !valid_topic(topic)
        {
            return Err(bad(
                "reply_topic",
                format!("{topic:?} is not a valid Kafka topic"),
            ));
        }
        Ok(Self {
            connection: Connection::parse(&values)?,
            reply_topic,
        })
    }
}

/// A source link's settings.
#[derive(Debug)]
pub struct SourceSettings {
    /// The brokers.
    pub connection: Connection,
    /// The topics to deliver (`topics`; `topic`, as 1.x named it).
    pub topics: Vec<String>,
    /// The consumer group (instances sharing it split the partitions).
    pub group_id: String,
    /// Where a group without a committed offset starts: `earliest` or `latest`.
    pub auto_offset_reset: String,
    /// The group's session timeout.
    pub session_timeout: Duration,
    /// The group's heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Where records whose attempts are spent go, if anywhere.
    pub dead_letter_topic: Option<String>,
    /// Lanes, attempts, deadline and backoff of the delivery engine.
    pub delivery: DeliveryOptions,
}

/// Whether `name` may be a Kafka topic.
pub fn valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl SourceSettings {
    /// Parses a source link's config; `default_group` unless `group_id` names one.
    pub fn parse(
        config: &HashMap<String, String>,
        default_group: &str,
    ) -> Result<Self, ConfigError> {
        let values = ConfigValues::new(config);
        let mut topics = values.list("topics")?;
        if topics.is_empty() {
            topics = values.list("topic")?;
        }
        if topics.is_empty() {
            return Err(bad(
                "topics",
                "required: the topics to deliver (comma separated)",
            ));
        }
        if let Some(t) = topics.iter().find(|t| !valid_topic(t)) {
            return Err(bad("topics", format!("{t:?} is not a valid Kafka topic")));
        }
        let auto_offset_reset = values
            .get("auto_offset_reset")
            .unwrap_or_else(|| "earliest".into())
            .to_ascii_lowercase();
        if !["earliest", "latest"].contains(&auto_offset_reset.as_str()) {
            return Err(bad("auto_offset_reset", "earliest or latest"));
        }
        let dead_letter_topic = values.get("dead_letter_topic");
        if let Some(t) = dead_letter_topic.as_deref().filter(|t| !valid_topic(t)) {
            return Err(bad(
                "dead_letter_topic",
                format!("{t:?} is not a valid Kafka topic"),
            ));
        }
        Ok(Self {
            connection: Connection::parse(&values)?,
            topics,
            group_id: values
                .get("group_id")
                .unwrap_or_else(|| default_group.to_string()),
            auto_offset_reset,
            session_timeout: values.millis("session_timeout_ms", Duration::from_secs(10))?,
            heartbeat_interval: values.millis("heartbeat_interval_ms", Duration::from_secs(3))?,
            dead_letter_topic,
            delivery: DeliveryOptions::from_config(&values)?,
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
    fn reply_topics_must_be_topics() {
        let ok = TargetSettings::parse(&cfg(&[("brokers", "b:9092"), ("reply_topic", "answers")]))
            .unwrap();
        assert_eq!(ok.reply_topic.as_deref(), Some("answers"));
        for bad in ["has space", "a#b", "x/y"] {
            let err = TargetSettings::parse(&cfg(&[("brokers", "b:9092"), ("reply_topic", bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("reply_topic"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn sasl_scram_maps_to_rdkafka_settings_and_keeps_the_password_out_of_debug() {
        let s = SourceSettings::parse(
            &cfg(&[
                ("hosts", "k1:9092,k2:9092"),
                ("topic", "orders"),
                ("security_protocol", "SASL_SSL"),
                ("sasl_mechanism", "scram-sha-512"),
                ("sasl_username", "app"),
                ("sasl_password", "hunter2"),
                ("tls_ca_file", "/etc/ca.pem"),
            ]),
            "grp",
        )
        .unwrap();
        assert_eq!(s.topics, ["orders"]);
        assert_eq!(s.group_id, "grp");
        let c: HashMap<_, _> = s.connection.client_config().into_iter().collect();
        assert_eq!(c["bootstrap.servers"], "k1:9092,k2:9092");
        assert_eq!(c["security.protocol"], "sasl_ssl");
        assert_eq!(c["sasl.mechanism"], "SCRAM-SHA-512");
        assert_eq!(c["sasl.password"], "hunter2");
        assert_eq!(c["ssl.ca.location"], "/etc/ca.pem");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn bad_configs_say_which_key() {
        for (pairs, key) in [
            (vec![("topics", "a")], "brokers"),
            (vec![("brokers", "k:1")], "topics"),
            (vec![("brokers", "k:1"), ("topics", "a b")], "topics"),
            (
                vec![
                    ("brokers", "k:1"),
                    ("topics", "a"),
                    ("security_protocol", "tls"),
                ],
                "security_protocol",
            ),
            (
                vec![
                    ("brokers", "k:1"),
                    ("topics", "a"),
                    ("security_protocol", "sasl_plaintext"),
                    ("sasl_password", "s3cret"),
                ],
                "sasl_username",
            ),
            (
                vec![
                    ("brokers", "k:1"),
                    ("topics", "a"),
                    ("auto_offset_reset", "middle"),
                ],
                "auto_offset_reset",
            ),
        ] {
            let err = SourceSettings::parse(&cfg(&pairs), "g")
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{pairs:?}: {err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
    }
}
