//! A link's configuration: which Redis server, and which buckets map to which database and
//! key prefix. Parsed once per link put; a bad value fails the link with the reason.

use std::collections::HashMap;
use std::time::Duration;

use trellis_interfaces::keyvalue::watcher::{Watch, WatchConfig};
use trellis_sdk::config::{ConfigValueError, ConfigValues};
use trellis_sdk::delivery::DeliveryOptions;
use trellis_sdk::secret::Secret;

/// Default server when a link names none.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// Default time one operation may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `COUNT` hint of one `SCAN` page.
pub const DEFAULT_PAGE: usize = 1000;

/// Why a link's configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value does not parse.
    #[error(transparent)]
    BadValue(#[from] ConfigValueError),
    /// Two buckets would share keys.
    #[error("buckets {a:?} and {b:?} overlap in database {db} (prefixes {pa:?} and {pb:?})")]
    Overlap {
        /// One bucket.
        a: String,
        /// The other.
        b: String,
        /// Their database.
        db: i64,
        /// Its prefix.
        pa: String,
        /// The other's.
        pb: String,
    },
}

/// Where one bucket's keys live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketTarget {
    /// Redis database number.
    pub db: i64,
    /// Prefix of every key of the bucket (may be empty: the bucket owns the database).
    pub prefix: String,
}

/// A link's Redis settings.
#[derive(Debug)]
pub struct LinkSettings {
    /// Server URL without database (may hold a password: a secret).
    pub url: Secret,
    /// Password from config, if not in the URL.
    pub password: Option<Secret>,
    /// PEM roots to trust for `rediss://` instead of the system's.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// The URL's database (0 if none).
    pub url_db: i64,
    /// Configured buckets.
    pub buckets: HashMap<String, BucketTarget>,
    /// Whether unknown bucket names are accepted (as `<name>:` in the URL's database).
    pub auto_create: bool,
    /// Time one operation may take.
    pub timeout: Duration,
    /// `SCAN` page size hint.
    pub page: usize,
}

fn bad(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigValueError::new(key, message).into()
}

/// The prefix an auto-created or unprefixed-by-config bucket gets.
pub fn default_prefix(bucket: &str) -> String {
    format!("{bucket}:")
}

impl LinkSettings {
    /// Parses a link's config (keys are case-insensitive: 1.x used `URL`).
    pub fn parse(config: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let values = ConfigValues::new(config);
        let raw_url = values.get("url").unwrap_or_else(|| DEFAULT_URL.to_string());
        let (url, url_db) = split_db(&raw_url)?;
        let password = values.get("password").map(Secret::new);
        let tls_ca_file = values.get("tls_ca_file").map(std::path::PathBuf::from);
        if tls_ca_file.is_some() && !raw_url.starts_with("rediss://") {
            return Err(bad("tls_ca_file", "needs a rediss:// (TLS) url"));
        }
        let auto_create = values.flag("auto_create")?;
        let timeout = values.millis("timeout_ms", DEFAULT_TIMEOUT)?;
        let page = values.number_in("scan_count", 1..=100_000, DEFAULT_PAGE)?;

        let mut buckets = HashMap::new();
        for (key, name, value) in values.with_prefix("bucket.") {
            buckets.insert(name.to_string(), parse_target(key, name, value, url_db)?);
        }
        if buckets.is_empty() {
            buckets.insert(
                "default".to_string(),
                BucketTarget {
                    db: url_db,
                    prefix: default_prefix("default"),
                },
            );
        }
        check_overlaps(&buckets)?;
        Ok(Self {
            url: Secret::new(url),
            password,
            tls_ca_file,
            url_db,
            buckets,
            auto_create,
            timeout,
            page,
        })
    }

    /// Where `bucket` lives, if this link may use it.
    pub fn resolve(&self, bucket: &str) -> Option<BucketTarget> {
        if let Some(target) = self.buckets.get(bucket) {
            return Some(target.clone());
        }
        // Auto-created names may not contain ':' so that no prefix is another's prefix.
        if self.auto_create && !bucket.is_empty() && !bucket.contains(':') {
            let target = BucketTarget {
                db: self.url_db,
                prefix: default_prefix(bucket),
            };
            let clash = self.buckets.values().any(|t| {
                t.db == target.db
                    && (t.prefix.starts_with(&target.prefix)
                        || target.prefix.starts_with(&t.prefix))
            });
            return (!clash).then_some(target);
        }
        None
    }
}

