//! `wasi:keyvalue` on the wire: `wrpc:keyvalue/{store,atomics,batch}@0.2.0-draft`, the
//! string-keyed interfaces wasmCloud 1.x hosts and providers speak.
//!
//! A provider implements [`Handler`] and serves it with [`serve`] (after
//! [`param_checks`]); a host or test calls a provider through [`Client`].
//!
//! ```no_run
//! use bytes::Bytes;
//! use trellis_interfaces::keyvalue::{self, Error, KeyPage};
//!
//! /// A store with no buckets: every call answers `no-such-store`.
//! #[derive(Clone)]
//! struct Empty;
//!
//! impl<C: Send + 'static> keyvalue::Handler<C> for Empty {
//!     async fn get(&self, _: C, _: String, _: String) -> Result<Option<Bytes>, Error> { Err(Error::NoSuchStore) }
//!     async fn set(&self, _: C, _: String, _: String, _: Bytes) -> Result<(), Error> { Err(Error::NoSuchStore) }
//!     async fn delete(&self, _: C, _: String, _: String) -> Result<(), Error> { Err(Error::NoSuchStore) }
//!     async fn exists(&self, _: C, _: String, _: String) -> Result<bool, Error> { Err(Error::NoSuchStore) }
//!     async fn list_keys(&self, _: C, _: String, _: Option<u64>) -> Result<KeyPage, Error> { Err(Error::NoSuchStore) }
//!     async fn increment(&self, _: C, _: String, _: String, _: u64) -> Result<u64, Error> { Err(Error::NoSuchStore) }
//!     async fn get_many(&self, _: C, _: String, _: Vec<String>) -> Result<Vec<Option<(String, Bytes)>>, Error> { Err(Error::NoSuchStore) }
//!     async fn set_many(&self, _: C, _: String, _: Vec<(String, Bytes)>) -> Result<(), Error> { Err(Error::NoSuchStore) }
//!     async fn delete_many(&self, _: C, _: String, _: Vec<String>) -> Result<(), Error> { Err(Error::NoSuchStore) }
//! }
//!
//! # async fn demo(server: trellis_wrpc_nats::Server) -> anyhow::Result<()> {
//! let server = server.with_param_checks(keyvalue::param_checks());
//! let invocations = keyvalue::serve(&server, Empty).await?;
//! # let _ = invocations; Ok(()) }
//! ```

pub mod bindings;
mod client;
pub mod local;
pub mod watch_bindings;
pub mod watcher;
mod wire;

use std::future::Future;

use bytes::Bytes;
use trellis_wrpc_nats::wire_shape::ParamChecks;

pub use client::Client;
pub use local::{DynHandler, SharedHandler};
pub use watcher::{Change, WATCHER, Watcher, WatcherClient, serve_watcher};

/// The wire instance of `store`.
pub const STORE: &str = "wrpc:keyvalue/store@0.2.0-draft";
/// The wire instance of `atomics`.
pub const ATOMICS: &str = "wrpc:keyvalue/atomics@0.2.0-draft";
/// The wire instance of `batch`.
pub const BATCH: &str = "wrpc:keyvalue/batch@0.2.0-draft";

use crate::{Invocations, ServeError};

/// The interface's error (`wasi:keyvalue/store.error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bucket is not one this link may use.
    #[error("no such store")]
    NoSuchStore,
    /// The backend refused the caller's credentials.
    #[error("access denied")]
    AccessDenied,
    /// Anything else, with the reason.
    #[error("{0}")]
    Other(String),
}

impl From<crate::CallError<Error>> for Error {
    /// Folds a failed call into the interface's error, the way a component sees it: the
    /// transport's reason becomes `other`.
    fn from(err: crate::CallError<Error>) -> Self {
        match err {
            crate::CallError::Interface(e) => e,
            crate::CallError::Transport(e) => Error::Other(format!("{e:#}")),
        }
    }
}

/// One page of `list-keys`: the keys and, when more follow, the cursor of the next page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPage {
    /// Keys of this page.
    pub keys: Vec<String>,
    /// Where the next page starts; `None` on the last page.
    pub cursor: Option<u64>,
}

/// The items `get-many` answers: one per key asked, `None` where the key is absent.
pub type Items = Vec<Option<(String, Bytes)>>;

/// What a keyvalue provider implements: store, atomics and batch on its backend, for calls
/// with context `C` (the provider SDK's `CallContext`: the caller and its link).
///
/// Each method answers the interface's [`Error`]; a call never fails otherwise. The usual
/// first step is to resolve the call's bucket, which answers [`Error::NoSuchStore`] with `?`
/// when the link does not map it.
pub trait Handler<C: Send + 'static>: Clone + Send + Sync + 'static {
    /// The value of `key`, `None` when absent.
    fn get(
        &self,
        cx: C,
        bucket: String,
        key: String,
    ) -> impl Future<Output = Result<Option<Bytes>, Error>> + Send;
    /// Sets `key` to `value`.
    fn set(
        &self,
        cx: C,
        bucket: String,
        key: String,
        value: Bytes,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    /// Deletes `key`; deleting an absent key succeeds.
    fn delete(
        &self,
        cx: C,
        bucket: String,
        key: String,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    /// Whether `key` is present.
    fn exists(
        &self,
        cx: C,
        bucket: String,
        key: String,
    ) -> impl Future<Output = Result<bool, Error>> + Send;
    /// One page of the bucket's keys from `cursor` (`None`: the first page).
    fn list_keys(
        &self,
        cx: C,
        bucket: String,
        cursor: Option<u64>,
    ) -> impl Future<Output = Result<KeyPage, Error>> + Send;
    /// Adds `delta` to the number stored at `key` (absent: 0) and answers the new value.
    fn increment(
        &self,
        cx: C,
        bucket: String,
        key: String,
        delta: u64,
    ) -> impl Future<Output = Result<u64, Error>> + Send;
    /// The values of `keys`, in order.
    fn get_many(
        &self,
        cx: C,
        bucket: String,
        keys: Vec<String>,
    ) -> impl Future<Output = Result<Items, Error>> + Send;
    /// Sets every pair.
    fn set_many(
        &self,
        cx: C,
        bucket: String,
        items: Vec<(String, Bytes)>,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    /// Deletes every key.
    fn delete_many(
        &self,
        cx: C,
        bucket: String,
        keys: Vec<String>,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}

/// Serves `handler` for store, atomics and batch on `server`.
///
/// Give the server [`param_checks`] first (`with_param_checks`): `set-many` takes a list of
/// tuples, which the generated decoder would otherwise size from a forged length prefix.
pub async fn serve<S, H>(server: &S, handler: H) -> Result<Invocations, ServeError>
where
    S: wrpc_transport::Serve,
    S::Context: Send + 'static,
    H: Handler<S::Context>,
{
    bindings::serve(server, wire::Wire(handler))
        .await
        .map_err(|error| ServeError {
            interface: "wrpc:keyvalue/{store,atomics,batch}@0.2.0-draft",
            error,
        })
}

/// The parameter checks of the functions whose parameters the generated decoders cannot
/// take from a hostile caller (`set-many`: a list of tuples).
pub fn param_checks() -> ParamChecks {
    ParamChecks::new().function::<(String, Vec<(String, Bytes)>)>(BATCH, "set-many")
}
