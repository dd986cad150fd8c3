//! `wasi:keyvalue@0.2.0-draft` for components, carried over the lattice as the string-keyed
//! `wrpc:keyvalue/*@0.2.0-draft` wire interfaces wasmCloud 1.x uses, so the same keyvalue
//! providers serve 1.x hosts and this one.
//!
//! A `bucket` resource is only its name here: opening one costs nothing, and every operation
//! is one wRPC call to the provider linked for `wasi:keyvalue` (under the component's link
//! name) with the bucket name as its first argument. Transport failures (no link, timeout,
//! provider gone) come back to the component as the interface's `other` error with the
//! reason, never as a trap.
//!
//! The calls go through `trellis_interfaces::keyvalue::Client`, which also keeps a provider's
//! forged `get-many` answer from aborting the host — or, when the linked provider runs in
//! this host's process (`crate::in_process`), straight to its handler, admitted by the same
//! link as a call from the lattice would be.

use bytes::Bytes;
use trellis_interfaces::CallError;
use trellis_interfaces::keyvalue::{self, KeyPage, SharedHandler};
use trellis_sdk::runtime::CallContext;
use wasmtime::component::Resource;

use crate::state::HostState;

pub(crate) mod guest {
    wasmtime::component::bindgen!({
        path: "../wit/deps/keyvalue",
        world: "wasi:keyvalue/imports@0.2.0-draft",
        imports: { default: async | trappable },
        with: { "wasi:keyvalue/store.bucket": super::Bucket },
    });
}

use guest::wasi::keyvalue::{atomics, batch, store};

/// An open bucket: its name.
#[derive(Debug)]
pub struct Bucket(String);

impl Bucket {
    /// The bucket called `name` (a watcher's, handed in by the provider).
    pub(crate) fn named(name: String) -> Self {
        Self(name)
    }
}

/// A failed call as the component sees it: the transport's reason becomes `other`.
fn to_guest(err: CallError<keyvalue::Error>) -> store::Error {
    match keyvalue::Error::from(err) {
        keyvalue::Error::NoSuchStore => store::Error::NoSuchStore,
        keyvalue::Error::AccessDenied => store::Error::AccessDenied,
        keyvalue::Error::Other(msg) => store::Error::Other(msg),
    }
}

impl HostState {
    fn bucket_name(&mut self, bucket: &Resource<Bucket>) -> wasmtime::Result<String> {
        Ok(self.table().get(bucket)?.0.clone())
    }

    /// Where this invocation's calls of wire instance `instance` (store, atomics or batch)
    /// go: to the provider linked for `wasi:keyvalue`, in this process or over the lattice.
    fn kv(&self, instance: &str) -> Result<Kv<'_>, store::Error> {
        match self.router().local_keyvalue(instance) {
            Ok(Some((handler, cx))) => Ok(Kv::Local(handler, cx, self.router().timeout())),
            Ok(None) => Ok(Kv::Remote(keyvalue::Client::new(self.router(), ()))),
            Err(refused) => Err(store::Error::Other(refused)),
        }
    }
}

/// A keyvalue call's way to its provider.
enum Kv<'a> {
    /// Over the lattice (wRPC through NATS).
    Remote(keyvalue::Client<'a, crate::router::LinkRouter>),
    /// To the handler of a provider running in this process, within the host's call
    /// timeout (as a call over the lattice is).
    Local(SharedHandler<CallContext>, CallContext, std::time::Duration),
}

/// A local handler's answer within `timeout`, its error as the component sees it.
async fn local<T>(
    timeout: std::time::Duration,
    call: impl std::future::Future<Output = Result<T, keyvalue::Error>>,
) -> Result<T, store::Error> {
    match tokio::time::timeout(timeout, call).await {
        Ok(res) => res.map_err(|e| to_guest(CallError::Interface(e))),
        Err(_) => Err(store::Error::Other(format!(
            "the in-process provider did not answer within {timeout:?}"
        ))),
    }
}

