//! Watching links: a JetStream KV watch of the watched keys, whose changes the SDK's
//! delivery engine hands to the component's watcher — in order per key, retried, counted in
//! `link ping`.
//!
//! A watched key is exact (stored the way `keys` stores it, so any key can be watched), a
//! prefix (`user*`, `in:*`, `*`: any key starting so, whatever its characters — the bucket
//! is then watched whole and filtered here), or a NATS wildcard (a whole token `*` or `>`:
//! `in.*` one token, `in.>` the rest), which matches keys stored as themselves
//! (`[-/_=.a-zA-Z0-9]`, tokens separated by `.`). The watch is an ordered consumer from
//! the moment the link is put: it recovers from NATS reconnects by itself; if it ends, it
//! is opened again with backoff (changes in between are missed).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{Entry, Operation};
use futures::StreamExt as _;
use tracing::{debug, warn};
use trellis_interfaces::keyvalue::{Change, WatcherClient};
use trellis_sdk::delivery::{Deliver, Delivery, DeliveryStats};
use trellis_sdk::runtime::LinkedClient;
use trellis_sdk::task::AbortOnDrop;

use crate::backend::Bucket;
use crate::keys;
use crate::settings::WatchSettings;

/// Delivers changes to the linked component's watcher.
struct ToWatcher(LinkedClient);

impl Deliver for ToWatcher {
    type Message = Change;

    async fn deliver(&self, change: &Change) -> Result<(), String> {
        WatcherClient::new(&self.0, ())
            .notify(change)
            .await
            .map_err(|e| e.to_string())
    }
}

/// A running watch; dropping it stops the watch and abandons what is in flight.
pub type Watching = AbortOnDrop;

/// How one watched key is matched.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// This key (its stored form).
    Exact(String),
    /// Keys starting with this (the stored forms say nothing of it: matched on keys).
    Prefix(String),
    /// Stored keys matching this NATS filter.
    Subject(String),
}

impl Pattern {
    fn of(pattern: &str) -> Self {
        if pattern.split('.').any(|t| t == "*" || t == ">") && pattern != "*" {
            Pattern::Subject(pattern.to_string())
        } else if let Some(prefix) = pattern.strip_suffix('*') {
            Pattern::Prefix(prefix.to_string())
        } else {
            Pattern::Exact(keys::encode(pattern))
        }
    }

    fn matches(&self, stored: &str, key: &str) -> bool {
        match self {
            Pattern::Exact(k) => k == stored,
            Pattern::Prefix(p) => key.starts_with(p.as_str()),
            Pattern::Subject(f) => subject_match(f, stored),
        }
    }
}

/// The KV filters of `patterns`: the whole bucket when one is a prefix (JetStream filters
/// may not overlap, and a prefix is not a filter), else one per pattern.
fn filters(patterns: &[Pattern]) -> Vec<String> {
    if patterns.iter().any(|p| matches!(p, Pattern::Prefix(_))) {
        return vec![">".to_string()];
    }
    patterns
        .iter()
        .map(|p| match p {
            Pattern::Exact(f) | Pattern::Subject(f) => f.clone(),
            Pattern::Prefix(_) => ">".to_string(),
        })
        .collect()
}

/// Whether NATS subject `filter` (with `*` and `>` tokens) matches `subject`.
fn subject_match(filter: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for token in filter.split('.') {
        match (token, subject.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (t, Some(s)) if t == s => {}
            _ => return false,
        }
    }
    subject.next().is_none()
}

/// Starts watching `bucket` for `component`; fails when the watch cannot be opened (the
/// bucket is missing, NATS refuses).
pub async fn start(
    settings: WatchSettings,
    bucket: Arc<Bucket>,
    component: LinkedClient,
    stats: Arc<DeliveryStats>,
) -> anyhow::Result<Watching> {
    let patterns: Vec<Pattern> = settings
        .watches
        .iter()
        .map(|w| Pattern::of(&w.pattern))
        .collect();
    let filters = filters(&patterns);
    let first = bucket
        .watch(&filters)
        .await
        .map_err(|e| anyhow::anyhow!("cannot watch bucket {:?}: {e}", settings.kv_bucket))?;
    let delivery = Delivery::start(ToWatcher(component), settings.delivery.clone(), stats);
    let reader = Reader {
        settings,
        patterns,
        filters,
        bucket,
    };
    Ok(AbortOnDrop::spawn(reader.run(first, delivery)))
}

