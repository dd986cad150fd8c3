//! An in-memory keyvalue store serving the keyvalue interface, for tests whose subject is
//! not a backend (the host's routing, the interface's serving and client).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use trellis_interfaces::keyvalue::{self, Error, Items, KeyPage};

/// One bucket, named at construction; any other name is `no-such-store`. `list-keys`
/// answers every key in one page unless [`MemKv::with_page`] says otherwise. Cheap to clone
/// (shared contents).
#[derive(Clone)]
pub struct MemKv {
    bucket: Arc<str>,
    page: usize,
    map: Arc<Mutex<BTreeMap<String, Bytes>>>,
}

impl MemKv {
    /// A store whose one bucket is `bucket`.
    pub fn new(bucket: &str) -> Self {
        Self {
            bucket: Arc::from(bucket),
            page: usize::MAX,
            map: Arc::default(),
        }
    }

    /// `list-keys` pages of at most `keys` keys, so a caller's paging is exercised.
    pub fn with_page(mut self, keys: usize) -> Self {
        self.page = keys.max(1);
        self
    }

    /// The contents, to check what calls stored.
    pub fn contents(&self) -> BTreeMap<String, Bytes> {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Bytes>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open(&self, bucket: &str) -> Result<MutexGuard<'_, BTreeMap<String, Bytes>>, Error> {
        if bucket != &*self.bucket {
            return Err(Error::NoSuchStore);
        }
        Ok(self.lock())
    }
}

impl<C: Send + 'static> keyvalue::Handler<C> for MemKv {
    async fn get(&self, _: C, b: String, k: String) -> Result<Option<Bytes>, Error> {
        Ok(self.open(&b)?.get(&k).cloned())
    }

    async fn set(&self, _: C, b: String, k: String, v: Bytes) -> Result<(), Error> {
        self.open(&b)?.insert(k, v);
        Ok(())
    }

    async fn delete(&self, _: C, b: String, k: String) -> Result<(), Error> {
        self.open(&b)?.remove(&k);
        Ok(())
    }

    async fn exists(&self, _: C, b: String, k: String) -> Result<bool, Error> {
        Ok(self.open(&b)?.contains_key(&k))
    }

    async fn list_keys(&self, _: C, b: String, cursor: Option<u64>) -> Result<KeyPage, Error> {
        // The cursor is the index of the page's first key.
        let map = self.open(&b)?;
        let from = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
        let keys: Vec<String> = map.keys().skip(from).take(self.page).cloned().collect();
        let next = from.saturating_add(keys.len());
        Ok(KeyPage {
            keys,
            cursor: (next < map.len()).then_some(next as u64),
        })
    }

    async fn increment(&self, _: C, b: String, k: String, delta: u64) -> Result<u64, Error> {
        let mut map = self.open(&b)?;
        let now = match map.get(&k) {
            None => 0,
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| Error::Other("not a number".into()))?,
        };
        let n = now
            .checked_add(delta)
            .ok_or_else(|| Error::Other("overflow".into()))?;
        map.insert(k, Bytes::from(n.to_string()));
        Ok(n)
    }

    async fn get_many(&self, _: C, b: String, keys: Vec<String>) -> Result<Items, Error> {
        let map = self.open(&b)?;
        Ok(keys
            .into_iter()
            .map(|k| map.get(&k).cloned().map(|v| (k, v)))
            .collect())
    }

    async fn set_many(&self, _: C, b: String, items: Vec<(String, Bytes)>) -> Result<(), Error> {
        self.open(&b)?.extend(items);
        Ok(())
    }

    async fn delete_many(&self, _: C, b: String, keys: Vec<String>) -> Result<(), Error> {
        let mut map = self.open(&b)?;
        for k in keys {
            map.remove(&k);
        }
        Ok(())
    }
}
