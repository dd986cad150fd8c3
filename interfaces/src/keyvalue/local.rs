//! A keyvalue handler called in the caller's own process: a host running a provider
//! in-process keeps its [`Handler`] behind a [`DynHandler`] trait object and calls it
//! directly — no NATS, no wRPC encoding — with the context the provider's runtime admits the
//! call with (its link, config and secrets, as for a call from the lattice).

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::{Error, Handler, Items, KeyPage};

/// [`Handler`] as a trait object (its methods return boxed futures).
pub trait DynHandler<C>: Send + Sync {
    /// [`Handler::get`].
    fn get(
        &self,
        cx: C,
        bucket: String,
        key: String,
    ) -> BoxFuture<'_, Result<Option<Bytes>, Error>>;
    /// [`Handler::set`].
    fn set(
        &self,
        cx: C,
        bucket: String,
        key: String,
        value: Bytes,
    ) -> BoxFuture<'_, Result<(), Error>>;
    /// [`Handler::delete`].
    fn delete(&self, cx: C, bucket: String, key: String) -> BoxFuture<'_, Result<(), Error>>;
    /// [`Handler::exists`].
    fn exists(&self, cx: C, bucket: String, key: String) -> BoxFuture<'_, Result<bool, Error>>;
    /// [`Handler::list_keys`].
    fn list_keys(
        &self,
        cx: C,
        bucket: String,
        cursor: Option<u64>,
    ) -> BoxFuture<'_, Result<KeyPage, Error>>;
    /// [`Handler::increment`].
    fn increment(
        &self,
        cx: C,
        bucket: String,
        key: String,
        delta: u64,
    ) -> BoxFuture<'_, Result<u64, Error>>;
    /// [`Handler::get_many`].
    fn get_many(
        &self,
        cx: C,
        bucket: String,
        keys: Vec<String>,
    ) -> BoxFuture<'_, Result<Items, Error>>;
    /// [`Handler::set_many`].
    fn set_many(
        &self,
        cx: C,
        bucket: String,
        items: Vec<(String, Bytes)>,
    ) -> BoxFuture<'_, Result<(), Error>>;
    /// [`Handler::delete_many`].
    fn delete_many(
        &self,
        cx: C,
        bucket: String,
        keys: Vec<String>,
    ) -> BoxFuture<'_, Result<(), Error>>;
}

/// A shared in-process handler.
pub type SharedHandler<C> = Arc<dyn DynHandler<C>>;

impl<C: Send + 'static, H: Handler<C>> DynHandler<C> for H {
    fn get(
        &self,
        cx: C,
        bucket: String,
        key: String,
    ) -> BoxFuture<'_, Result<Option<Bytes>, Error>> {
        Box::pin(Handler::get(self, cx, bucket, key))
    }
    fn set(
        &self,
        cx: C,
        bucket: String,
        key: String,
        value: Bytes,
    ) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(Handler::set(self, cx, bucket, key, value))
    }
    fn delete(&self, cx: C, bucket: String, key: String) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(Handler::delete(self, cx, bucket, key))
    }
    fn exists(&self, cx: C, bucket: String, key: String) -> BoxFuture<'_, Result<bool, Error>> {
        Box::pin(Handler::exists(self, cx, bucket, key))
    }
    fn list_keys(
        &self,
        cx: C,
        bucket: String,
        cursor: Option<u64>,
    ) -> BoxFuture<'_, Result<KeyPage, Error>> {
        Box::pin(Handler::list_keys(self, cx, bucket, cursor))
    }
    fn increment(
        &self,
        cx: C,
        bucket: String,
        key: String,
        delta: u64,
    ) -> BoxFuture<'_, Result<u64, Error>> {
        Box::pin(Handler::increment(self, cx, bucket, key, delta))
    }
    fn get_many(
        &self,
        cx: C,
        bucket: String,
        keys: Vec<String>,
    ) -> BoxFuture<'_, Result<Items, Error>> {
        Box::pin(Handler::get_many(self, cx, bucket, keys))
    }
    fn set_many(
        &self,
        cx: C,
        bucket: String,
        items: Vec<(String, Bytes)>,
    ) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(Handler::set_many(self, cx, bucket, items))
    }
    fn delete_many(
        &self,
        cx: C,
        bucket: String,
        keys: Vec<String>,
    ) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(Handler::delete_many(self, cx, bucket, keys))
    }
}