/// A watching link's settings (the provider is its source, a component's watcher its
/// target): the server and buckets as for a target link, which keys of which bucket to
/// watch, and how changes are delivered.
#[derive(Debug)]
pub struct WatchSettings {
    /// The server, credentials and bucket mapping.
    pub server: LinkSettings,
    /// The bucket the watched keys belong to (`watch_bucket`), as the component is told.
    pub bucket: String,
    /// Where that bucket's keys live.
    pub target: BucketTarget,
    /// The watched keys (Redis glob patterns, within the bucket) and changes.
    pub watches: Vec<Watch>,
    /// Lanes, attempts, deadline and backoff of the delivery engine.
    pub delivery: DeliveryOptions,
}

impl WatchSettings {
    /// Parses a watching link's config: `watch` (`SET@key,DEL@key`, 1.x's syntax; keys may
    /// be Redis glob patterns), `watch_bucket` (default `default`), the server keys of a
    /// target link and the delivery keys.
    pub fn parse(config: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let server = LinkSettings::parse(config)?;
        let values = ConfigValues::new(config);
        let watch = WatchConfig::parse(values.get("watch"), values.get("watch_bucket"))
            .map_err(|(key, message)| bad(key, message))?;
        let target = watch
            .locate(|name| server.resolve(name))
            .map_err(|(key, message)| bad(key, message))?;
        let WatchConfig { watches, bucket } = watch;
        let delivery = DeliveryOptions::from_config(&values)?;
        Ok(Self {
            server,
            bucket,
            target,
            watches,
            delivery,
        })
    }
}

/// `redis://host:port/3` → (`redis://host:port`, 3).
fn split_db(url: &str) -> Result<(String, i64), ConfigError> {
    let scheme_end = url
        .find("://")
        .ok_or_else(|| bad("url", "not a redis:// URL"))?;
    let scheme = &url[..scheme_end];
    if scheme != "redis" && scheme != "rediss" {
        return Err(bad("url", "not a redis:// or rediss:// URL"));
    }
    let rest = &url[scheme_end + 3..];
    match rest.split_once('/') {
        None => Ok((url.to_string(), 0)),
        Some((authority, "")) => Ok((format!("{scheme}://{authority}"), 0)),
        Some((authority, db)) => {
            let db = db
                .parse::<i64>()
                .ok()
                .filter(|d| *d >= 0)
                .ok_or_else(|| bad("url", "the path must be a database number"))?;
            Ok((format!("{scheme}://{authority}"), db))
        }
    }
}

/// `bucket.NAME` = `[DB][/PREFIX]`: `3` → database 3, prefix `NAME:`; `3/` → database 3, no
/// prefix (the bucket owns it); `/app:` → the URL's database, prefix `app:`; empty → the URL's
/// database, prefix `NAME:`.
fn parse_target(
    key: &str,
    name: &str,
    value: &str,
    url_db: i64,
) -> Result<BucketTarget, ConfigError> {
    if name.is_empty() {
        return Err(bad(key, "empty bucket name"));
    }
    let (db, prefix) = match value.split_once('/') {
        None => (value, None),
        Some((db, prefix)) => (db, Some(prefix)),
    };
    let db = if db.is_empty() {
        url_db
    } else {
        db.parse::<i64>()
            .ok()
            .filter(|d| *d >= 0)
            .ok_or_else(|| bad(key, format!("{db:?} is not a database number")))?
    };
    Ok(BucketTarget {
        db,
        prefix: prefix.map_or_else(|| default_prefix(name), str::to_string),
    })
}

