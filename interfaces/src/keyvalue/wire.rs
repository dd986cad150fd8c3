//! The generated serving traits, implemented for any [`Handler`]: conversions between the
//! wire types and the plain ones, nothing else.

use bytes::Bytes;

use super::bindings::exports::wrpc::keyvalue::{atomics, batch, store};
use super::{Error, Handler, Items};

/// A [`Handler`] as the generated bindings serve it.
#[derive(Clone)]
pub(super) struct Wire<H>(pub(super) H);

type WireResult<T> = anyhow::Result<Result<T, store::Error>>;

fn to_wire<T>(res: Result<T, Error>) -> WireResult<T> {
    Ok(res.map_err(|e| match e {
        Error::NoSuchStore => store::Error::NoSuchStore,
        Error::AccessDenied => store::Error::AccessDenied,
        Error::Other(msg) => store::Error::Other(msg),
    }))
}

impl<C: Send + 'static, H: Handler<C>> store::Handler<C> for Wire<H> {
    async fn get(&self, cx: C, bucket: String, key: String) -> WireResult<Option<Bytes>> {
        to_wire(self.0.get(cx, bucket, key).await)
    }

    async fn set(&self, cx: C, bucket: String, key: String, value: Bytes) -> WireResult<()> {
        to_wire(self.0.set(cx, bucket, key, value).await)
    }

    async fn delete(&self, cx: C, bucket: String, key: String) -> WireResult<()> {
        to_wire(self.0.delete(cx, bucket, key).await)
    }

    async fn exists(&self, cx: C, bucket: String, key: String) -> WireResult<bool> {
        to_wire(self.0.exists(cx, bucket, key).await)
    }

    async fn list_keys(
        &self,
        cx: C,
        bucket: String,
        cursor: Option<u64>,
    ) -> WireResult<store::KeyResponse> {
        to_wire(
            self.0
                .list_keys(cx, bucket, cursor)
                .await
                .map(|page| store::KeyResponse {
                    keys: page.keys,
                    cursor: page.cursor,
                }),
        )
    }
}

impl<C: Send + 'static, H: Handler<C>> atomics::Handler<C> for Wire<H> {
    async fn increment(&self, cx: C, bucket: String, key: String, delta: u64) -> WireResult<u64> {
        to_wire(self.0.increment(cx, bucket, key, delta).await)
    }
}

impl<C: Send + 'static, H: Handler<C>> batch::Handler<C> for Wire<H> {
    async fn get_many(&self, cx: C, bucket: String, keys: Vec<String>) -> WireResult<Items> {
        to_wire(self.0.get_many(cx, bucket, keys).await)
    }

    async fn set_many(
        &self,
        cx: C,
        bucket: String,
        key_values: Vec<(String, Bytes)>,
    ) -> WireResult<()> {
        to_wire(self.0.set_many(cx, bucket, key_values).await)
    }

    async fn delete_many(&self, cx: C, bucket: String, keys: Vec<String>) -> WireResult<()> {
        to_wire(self.0.delete_many(cx, bucket, keys).await)
    }
}
