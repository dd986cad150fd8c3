//! Keyvalue changes on the wire: `wrpc:keyvalue/watcher@0.2.0-draft`, which a keyvalue
//! provider calls on a watching component (the provider is the link's source) and a host
//! serves for a component exporting `wasi:keyvalue/watcher@0.2.0-draft`.
//!
//! The bucket travels as its name (the wire form 1.x uses); a host gives the component a
//! `bucket` resource of that name, whose calls go over the component's own keyvalue link.
//! The functions answer nothing on success; a failure (the component trapped, nobody serves
//! it) fails the call itself, so the provider can deliver the change again.

use std::future::Future;

use bytes::Bytes;
use trellis_wrpc_nats::wrpc_transport::Invoke;

use super::watch_bindings;
use super::watch_bindings::wrpc::keyvalue::watcher as client;
use crate::{CallError, Invocations, ServeError};

/// The wire instance of the watcher.
pub const WATCHER: &str = "wrpc:keyvalue/watcher@0.2.0-draft";

/// A change of a watched key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `key` was set to `value`.
    Set {
        /// The bucket, by name.
        bucket: String,
        /// The key.
        key: String,
        /// Its new value.
        value: Bytes,
    },
    /// `key` was deleted.
    Delete {
        /// The bucket, by name.
        bucket: String,
        /// The key.
        key: String,
    },
}

impl Change {
    /// The key changed.
    pub fn key(&self) -> &str {
        match self {
            Change::Set { key, .. } | Change::Delete { key, .. } => key,
        }
    }
}

/// What receives changes: a component's watcher, for calls with context `C`. `Err` (with
/// the reason) fails the call, which the calling provider retries.
pub trait Watcher<C: Send + 'static>: Clone + Send + Sync + 'static {
    /// `key` of `bucket` was set to `value`.
    fn on_set(
        &self,
        cx: C,
        bucket: String,
        key: String,
        value: Bytes,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// `key` of `bucket` was deleted.
    fn on_delete(
        &self,
        cx: C,
        bucket: String,
        key: String,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// The generated serving trait, for a [`Watcher`].
#[derive(Clone)]
struct Wire<W>(W);

impl<C: Send + 'static, W: Watcher<C>> watch_bindings::exports::wrpc::keyvalue::watcher::Handler<C>
    for Wire<W>
{
    async fn on_set(&self, cx: C, bucket: String, key: String, value: Bytes) -> anyhow::Result<()> {
        self.0
            .on_set(cx, bucket, key, value)
            .await
            .map_err(anyhow::Error::msg)
    }

    async fn on_delete(&self, cx: C, bucket: String, key: String) -> anyhow::Result<()> {
        self.0
            .on_delete(cx, bucket, key)
            .await
            .map_err(anyhow::Error::msg)
    }
}

/// Serves `watcher` (`on-set`, `on-delete`) on `server`. No parameter checks are needed (no
/// list of records or tuples).
pub async fn serve_watcher<S, W>(server: &S, watcher: W) -> Result<Invocations, ServeError>
where
    S: wrpc_transport::Serve,
    S::Context: Send + 'static,
    W: Watcher<S::Context>,
{
    watch_bindings::exports::wrpc::keyvalue::watcher::serve_interface(server, Wire(watcher))
        .await
        .map(Vec::from)
        .map_err(|error| ServeError {
            interface: WATCHER,
            error,
        })
}

/// Calls a component's watcher over `wrpc`, every call with context `cx`.
pub struct WatcherClient<'a, I: Invoke> {
    wrpc: &'a I,
    cx: I::Context,
}

impl<'a, I: Invoke> WatcherClient<'a, I>
where
    I::Context: Clone,
{
    /// A client calling over `wrpc` with context `cx`.
    pub fn new(wrpc: &'a I, cx: I::Context) -> Self {
        Self { wrpc, cx }
    }

    /// Tells the component of `change` (`on-set` or `on-delete`).
    pub async fn notify(&self, change: &Change) -> Result<(), CallError<std::convert::Infallible>> {
        let res = match change {
            Change::Set { bucket, key, value } => {
                client::on_set(self.wrpc, self.cx.clone(), bucket, key, value).await
            }
            Change::Delete { bucket, key } => {
                client::on_delete(self.wrpc, self.cx.clone(), bucket, key).await
            }
        };
        res.map_err(CallError::Transport)
    }
}

/// What a watching link asks for of one key pattern: which changes are delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// The key, or a pattern of keys in the backend's syntax.
    pub pattern: String,
    /// Sets are delivered (`on-set`).
    pub set: bool,
    /// Deletes are delivered (`on-delete`).
    pub delete: bool,
}

/// What a watching link's config says, whatever the backend: which keys (`watch`) of which
/// bucket (`watch_bucket`, default `default`; a provider maps it as it maps a call's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    /// The watched keys and changes.
    pub watches: Vec<Watch>,
    /// The bucket's name, as the component is told it.
    pub bucket: String,
}