fn check_overlaps(buckets: &HashMap<String, BucketTarget>) -> Result<(), ConfigError> {
    let mut all: Vec<_> = buckets.iter().collect();
    all.sort_by(|a, b| a.0.cmp(b.0));
    for (i, (a, ta)) in all.iter().enumerate() {
        for (b, tb) in &all[i + 1..] {
            if ta.db == tb.db
                && (ta.prefix.starts_with(&tb.prefix) || tb.prefix.starts_with(&ta.prefix))
            {
                return Err(ConfigError::Overlap {
                    a: a.to_string(),
                    b: b.to_string(),
                    db: ta.db,
                    pa: ta.prefix.clone(),
                    pb: tb.prefix.clone(),
                });
            }
        }
    }
    Ok(())
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
    fn tls_urls_keep_their_scheme() {
        let (url, db) = split_db("rediss://127.0.0.1:6380/1").unwrap();
        assert_eq!((url.as_str(), db), ("rediss://127.0.0.1:6380", 1));
        let err = split_db("http://127.0.0.1:6379").unwrap_err().to_string();
        assert!(err.contains("not a redis:// or rediss:// URL"), "{err}");
        let s = LinkSettings::parse(&cfg(&[("url", "rediss://h:1"), ("tls_ca_file", "/ca.pem")]))
            .unwrap();
        assert_eq!(
            s.tls_ca_file.as_deref(),
            Some(std::path::Path::new("/ca.pem"))
        );
        let err = LinkSettings::parse(&cfg(&[("url", "redis://h:1"), ("tls_ca_file", "/ca.pem")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("rediss://"), "{err}");
    }

    #[test]
    fn default_bucket_and_targets() {
        let s = LinkSettings::parse(&cfg(&[("URL", "redis://h:1/2")])).unwrap();
        assert_eq!(s.url.expose(), "redis://h:1");
        assert_eq!(
            s.resolve("default"),
            Some(BucketTarget {
                db: 2,
                prefix: "default:".into()
            })
        );
        assert_eq!(s.resolve("other"), None);

        let s = LinkSettings::parse(&cfg(&[
            ("bucket.users", "3"),
            ("bucket.cache", "/c:"),
            ("bucket.all", "5/"),
            ("auto_create", "true"),
        ]))
        .unwrap();
        assert_eq!(
            s.resolve("users"),
            Some(BucketTarget {
                db: 3,
                prefix: "users:".into()
            })
        );
        assert_eq!(
            s.resolve("cache"),
            Some(BucketTarget {
                db: 0,
                prefix: "c:".into()
            })
        );
        assert_eq!(
            s.resolve("all"),
            Some(BucketTarget {
                db: 5,
                prefix: "".into()
            })
        );
        assert_eq!(
            s.resolve("new"),
            Some(BucketTarget {
                db: 0,
                prefix: "new:".into()
            })
        );
        assert_eq!(s.resolve("a:b"), None, "':' would make prefixes ambiguous");
        assert_eq!(s.resolve(""), None);
    }

    #[test]
    fn bad_config_is_reported() {
        for (pairs, needle) in [
            (vec![("url", "http://x")], "redis://"),
            (vec![("url", "redis://h/x")], "database"),
            (vec![("bucket.a", "x")], "database number"),
            (vec![("bucket.a", "1/"), ("bucket.b", "1/b:")], "overlap"),
            (vec![("bucket.a", "/p:"), ("bucket.b", "/p:q")], "overlap"),
            (vec![("timeout_ms", "0")], "timeout_ms"),
            (vec![("auto_create", "yes")], "auto_create"),
        ] {
            let err = LinkSettings::parse(&cfg(&pairs)).unwrap_err().to_string();
            assert!(err.contains(needle), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn watching_links_name_keys_of_a_mapped_bucket() {
        let s = WatchSettings::parse(&cfg(&[
            ("watch", "SET@in:*,DEL@in:*"),
            ("bucket.0", "0/"),
            ("watch_bucket", "0"),
        ]))
        .unwrap();
        assert_eq!(s.bucket, "0");
        assert_eq!(s.target.prefix, "");
        assert!(s.watches[0].set && s.watches[0].delete);
        let s = WatchSettings::parse(&cfg(&[("watch", "SET@k")])).unwrap();
        assert_eq!(
            (s.bucket.as_str(), s.target.prefix.as_str()),
            ("default", "default:")
        );
        for (pairs, needle) in [
            (vec![], "\"watch\": missing"),
            (vec![("watch", "GET@k")], "SET or DEL"),
            (
                vec![("watch", "SET@k"), ("watch_bucket", "nope")],
                "not one this link maps",
            ),
            (vec![("watch", "SET@k"), ("lanes", "0")], "lanes"),
        ] {
            let err = WatchSettings::parse(&cfg(&pairs)).unwrap_err().to_string();
            assert!(err.contains(needle), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let s = LinkSettings::parse(&cfg(&[("url", "redis://:hunter2@h:1"), ("password", "pw")]))
            .unwrap();
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("\"pw\""),
            "{shown}"
        );
    }
}