impl Kv<'_> {
    async fn get(self, bucket: String, key: String) -> Result<Option<Bytes>, store::Error> {
        match self {
            Kv::Remote(c) => c.get(&bucket, &key).await.map_err(to_guest),
            Kv::Local(h, cx, t) => local(t, h.get(cx, bucket, key)).await,
        }
    }

    async fn set(self, bucket: String, key: String, value: Bytes) -> Result<(), store::Error> {
        match self {
            Kv::Remote(c) => c.set(&bucket, &key, &value).await.map_err(to_guest),
            Kv::Local(h, cx, t) => local(t, h.set(cx, bucket, key, value)).await,
        }
    }

    async fn delete(self, bucket: String, key: String) -> Result<(), store::Error> {
        match self {
            Kv::Remote(c) => c.delete(&bucket, &key).await.map_err(to_guest),
            Kv::Local(h, cx, t) => local(t, h.delete(cx, bucket, key)).await,
        }
    }

    async fn exists(self, bucket: String, key: String) -> Result<bool, store::Error> {
        match self {
            Kv::Remote(c) => c.exists(&bucket, &key).await.map_err(to_guest),
            Kv::Local(h, cx, t) => local(t, h.exists(cx, bucket, key)).await,
        }
    }

    async fn list_keys(self, bucket: String, cursor: Option<u64>) -> Result<KeyPage, store::Error> {
        match self {
            Kv::Remote(c) => c.list_keys(&bucket, cursor).await.map_err(to_guest),
            Kv::Local(h, cx, t) => local(t, h.list_keys(cx, bucket, cursor)).await,
        }
    }

    async fn increment(self, bucket: String, key: String, delta: u64) -> Result<u64, store::Error> {
        match self {
            Kv::Remote(c) => c.increment(&bucket, &key, delta).await.map_err(to_guest),
            Kv::Local(h, cx, t) => local(t, h.increment(cx, bucket, key, delta)).await,
        }
    }

    async fn get_many(
        self,
        bucket: String,
        keys: Vec<String>,
    ) -> Result<keyvalue::Items, store::Error> {
        match self {
            Kv::Remote(c) => {
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                c.get_many(&bucket, &keys).await.map_err(to_guest)
            }
            Kv::Local(h, cx, t) => local(t, h.get_many(cx, bucket, keys)).await,
        }
    }

    async fn set_many(
        self,
        bucket: String,
        items: Vec<(String, Bytes)>,
    ) -> Result<(), store::Error> {
        match self {
            Kv::Remote(c) => {
                let kvs: Vec<(&str, &Bytes)> = items.iter().map(|(k, v)| (k.as_str(), v)).collect();
                c.set_many(&bucket, &kvs).await.map_err(to_guest)
            }
            Kv::Local(h, cx, t) => local(t, h.set_many(cx, bucket, items)).await,
        }
    }

    async fn delete_many(self, bucket: String, keys: Vec<String>) -> Result<(), store::Error> {
        match self {
            Kv::Remote(c) => {
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                c.delete_many(&bucket, &keys).await.map_err(to_guest)
            }
            Kv::Local(h, cx, t) => local(t, h.delete_many(cx, bucket, keys)).await,
        }
    }
}

/// The way to the provider for `$instance`, or the refusal as the component's error.
macro_rules! kv_or_return {
    ($state:expr, $instance:expr) => {
        match $state.kv($instance) {
            Ok(kv) => kv,
            Err(refused) => return Ok(Err(refused)),
        }
    };
}

impl store::Host for HostState {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<Bucket>, store::Error>> {
        Ok(Ok(self.table().push(Bucket(identifier))?))
    }
}

impl store::HostBucket for HostState {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        let name = self.bucket_name(&bucket)?;
        let kv = kv_or_return!(self, keyvalue::STORE);
        Ok(kv.get(name, key).await.map(|v| v.map(|b| b.to_vec())))
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let name = self.bucket_name(&bucket)?;
        let kv = kv_or_return!(self, keyvalue::STORE);
        Ok(kv.set(name, key, Bytes::from(value)).await)
    }

    async fn delete(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let name = self.bucket_name(&bucket)?;
        let kv = kv_or_return!(self, keyvalue::STORE);
        Ok(kv.delete(name, key).await)
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, store::Error>> {
        let name = self.bucket_name(&bucket)?;
        let kv = kv_or_return!(self, keyvalue::STORE);
        Ok(kv.exists(name, key).await)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> wasmtime::Result<Result<store::KeyResponse, store::Error>> {
        let name = self.bucket_name(&bucket)?;
        let kv = kv_or_return!(self, keyvalue::STORE);
        Ok(kv
            .list_keys(name, cursor)
            .await
            .map(|page| store::KeyResponse {
                keys: page.keys,
                cursor: page.cursor,
            }))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table().delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for HostState {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> wasmtime::Result<Result<u64, store::Error>> {
        let name = self.bucket_name(&bucket)?;
        let kv = kv_or_return!(self, keyvalue::ATOMICS);
        Ok(kv.increment(name, key, delta).await)
    }
}

impl batch::Host for HostState {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<(String, Vec<u8>)>>, store::Error>> {
        let name = self.bucket_name(&bucket)?;
        let kv = kv_or_return!(self, keyvalue::BATCH);
        Ok(kv.get_many(name, keys).await.map(|items| {
            items
                .into_iter()
                .map(|i| i.map(|(k, v)| (k, v.to_vec())))
                .collect()
        }))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let name = self.bucket_name(&bucket)?;
        let items = key_values
            .into_iter()
            .map(|(k, v)| (k, Bytes::from(v)))
            .collect();
        let kv = kv_or_return!(self, keyvalue::BATCH);
        Ok(kv.set_many(name, items).await)
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let name = self.bucket_name(&bucket)?;
        let kv = kv_or_return!(self, keyvalue::BATCH);
        Ok(kv.delete_many(name, keys).await)
    }
}

/// Adds `wasi:keyvalue` (store, atomics, batch) to `linker`.
pub(crate) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<HostState>,
) -> wasmtime::Result<()> {
    guest::Imports::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
        linker,
        |s| s,
    )
}
