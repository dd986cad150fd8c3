//! The typed client: one method per function, the interface's error or the transport's.
//!
//! `get-many` answers a list of options of tuples, for which the generated decoder reserves
//! room as the length prefix says before reading any: its items are decoded only once all
//! their bytes are here ([`Whole`]), so a provider answering with a forged count cannot abort
//! the caller.

use bytes::Bytes;
use trellis_wrpc_nats::wire_shape::Whole;
use trellis_wrpc_nats::wrpc_transport::{Invoke, InvokeExt as _};

use super::bindings::wrpc::keyvalue::{atomics, batch, store};
use super::{Error, Items, KeyPage};
use crate::CallError;

/// Calls a keyvalue provider over `wrpc` (a linked client, a host's router, a bare transport
/// client), every call with context `cx`.
pub struct Client<'a, I: Invoke> {
    wrpc: &'a I,
    cx: I::Context,
}

type Res<T> = Result<T, CallError<Error>>;

fn fold<T>(res: anyhow::Result<Result<T, store::Error>>) -> Res<T> {
    crate::error::fold(res).map_err(|e| e.map_interface(from_wire))
}

fn from_wire(e: store::Error) -> Error {
    match e {
        store::Error::NoSuchStore => Error::NoSuchStore,
        store::Error::AccessDenied => Error::AccessDenied,
        store::Error::Other(msg) => Error::Other(msg),
    }
}

impl<'a, I> Client<'a, I>
where
    I: Invoke,
    I::Context: Clone,
{
    /// A client calling over `wrpc` with context `cx`.
    pub fn new(wrpc: &'a I, cx: I::Context) -> Self {
        Self { wrpc, cx }
    }

    /// `store.get`.
    pub async fn get(&self, bucket: &str, key: &str) -> Res<Option<Bytes>> {
        fold(store::get(self.wrpc, self.cx.clone(), bucket, key).await)
    }

    /// `store.set`.
    pub async fn set(&self, bucket: &str, key: &str, value: &Bytes) -> Res<()> {
        fold(store::set(self.wrpc, self.cx.clone(), bucket, key, value).await)
    }

    /// `store.delete`.
    pub async fn delete(&self, bucket: &str, key: &str) -> Res<()> {
        fold(store::delete(self.wrpc, self.cx.clone(), bucket, key).await)
    }

    /// `store.exists`.
    pub async fn exists(&self, bucket: &str, key: &str) -> Res<bool> {
        fold(store::exists(self.wrpc, self.cx.clone(), bucket, key).await)
    }

    /// `store.list-keys`.
    pub async fn list_keys(&self, bucket: &str, cursor: Option<u64>) -> Res<KeyPage> {
        fold(store::list_keys(self.wrpc, self.cx.clone(), bucket, cursor).await).map(|r| KeyPage {
            keys: r.keys,
            cursor: r.cursor,
        })
    }

    /// `atomics.increment`.
    pub async fn increment(&self, bucket: &str, key: &str, delta: u64) -> Res<u64> {
        fold(atomics::increment(self.wrpc, self.cx.clone(), bucket, key, delta).await)
    }

    /// `batch.get-many`, with the items decoded only once whole.
    pub async fn get_many(&self, bucket: &str, keys: &[&str]) -> Res<Items> {
        let res = self
            .wrpc
            .invoke_values_blocking::<_, _, (Result<Whole<Items>, store::Error>,)>(
                self.cx.clone(),
                super::BATCH,
                "get-many",
                (bucket, keys),
                [[None::<usize>; 0]; 0],
            )
            .await
            .map(|(items,)| items.map(|Whole(items)| items));
        fold(res)
    }

    /// `batch.set-many`.
    pub async fn set_many(&self, bucket: &str, items: &[(&str, &Bytes)]) -> Res<()> {
        fold(batch::set_many(self.wrpc, self.cx.clone(), bucket, items).await)
    }

    /// `batch.delete-many`.
    pub async fn delete_many(&self, bucket: &str, keys: &[&str]) -> Res<()> {
        fold(batch::delete_many(self.wrpc, self.cx.clone(), bucket, keys).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use tokio_util::codec::{Decoder as _, Encoder as _};
    use trellis_wrpc_nats::wrpc_transport::{Decode, Encode};
    use trellis_wrpc_nats::{Incoming, Outgoing};

    type Answer = (Result<Whole<Items>, store::Error>,);

    /// Items decode as the generated decoder's; a forged count waits for bytes that never
    /// come (the generated decoder would reserve some 200 GB and abort the caller), and the
    /// end of the results fails it.
    #[test]
    fn get_many_items_decode_only_when_whole() {
        let items: Items = vec![Some(("k".into(), Bytes::from_static(b"v"))), None];
        let mut src = BytesMut::new();
        <(Result<Items, String>,) as Encode<Outgoing>>::Encoder::default()
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
