//! JetStream KV buckets on one NATS connection: opening (and optionally creating) buckets,
//! values larger than the server's max payload, atomic increments and cursor listing.
//!
//! Large values: a JetStream message cannot exceed the server's max payload (1 MiB by
//! default), so a value that does not fit is written to the object store
//! `{bucket}-trellis-large` (which chunks it) and the KV entry holds a marker. A value that
//! happens to start with the marker is stored the same way, so a marker in a KV entry always
//! means "read the object".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store::ObjectStore};
use bytes::Bytes;
use tokio::io::AsyncReadExt as _;

use crate::keys;
use trellis_interfaces::keyvalue::Error;

/// What a KV entry holds instead of a large value.
const MARKER: &[u8] = b"\0trellis:large-value:v1\0";
/// Headroom left under the max payload for headers.
const HEADROOM: usize = 8 << 10;
/// Compare-and-swap attempts of one increment.
const MAX_CAS_ATTEMPTS: u32 = 200;

/// A backend error as the interface's `other`, with its whole cause chain.
pub fn other(what: &str, e: &dyn std::error::Error) -> Error {
    let mut msg = format!("NATS {what}: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    Error::Other(msg)
}

fn chain_contains(e: &dyn std::error::Error, needle: &str) -> bool {
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        if err.to_string().contains(needle) {
            return true;
        }
        cur = err.source();
    }
    false
}

/// One NATS connection and the buckets opened on it.
pub struct Backend {
    client: async_nats::Client,
    js: jetstream::Context,
    buckets: Mutex<HashMap<String, Arc<Bucket>>>,
}

impl Backend {
    /// Wraps a connection (JetStream in `domain` if given).
    pub fn new(client: async_nats::Client, domain: Option<&str>) -> Self {
        let js = match domain {
            Some(d) => jetstream::with_domain(client.clone(), d),
            None => jetstream::new(client.clone()),
        };
        Self {
            client,
            js,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the connection is up now.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Opens KV bucket `name`, creating it if asked; a missing bucket is `no-such-store`.
    pub async fn bucket(&self, name: &str, create: bool) -> Result<Arc<Bucket>, Error> {
        if let Some(b) = self
            .buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(Arc::clone(b));
        }
        let kv = match self.js.get_key_value(name).await {
            Ok(kv) => kv,
            Err(e) if chain_contains(&e, "stream not found") => {
                if !create {
                    return Err(Error::NoSuchStore);
                }
                self.js
                    .create_key_value(kv::Config {
                        bucket: name.to_string(),
                        history: 1,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| other("cannot create the bucket", &e))?
            }
            Err(e) => return Err(other("cannot open the bucket", &e)),
        };
        let large_name = format!("{name}-trellis-large");
        let large = self.js.get_object_store(&large_name).await.ok();
        let max_inline = self
            .client
            .server_info()
            .max_payload
            .saturating_sub(HEADROOM);
        let bucket = Arc::new(Bucket {
            kv,
            js: self.js.clone(),
            large_name,
            large: tokio::sync::Mutex::new(large),
            max_inline,
            listings: Default::default(),
        });
        self.buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), Arc::clone(&bucket));
        Ok(bucket)
    }
}

/// An open KV bucket.
pub struct Bucket {
    kv: kv::Store,
    js: jetstream::Context,
    large_name: String,
    large: tokio::sync::Mutex<Option<ObjectStore>>,
    max_inline: usize,
    listings: crate::listing::Listings,
}

impl Bucket {
    async fn large_store(&self, create: bool) -> Result<Option<ObjectStore>, Error> {
        let mut large = self.large.lock().await;
        if large.is_none() && create {
            let store = match self
                .js
                .create_object_store(jetstream::object_store::Config {
                    bucket: self.large_name.clone(),
                    ..Default::default()
                })
                .await
            {
                Ok(s) => s,
                Err(_) => self
                    .js
                    .get_object_store(&self.large_name)
                    .await
                    .map_err(|e| other("cannot open the large-value store", &e))?,
            };
            *large = Some(store);
        }
        Ok(large.clone())
    }