struct Reader {
    settings: WatchSettings,
    /// One per watch, in the watches' order.
    patterns: Vec<Pattern>,
    filters: Vec<String>,
    bucket: Arc<Bucket>,
}

impl Reader {
    /// Reads `watch`, and opens it again with backoff if it ends, until the delivery
    /// engine stops (the link went).
    async fn run(self, mut watch: async_nats::jetstream::kv::Watch, delivery: Delivery<ToWatcher>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            while let Some(entry) = watch.next().await {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(e) => {
                        warn!(error = %e, "the KV watch reported an error");
                        continue;
                    }
                };
                backoff = Duration::from_millis(100);
                if let Some(change) = self.change(entry).await {
                    let key = change.key().to_string();
                    if delivery.submit(key, change, |_| {}).await.is_err() {
                        return;
                    }
                }
            }
            warn!("the KV watch ended; opening it again (changes until then are missed)");
            loop {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                match self.bucket.watch(&self.filters).await {
                    Ok(again) => {
                        watch = again;
                        break;
                    }
                    Err(e) => debug!(error = %e, "cannot watch yet"),
                }
            }
        }
    }

    /// The change an entry reports, if the link watches it.
    async fn change(&self, entry: Entry) -> Option<Change> {
        debug!(key = %entry.key, operation = ?entry.operation, "a watched entry");
        let key = keys::decode(&entry.key)?;
        let (set, delete) = self
            .settings
            .watches
            .iter()
            .zip(&self.patterns)
            .filter(|(_, p)| p.matches(&entry.key, &key))
            .fold((false, false), |(s, d), (w, _)| (s || w.set, d || w.delete));
        let bucket = self.settings.bucket.clone();
        match entry.operation {
            Operation::Put if set => {
                match self.bucket.watched_value(&key, entry.value).await {
                    Ok(Some(value)) => Some(Change::Set { bucket, key, value }),
                    Ok(None) => None, // gone by now: its delete follows
                    Err(e) => {
                        warn!(error = %e, "cannot read a large watched value; the change is skipped");
                        None
                    }
                }
            }
            Operation::Delete | Operation::Purge if delete => Some(Change::Delete { bucket, key }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_filters_and_subjects() {
        assert_eq!(Pattern::of("in.>"), Pattern::Subject("in.>".into()));
        assert_eq!(Pattern::of("in.*.x"), Pattern::Subject("in.*.x".into()));
        assert_eq!(Pattern::of("a b"), Pattern::Exact(keys::encode("a b")));
        assert_eq!(Pattern::of("plain.key"), Pattern::Exact("plain.key".into()));
        assert_eq!(Pattern::of("in:*"), Pattern::Prefix("in:".into()));
        assert_eq!(Pattern::of("*"), Pattern::Prefix(String::new()));
        let user = Pattern::of("user*");
        assert!(user.matches(&keys::encode("user:1"), "user:1"));
        assert!(!user.matches("other", "other"));
        assert_eq!(
            filters(&[Pattern::of("a"), Pattern::of("b.>")]),
            vec!["a", "b.>"]
        );
        assert_eq!(
            filters(&[Pattern::of("a"), Pattern::of("user*")]),
            vec![">"]
        );
        for (f, s, expected) in [
            ("in.>", "in.a", true),
            ("in.>", "in.a.b", true),
            ("in.>", "in", false),
            ("in.*", "in.a", true),
            ("in.*", "in.a.b", false),
            ("a.b", "a.b", true),
            ("a.b", "a.c", false),
            ("a.b", "a.b.c", false),
        ] {
            assert_eq!(subject_match(f, s), expected, "{f} vs {s}");
        }
    }
}
