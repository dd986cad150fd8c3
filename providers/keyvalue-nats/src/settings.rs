//! A link's configuration: which NATS server (default: the lattice's own), its credentials,
//! and which bucket names map to which JetStream KV buckets. Parsed once per link put; a bad
//! value fails the link with the reason.

use std::collections::HashMap;
use std::time::Duration;

use trellis_interfaces::keyvalue::watcher::{Watch, WatchConfig};
use trellis_sdk::config::{ConfigValueError, ConfigValues};
use trellis_sdk::connect::NatsOptions;
use trellis_sdk::delivery::DeliveryOptions;

/// Default time one operation may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys per `list-keys` page.
pub const DEFAULT_PAGE: usize = 1000;

/// Why a link's configuration is unusable.
pub type ConfigError = ConfigValueError;

fn bad(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigValueError::new(key, message)
}

/// A link's settings.
#[derive(Debug)]
pub struct LinkSettings {
    /// Another NATS server than the lattice's (with its credentials), if configured.
    pub server: Option<NatsOptions>,
    /// JetStream domain, if any.
    pub js_domain: Option<String>,
    /// Explicit bucket names → KV bucket names; empty: every name is its own KV bucket.
    pub buckets: HashMap<String, String>,
    /// Whether missing KV buckets are created.
    pub auto_create: bool,
    /// Time one operation may take.
    pub timeout: Duration,
    /// Keys per listing page.
    pub page: usize,
}

/// Whether `name` is a valid JetStream KV bucket name.
pub fn valid_bucket_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl LinkSettings {
    /// Parses a link's config (keys are case-insensitive).
    pub fn parse(config: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let values = ConfigValues::new(config);
        let get = |name: &str| values.get(name);
        let server = NatsOptions::from_link_config(&values, "keyvalue-nats")?;
        let auto_create = values.flag("auto_create")?;
        let timeout = values.millis("timeout_ms", DEFAULT_TIMEOUT)?;
        let page = values.number_in("page_size", 1..=100_000, DEFAULT_PAGE)?;
        let mut buckets = HashMap::new();
        for (key, name, target) in values.with_prefix("bucket.") {
            if !valid_bucket_name(target) {
                return Err(bad(
                    key,
                    format!("{target:?} is not a valid JetStream KV bucket name"),
                ));
            }
            buckets.insert(name.to_string(), target.to_string());
        }
        Ok(Self {
            server,
            js_domain: get("js_domain"),
            buckets,
            auto_create,
            timeout,
            page,
        })
    }

    /// The KV bucket `name` maps to, if this link may use it: an explicit mapping, or the
    /// name itself when none is configured (or `auto_create` is on).
    pub fn resolve(&self, name: &str) -> Option<String> {
        if let Some(target) = self.buckets.get(name) {
            return Some(target.clone());
        }
        (self.buckets.is_empty() || self.auto_create)
            .then(|| name.to_string())
            .filter(|n| valid_bucket_name(n))
    }
}

/// A watching link's settings (the provider is its source, a component's watcher its
/// target): the server and buckets as for a target link, which keys of which bucket to
/// watch, and how changes are delivered.
#[derive(Debug)]
pub struct WatchSettings {
    /// The server, credentials and bucket mapping.
    pub server: LinkSettings,
    /// The bucket the component is told of (`watch_bucket`).
    pub bucket: String,
    /// The JetStream KV bucket it maps to.
    pub kv_bucket: String,
    /// The watched keys (exact, or NATS wildcards `*` and `>`) and changes.
    pub watches: Vec<Watch>,
    /// Lanes, attempts, deadline and backoff of the delivery engine.
    pub delivery: DeliveryOptions,
}

impl WatchSettings {
    /// Parses a watching link's config: `watch` (`SET@key,DEL@key`, 1.x's syntax),
    /// `watch_bucket` (default `default`), the server keys of a target link and the
    /// delivery keys.
    pub fn parse(config: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let server = LinkSettings::parse(config)?;
        let values = ConfigValues::new(config);
        let watch = WatchConfig::parse(values.get("watch"), values.get("watch_bucket"))
            .map_err(|(key, message)| bad(key, message))?;
        let kv_bucket = watch
            .locate(|name| server.resolve(name))
            .map_err(|(key, message)| bad(key, message))?;
        let WatchConfig { watches, bucket } = watch;
        let delivery = DeliveryOptions::from_config(&values)?;
        Ok(Self {
            server,
            bucket,
            kv_bucket,
            watches,
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
    fn buckets_resolve() {
        let s = LinkSettings::parse(&cfg(&[])).unwrap();
        assert!(s.server.is_none());
        assert_eq!(s.resolve("orders").as_deref(), Some("orders"));
        assert_eq!(s.resolve("bad name"), None);
        let s =
            LinkSettings::parse(&cfg(&[("bucket.app", "APP_KV"), ("URL", "nats://h:1")])).unwrap();
        assert_eq!(s.resolve("app").as_deref(), Some("APP_KV"));
        assert_eq!(s.resolve("orders"), None);
        assert_eq!(s.server.unwrap().url, "nats://h:1");
    }

    #[test]
    fn bad_config_is_reported_without_secrets() {
        let err = LinkSettings::parse(&cfg(&[("bucket.a", "not valid")])).unwrap_err();
        assert!(err.to_string().contains("bucket.a"), "{err}");
        let err = LinkSettings::parse(&cfg(&[("token", "s3cret")])).unwrap_err();
        assert!(!err.to_string().contains("s3cret"));
        let s = LinkSettings::parse(&cfg(&[
            ("url", "nats://h"),
            ("password", "hunter2"),
            ("user", "u"),
        ]))
        .unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn watching_links_name_a_mapped_bucket() {
        let s = WatchSettings::parse(&cfg(&[("watch", "SET@in.>"), ("bucket.app", "APP")]))
            .unwrap_err()
            .to_string();
        assert!(s.contains("not one this link maps"), "{s}");
        let s = WatchSettings::parse(&cfg(&[
            ("watch", "SET@in.>,DEL@in.>"),
            ("bucket.app", "APP"),
            ("watch_bucket", "app"),
        ]))
        .unwrap();
        assert_eq!((s.bucket.as_str(), s.kv_bucket.as_str()), ("app", "APP"));
        let err = WatchSettings::parse(&cfg(&[])).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
    }
}
