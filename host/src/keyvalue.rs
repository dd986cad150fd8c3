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
//! `get-many` answers a list of options of tuples, for which the generated decoder reserves
//! room as the length prefix says before reading any: its items are decoded only once all
//! their bytes are here (`Whole`), so a provider answering with a forged count cannot abort
//! the host.

use bytes::Bytes;
use trellis_sdk::wire_shape::Whole;
use trellis_sdk::wrpc_transport::InvokeExt as _;
use wasmtime::component::Resource;

use crate::state::HostState;

mod guest {
    wasmtime::component::bindgen!({
        path: "../wit/deps/keyvalue",
        world: "wasi:keyvalue/imports@0.2.0-draft",
        imports: { default: async | trappable },
        with: { "wasi:keyvalue/store.bucket": super::Bucket },
    });
}

mod wire {
    wit_bindgen_wrpc::generate!({
        wrpc_transport_path: "::trellis_sdk::wrpc_transport",
        path: "../wit/deps/wrpc-keyvalue",
        world: "wrpc:keyvalue/imports@0.2.0-draft",
    });
}

use guest::wasi::keyvalue::{atomics, batch, store};
use wire::wrpc::keyvalue::{atomics as wire_atomics, batch as wire_batch, store as wire_store};

/// An open bucket: its name.
#[derive(Debug)]
pub struct Bucket(String);

fn from_wire(err: wire_store::Error) -> store::Error {
    match err {
        wire_store::Error::NoSuchStore => store::Error::NoSuchStore,
        wire_store::Error::AccessDenied => store::Error::AccessDenied,
        wire_store::Error::Other(msg) => store::Error::Other(msg),
    }
}

/// Folds a wRPC call's outcome into the interface's result.
fn fold<T>(res: anyhow::Result<Result<T, wire_store::Error>>) -> Result<T, store::Error> {
    match res {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(err)) => Err(from_wire(err)),
        Err(err) => Err(store::Error::Other(format!("{err:#}"))),
    }
}

/// The items `get-many` answers.
type ItemList = Vec<Option<(String, Bytes)>>;

impl HostState {
    fn bucket_name(&mut self, bucket: &Resource<Bucket>) -> wasmtime::Result<String> {
        Ok(self.table().get(bucket)?.0.clone())
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
        let res = wire_store::get(self.router(), (), &name, &key).await;
        Ok(fold(res).map(|v| v.map(|b| b.to_vec())))
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let name = self.bucket_name(&bucket)?;
        let value = bytes::Bytes::from(value);
        Ok(fold(
            wire_store::set(self.router(), (), &name, &key, &value).await,
        ))
    }

    async fn delete(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let name = self.bucket_name(&bucket)?;
        Ok(fold(
            wire_store::delete(self.router(), (), &name, &key).await,
        ))
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, store::Error>> {
        let name = self.bucket_name(&bucket)?;
        Ok(fold(
            wire_store::exists(self.router(), (), &name, &key).await,
        ))
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> wasmtime::Result<Result<store::KeyResponse, store::Error>> {
        let name = self.bucket_name(&bucket)?;
        let res = wire_store::list_keys(self.router(), (), &name, cursor).await;
        Ok(fold(res).map(|r| store::KeyResponse {
            keys: r.keys,
            cursor: r.cursor,
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
        Ok(fold(
            wire_atomics::increment(self.router(), (), &name, &key, delta).await,
        ))
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
        // `wire_batch::get_many`, with the items decoded only once whole.
        let res = self
            .router()
            .invoke_values_blocking::<_, _, (Result<Whole<ItemList>, wire_store::Error>,)>(
                (),
                "wrpc:keyvalue/batch@0.2.0-draft",
                "get-many",
                (name.as_str(), keys.as_slice()),
                [[None::<usize>; 0]; 0],
            )
            .await
            .map(|(items,)| items);
        Ok(fold(res).map(|Whole(items)| {
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
        let values: Vec<(String, bytes::Bytes)> = key_values
            .into_iter()
            .map(|(k, v)| (k, bytes::Bytes::from(v)))
            .collect();
        let kvs: Vec<(&str, &bytes::Bytes)> = values.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let res = wire_batch::set_many(self.router(), (), &name, &kvs).await;
        Ok(fold(res))
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let name = self.bucket_name(&bucket)?;
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        Ok(fold(
            wire_batch::delete_many(self.router(), (), &name, &keys).await,
        ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use tokio_util::codec::{Decoder as _, Encoder as _};
    use trellis_sdk::transport::{Incoming, Outgoing};
    use trellis_sdk::wrpc_transport::{Decode, Encode};

    type Answer = (Result<Whole<ItemList>, wire_store::Error>,);

    /// Items decode as the generated decoder's; a forged count waits for bytes that never
    /// come (the generated decoder would reserve some 200 GB and abort the host), and the end
    /// of the results fails it.
    #[test]
    fn get_many_items_decode_only_when_whole() {
        let items: ItemList = vec![Some(("k".into(), Bytes::from_static(b"v"))), None];
        let mut src = BytesMut::new();
        <(Result<ItemList, String>,) as Encode<Outgoing>>::Encoder::default()
            .encode((Ok::<_, String>(items.clone()),), &mut src)
            .expect("encodes");
        let mut dec = <Answer as Decode<Incoming>>::Decoder::default();
        let (got,) = dec.decode(&mut src).expect("decodes").expect("whole");
        assert_eq!(got.ok(), Some(Whole(items)));

        let mut forged = BytesMut::from(&b"\x00\xff\xff\xff\xff\x0f\x01\x01k\x01v"[..]);
        let mut dec = <Answer as Decode<Incoming>>::Decoder::default();
        assert!(dec.decode(&mut forged).expect("no error yet").is_none());
        assert!(
            dec.decode_eof(&mut forged).is_err(),
            "incomplete at the end"
        );
    }
}