    /// The value of `key`.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, Error> {
        let stored = keys::encode(key);
        let value = self
            .kv
            .get(stored.clone())
            .await
            .map_err(|e| other("get", &e))?;
        match value {
            Some(v) if v.starts_with(MARKER) => {
                let store = self
                    .large_store(false)
                    .await?
                    .ok_or_else(|| Error::Other("large value store missing".into()))?;
                let mut object = store
                    .get(&stored)
                    .await
                    .map_err(|e| other("large value get", &e))?;
                let mut data = Vec::new();
                object
                    .read_to_end(&mut data)
                    .await
                    .map_err(|e| other("large value read", &e))?;
                Ok(Some(data.into()))
            }
            v => Ok(v),
        }
    }

    /// Sets `key` to `value`.
    pub async fn set(&self, key: &str, value: &Bytes) -> Result<(), Error> {
        let stored = keys::encode(key);
        if value.len() > self.max_inline || value.starts_with(MARKER) {
            let store = self
                .large_store(true)
                .await?
                .ok_or_else(|| Error::Other("large value store missing".into()))?;
            store
                .put(stored.as_str(), &mut value.as_ref())
                .await
                .map_err(|e| other("large value put", &e))?;
            self.kv
                .put(stored, Bytes::from_static(MARKER))
                .await
                .map_err(|e| other("put", &e))?;
            return Ok(());
        }
        self.kv
            .put(stored.clone(), value.clone())
            .await
            .map_err(|e| other("put", &e))?;
        self.drop_large(&stored).await
    }

    /// Removes the object a large value of `stored` left, if any.
    async fn drop_large(&self, stored: &str) -> Result<(), Error> {
        if let Some(store) = self.large_store(false).await? {
            match store.delete(stored).await {
                Ok(()) => {}
                Err(e) if e.kind() == jetstream::object_store::DeleteErrorKind::NotFound => {}
                Err(e) => return Err(other("large value delete", &e)),
            }
        }
        Ok(())
    }

    /// Changes of the keys matching `filters` (stored forms, NATS wildcards allowed) from
    /// now on.
    pub async fn watch(&self, filters: &[String]) -> Result<kv::Watch, Error> {
        self.kv
            .watch_many(filters)
            .await
            .map_err(|e| other("watch", &e))
    }

    /// The value a watched put of `key` carries: `stored` itself, or the large value it
    /// marks (as it is now).
    pub async fn watched_value(&self, key: &str, stored: Bytes) -> Result<Option<Bytes>, Error> {
        if stored.starts_with(MARKER) {
            self.get(key).await
        } else {
            Ok(Some(stored))
        }
    }

    /// Deletes `key` (a missing key is fine).
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        let stored = keys::encode(key);
        self.kv
            .delete(stored.as_str())
            .await
            .map_err(|e| other("delete", &e))?;
        self.drop_large(&stored).await
    }

    /// Whether `key` has a value.
    pub async fn exists(&self, key: &str) -> Result<bool, Error> {
        Ok(self
            .kv
            .get(keys::encode(key))
            .await
            .map_err(|e| other("get", &e))?
            .is_some())
    }

    /// Adds `delta` to the decimal number in `key` (missing: 0) by compare-and-swap on the
    /// entry's revision, retrying when another writer got there first.
    pub async fn increment(&self, key: &str, delta: u64) -> Result<u64, Error> {
        let stored = keys::encode(key);
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let entry = self
                .kv
                .entry(stored.clone())
                .await
                .map_err(|e| other("get", &e))?;
            let live = entry.filter(|e| e.operation == kv::Operation::Put);
            let (current, revision) = match &live {
                None => (0, None),
                Some(e) => {
                    let n = std::str::from_utf8(&e.value)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or_else(|| Error::Other("the value is not a number".into()))?;
                    (n, Some(e.revision))
                }
            };
            let next = current
                .checked_add(delta)
                .ok_or_else(|| Error::Other("the increment overflows".into()))?;
            let value = Bytes::from(next.to_string());
            let written = match revision {
                None => self
                    .kv
                    .create(stored.as_str(), value)
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        (
                            e.kind() == kv::CreateErrorKind::AlreadyExists,
                            other("create", &e),
                        )
                    }),
                Some(rev) => self
                    .kv
                    .update(stored.as_str(), value, rev)
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        (
                            e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                            other("update", &e),
                        )
                    }),
            };
            match written {
                Ok(()) => return Ok(next),
                Err((true, _)) => {
                    // Lost the race: back off a little (spread by attempt) and retry.
                    let us = 100 + u64::from(attempt % 16) * 150;
                    tokio::time::sleep(Duration::from_micros(us)).await;
                }
                Err((false, e)) => return Err(e),
            }
        }
        Err(Error::Other(format!(
            "increment gave up after {MAX_CAS_ATTEMPTS} conflicting writes"
        )))
    }

    /// One page of the bucket's keys after `cursor` (see `listing`).
    pub async fn list(
        &self,
        cursor: Option<u64>,
        page: usize,
    ) -> Result<(Vec<String>, Option<u64>), Error> {
        self.listings
            .page(&self.kv.stream, &self.kv.prefix, cursor, page)
            .await
    }
}
