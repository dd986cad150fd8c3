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
//! forged `get-many` answer from aborting the host.

use trellis_interfaces::CallError;
use trellis_interfaces::keyvalue;
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

    /// The keyvalue client over the component's link for `wasi:keyvalue`.
    fn kv(&self) -> keyvalue::Client<'_, crate::router::LinkRouter> {
        keyvalue::Client::new(self.router(), ())
    }
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
        let res = self.kv().get(&name, &key).await;
        Ok(res.map(|v| v.map(|b| b.to_vec())).map_err(to_guest))
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let name = self.bucket_name(&bucket)?;
        let value = bytes::Bytes::from(value);
        Ok(self.kv().set(&name, &key, &value).await.map_err(to_guest))
    }

    async fn delete(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let name = self.bucket_name(&bucket)?;
        Ok(self.kv().delete(&name, &key).await.map_err(to_guest))
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, store::Error>> {
        let name = self.bucket_name(&bucket)?;
        Ok(self.kv().exists(&name, &key).await.map_err(to_guest))
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> wasmtime::Result<Result<store::KeyResponse, store::Error>> {
        let name = self.bucket_name(&bucket)?;
        let res = self.kv().list_keys(&name, cursor).await;
        Ok(res
            .map(|page| store::KeyResponse {
                keys: page.keys,
                cursor: page.cursor,
            })
            .map_err(to_guest))
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
        Ok(self
            .kv()
            .increment(&name, &key, delta)
            .await
            .map_err(to_guest))
    }
}

impl batch::Host for HostState {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<(String, Vec<u8>)>>, store::Error>> {
        let name = self.bucket_name(&bucket)?;
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let res = self.kv().get_many(&name, &keys).await;
        Ok(res
            .map(|items| {
                items
                    .into_iter()
                    .map(|i| i.map(|(k, v)| (k, v.to_vec())))
                    .collect()
            })
            .map_err(to_guest))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let name = self.bucket_name(&bucket)?;
        let values: Vec<(String, bytes::Bytes)> = key_values
            .into_iter()
            .map(|(k, v)| (k, bytes::Bytes::from(v)))
            .collect();
        let kvs: Vec<(&str, &bytes::Bytes)> = values.iter().map(|(k, v)| (k.as_str(), v)).collect();
        Ok(self.kv().set_many(&name, &kvs).await.map_err(to_guest))
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let name = self.bucket_name(&bucket)?;
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        Ok(self.kv().delete_many(&name, &keys).await.map_err(to_guest))
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
