//! Watching links: Redis keyspace notifications of the watched keys become changes, which
//! the SDK's delivery engine hands to the component's watcher — in order per key, retried,
//! counted in `link ping`.
//!
//! Redis publishes a notification per command on `__keyspace@DB__:KEY` when the server's
//! `notify-keyspace-events` asks for it (`K` plus `$` for sets, `g` for deletes; `A` covers
//! both). A link checks that when it is put and fails with the command that fixes it. The
//! notification carries no value: a set is read back (`GET`) when its notification arrives,
//! and skipped when the key is gone by then (its delete follows). Notifications are
//! fire-and-forget: while the subscription is down (Redis restarting) changes are missed; it
//! resubscribes with backoff.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use redis::aio::ConnectionManager;
use tracing::{debug, warn};
use trellis_interfaces::keyvalue::{Change, WatcherClient, watcher::Watch};
use trellis_sdk::delivery::{Deliver, Delivery, DeliveryStats};
use trellis_sdk::runtime::LinkedClient;
use trellis_sdk::task::AbortOnDrop;

use crate::backend::{self, Pool};
use crate::handlers::glob_escape;
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

/// What a notification means for a key, by its event name (Redis's `notify.c`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Set,
    Delete,
}

fn kind(event: &str) -> Option<Kind> {
    match event {
        "set" | "setrange" | "incrby" | "incrbyfloat" | "append" | "rename_to" | "copy_to"
        | "move_to" | "restore" => Some(Kind::Set),
        "del" | "expired" | "evicted" | "rename_from" | "move_from" => Some(Kind::Delete),
        _ => None,
    }
}

/// Checks that Redis publishes the notifications `watches` need; `Err` says how to fix it.
/// A server that refuses `CONFIG GET` (managed services often do) cannot be checked: noted.
async fn check_notifications(
    conn: &mut ConnectionManager,
    watches: &[Watch],
) -> anyhow::Result<()> {
    let answer: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(conn)
        .await;
    let flags = match answer {
        Ok(pair) => pair.get(1).cloned().unwrap_or_default(),
        Err(e) => {
            warn!(error = %e, "cannot read notify-keyspace-events; watching as if it were set");
            return Ok(());
        }
    };
    let all = flags.contains('A');
    let needs_set = watches.iter().any(|w| w.set);
    let needs_delete = watches.iter().any(|w| w.delete);
    let ok = flags.contains('K')
        && (!needs_set || all || flags.contains('$'))
        && (!needs_delete || all || flags.contains('g'));
    if !ok {
        anyhow::bail!(
            "Redis does not publish the keyspace notifications this watch needs \
             (notify-keyspace-events is {flags:?}); run: CONFIG SET notify-keyspace-events K$g"
        );
    }
    Ok(())
}

/// Starts watching for `component`. Fails when Redis answers but will not notify; when it
/// does not answer yet, the watch starts anyway and subscribes once it does.
pub async fn start(
    settings: WatchSettings,
    pool: &Pool,
    component: LinkedClient,
    stats: Arc<DeliveryStats>,
) -> anyhow::Result<Watching> {
    let db = settings.target.db;
    let client = backend::client(&settings.server, db)?;
    let mut conn = pool.get(&settings.server, db)?;
    match tokio::time::timeout(
        settings.server.timeout,
        check_notifications(&mut conn, &settings.watches),
    )
    .await
    {
        Ok(checked) => checked?,
        Err(_) => warn!("Redis did not answer; the watch subscribes once it does"),
    }
    let delivery = Delivery::start(ToWatcher(component), settings.delivery.clone(), stats);
    Ok(AbortOnDrop::spawn(
        Reader::new(settings, conn).run(client, delivery),
    ))
}

/// The subscription's reader: notifications in, changes out.
struct Reader {
    settings: WatchSettings,
    conn: ConnectionManager,
    /// `__keyspace@DB__:`.
    channel_prefix: String,
    /// One channel pattern per watch, in the watches' order.
    patterns: Vec<String>,
}

impl Reader {
    fn new(settings: WatchSettings, conn: ConnectionManager) -> Self {
        let channel_prefix = format!("__keyspace@{}__:", settings.target.db);
        let key_prefix = glob_escape(&settings.target.prefix);
        let patterns = settings
            .watches
            .iter()
            .map(|w| format!("{channel_prefix}{key_prefix}{}", w.pattern))
            .collect();
        Self {
            settings,
            conn,
            channel_prefix,
            patterns,
        }
    }