impl WatchConfig {
    /// From the values of a link's `watch` and `watch_bucket` keys (`None`: absent); `Err`
    /// names the key at fault and why.
    pub fn parse(
        watch: Option<String>,
        bucket: Option<String>,
    ) -> Result<Self, (&'static str, String)> {
        let spec = watch.ok_or((
            "watch",
            "missing: which keys to watch (SET@key,DEL@key)".to_string(),
        ))?;
        let watches = parse_watches(&spec).map_err(|m| ("watch", m))?;
        Ok(Self {
            watches,
            bucket: bucket.unwrap_or_else(|| "default".to_string()),
        })
    }

    /// Where the watched bucket lives, by the provider's own mapping of bucket names
    /// (`resolve`, as for a call); `Err` names `watch_bucket` and why.
    pub fn locate<T>(
        &self,
        resolve: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, (&'static str, String)> {
        resolve(&self.bucket).ok_or_else(|| {
            (
                "watch_bucket",
                format!(
                    "bucket {:?} is not one this link maps (see bucket.<name>)",
                    self.bucket
                ),
            )
        })
    }
}

/// Parses a link's `watch` value, 1.x's syntax: `OP@KEY` items separated by commas, `OP`
/// one of `SET` and `DEL` (any case). Items of the same key merge; the order of first
/// appearance is kept.
///
/// ```
/// use trellis_interfaces::keyvalue::watcher::{parse_watches, Watch};
/// let w = parse_watches("SET@user:*, del@user:*,DEL@session").unwrap();
/// assert_eq!(w[0], Watch { pattern: "user:*".into(), set: true, delete: true });
/// assert_eq!(w[1], Watch { pattern: "session".into(), set: false, delete: true });
/// assert!(parse_watches("GET@x").is_err());
/// ```
pub fn parse_watches(spec: &str) -> Result<Vec<Watch>, String> {
    let mut watches: Vec<Watch> = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((op, key)) = item.split_once('@') else {
            return Err(format!("{item:?} is not OP@KEY (SET@key or DEL@key)"));
        };
        if key.is_empty() {
            return Err(format!("{item:?} names no key"));
        }
        let (set, delete) = match op.trim().to_ascii_uppercase().as_str() {
            "SET" => (true, false),
            "DEL" | "DELETE" => (false, true),
            other => return Err(format!("{other:?} is not a change to watch (SET or DEL)")),
        };
        match watches.iter_mut().find(|w| w.pattern == key) {
            Some(w) => {
                w.set |= set;
                w.delete |= delete;
            }
            None => watches.push(Watch {
                pattern: key.to_string(),
                set,
                delete,
            }),
        }
    }
    if watches.is_empty() {
        return Err("names no key (SET@key or DEL@key, separated by commas)".into());
    }
    Ok(watches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_watch_specs_say_why() {
        for (spec, needle) in [
            ("", "names no key"),
            (" , ", "names no key"),
            ("SET", "OP@KEY"),
            ("SET@", "names no key"),
            ("PUT@k", "SET or DEL"),
        ] {
            let err = parse_watches(spec).unwrap_err();
            assert!(err.contains(needle), "{spec:?}: {err}");
        }
    }

    #[test]
    fn keys_keep_at_signs_after_the_first() {
        let w = parse_watches("SET@mail@example").unwrap();
        assert_eq!(w[0].pattern, "mail@example");
    }
}