    /// Subscribes, reads, and resubscribes with backoff when the connection is lost, until
    /// the delivery engine stops (the link went).
    async fn run(mut self, client: redis::Client, delivery: Delivery<ToWatcher>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.subscribe(&client).await {
                Ok(pubsub) => {
                    backoff = Duration::from_millis(100);
                    let mut messages = pubsub.into_on_message();
                    while let Some(msg) = messages.next().await {
                        if let Some(change) = self.change(&msg).await {
                            let key = change.key().to_string();
                            if delivery.submit(key, change, |_| {}).await.is_err() {
                                return;
                            }
                        }
                    }
                    warn!("the Redis subscription was lost; changes until it is back are missed");
                }
                Err(e) => debug!(error = %e, "cannot subscribe to Redis yet"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn subscribe(&self, client: &redis::Client) -> redis::RedisResult<redis::aio::PubSub> {
        let mut pubsub = client.get_async_pubsub().await?;
        for pattern in &self.patterns {
            pubsub.psubscribe(pattern).await?;
        }
        Ok(pubsub)
    }

    /// The change a notification reports, if it is one the link watches. A key matching
    /// several patterns is notified once per pattern; only the first pattern's copy counts.
    async fn change(&mut self, msg: &redis::Msg) -> Option<Change> {
        let channel = msg.get_channel_name();
        let full_key = channel.strip_prefix(&self.channel_prefix)?;
        let key = full_key.strip_prefix(&self.settings.target.prefix)?;
        let event = std::str::from_utf8(msg.get_payload_bytes()).ok()?;
        let kind = kind(event)?;
        let pattern: String = msg.get_pattern().ok()?;
        let matching: Vec<usize> = (0..self.patterns.len())
            .filter(|&i| glob_match(self.settings.watches[i].pattern.as_bytes(), key.as_bytes()))
            .collect();
        if matching.first().map(|&i| &self.patterns[i]) != Some(&pattern) {
            return None;
        }
        let wanted = matching.iter().any(|&i| {
            let w = &self.settings.watches[i];
            match kind {
                Kind::Set => w.set,
                Kind::Delete => w.delete,
            }
        });
        if !wanted {
            return None;
        }
        let bucket = self.settings.bucket.clone();
        let key = key.to_string();
        match kind {
            Kind::Delete => Some(Change::Delete { bucket, key }),
            Kind::Set => {
                let value = self.read(full_key).await?;
                Some(Change::Set { bucket, key, value })
            }
        }
    }

    /// The value a set left, `None` if the key is gone (or is not a string) by now.
    async fn read(&mut self, full_key: &str) -> Option<bytes::Bytes> {
        let get = redis::cmd("GET").arg(full_key).to_owned();
        let answer = tokio::time::timeout(
            self.settings.server.timeout,
            get.query_async::<Option<Vec<u8>>>(&mut self.conn),
        )
        .await;
        match answer {
            Ok(Ok(value)) => value.map(bytes::Bytes::from),
            Ok(Err(e)) => {
                warn!(error = %e, "cannot read a watched key's new value; the change is skipped");
                None
            }
            Err(_) => {
                warn!("Redis did not answer a watched key's read; the change is skipped");
                None
            }
        }
    }
}

/// Whether `text` matches Redis glob `pattern` (`*`, `?`, `[abc]`, `[a-z]`, `[^…]`, `\`
/// escapes), as `PSUBSCRIBE` matches channels.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was and the text position it was tried at: on a mismatch the `*`
    // takes one more byte (linear backtracking, no recursion).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(pattern, p, text[t])
                        && matched
                    {
                        p = next;
                        t += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == text[t] => {
                    p += 2;
                    t += 1;
                    continue;
                }
                b'\\' => {}
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                star = Some((sp, st + 1));
                p = sp + 1;
                t = st + 1;
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A `[...]` class at `pattern[start]` against `c`: whether it matches and where the
/// pattern goes on; `None` for an unclosed class (which then matches nothing).
fn class(pattern: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    loop {
        let first = *pattern.get(i)?;
        if first == b']' {
            return Some((matched != negate, i + 1));
        }
        let lo = if first == b'\\' {
            i += 1;
            *pattern.get(i)?
        } else {
            first
        };
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = pattern[i + 2];
            let (a, b) = if lo <= hi { (lo, hi) } else { (hi, lo) };
            matched |= (a..=b).contains(&c);
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_redis_does() {
        for (pattern, text, expected) in [
            ("user:*", "user:1", true),
            ("user:*", "users", false),
            ("*", "", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-c]llo", "hbllo", true),
            ("h[a-c]llo", "hdllo", false),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("[unclosed", "u", false),
        ] {
            assert_eq!(
                glob_match(pattern.as_bytes(), text.as_bytes()),
                expected,
                "{pattern:?} vs {text:?}"
            );
        }
    }

    #[test]
    fn events_map_to_changes() {
        assert_eq!(kind("set"), Some(Kind::Set));
        assert_eq!(kind("incrby"), Some(Kind::Set));
        assert_eq!(kind("del"), Some(Kind::Delete));
        assert_eq!(kind("expired"), Some(Kind::Delete));
        assert_eq!(kind("expire"), None, "a TTL being set changes no value");
        assert_eq!(kind("hset"), None);
    }
}
