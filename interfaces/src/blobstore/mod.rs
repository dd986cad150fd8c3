//! `wasi:blobstore` on the wire: `wrpc:blobstore/blobstore@0.2.0`, what wasmCloud 1.x hosts
//! send for `wasi:blobstore@0.2.0-draft`.
//!
//! A provider implements [`Handler`] and serves it with [`serve`]; a host calls a provider
//! through [`Client`]. Object data moves as streams of [`Bytes`] both ways, never whole, in
//! bounded memory: an upload arrives as an [`Upload`] the handler consumes at its pace (read
//! in bounded pieces; its last item an error if the upload failed), and a download is a
//! stream the handler produces, pulled only as fast as the caller reads it (paced), and read
//! by the client in bounded pieces. Errors are the interface's plain strings.

pub mod bindings;
mod bounded;
mod client;
mod upload;
mod wire;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use trellis_wrpc_nats::wire_shape::ParamChecks;

pub use client::Client;

/// The wire instance of the interface.
pub const INSTANCE: &str = "wrpc:blobstore/blobstore@0.2.0";

use crate::{Invocations, ServeError};

/// The call deadline blobstore providers serve with (`Provider::call_deadline`): a call
/// moves a whole object, which takes as long as its size and the backend make it, so no
/// short total applies. A transfer that stalls is cut by the transport's idle timeout
/// instead (the caller's upload going silent, or its download not being read).
pub const CALL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Object data, in pieces.
pub type ByteStream = Pin<Box<dyn Stream<Item = Bytes> + Send>>;
/// An upload's data, in pieces; an `Err` item (the last) says the upload failed part-way
/// (the caller went away, or its stream was malformed): the object must not be stored.
pub type Upload = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;
/// Object names, in chunks.
pub type NameStream = Pin<Box<dyn Stream<Item = Vec<String>> + Send>>;
/// How a streamed transfer ended: `Err` when it failed part-way (the stream then ends early).
pub type Done = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Where an object is: its container and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    /// The container.
    pub container: String,
    /// The object's name in it.
    pub object: String,
}

impl ObjectId {
    /// The object `object` of `container`.
    pub fn new(container: impl Into<String>, object: impl Into<String>) -> Self {
        Self {
            container: container.into(),
            object: object.into(),
        }
    }
}

/// What the interface says of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerInfo {
    /// When it was created, in seconds since the Unix epoch.
    pub created_at: u64,
}

/// What the interface says of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectInfo {
    /// When it was created, in seconds since the Unix epoch.
    pub created_at: u64,
    /// Its size in bytes.
    pub size: u64,
}

/// What a blobstore provider implements, for calls with context `C` (the provider SDK's
/// `CallContext`: the caller and its link). Every error is the interface's string, with the
/// reason.
pub trait Handler<C: Send + 'static>: Clone + Send + Sync + 'static {
    /// Creates container `name`.
    fn create_container(
        &self,
        cx: C,
        name: String,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Whether container `name` exists.
    fn container_exists(
        &self,
        cx: C,
        name: String,
    ) -> impl Future<Output = Result<bool, String>> + Send;
    /// Deletes container `name` and everything in it.
    fn delete_container(
        &self,
        cx: C,
        name: String,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Deletes every object of container `name`, keeping the container.
    fn clear_container(
        &self,
        cx: C,
        name: String,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// What the interface says of container `name`.
    fn get_container_info(
        &self,
        cx: C,
        name: String,
    ) -> impl Future<Output = Result<ContainerInfo, String>> + Send;
    /// The names of container `name`'s objects from `offset`, at most `limit` of them, in
    /// chunks, and how the listing ended.
    fn list_container_objects(
        &self,
        cx: C,
        name: String,
        limit: Option<u64>,
        offset: Option<u64>,
    ) -> impl Future<Output = Result<(NameStream, Done), String>> + Send;
    /// Copies `src` to `dest` (across containers too).
    fn copy_object(
        &self,
        cx: C,
        src: ObjectId,
        dest: ObjectId,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Moves `src` to `dest` (across containers too).
    fn move_object(
        &self,
        cx: C,
        src: ObjectId,
        dest: ObjectId,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Deletes object `id`; deleting an absent object succeeds.
    fn delete_object(&self, cx: C, id: ObjectId)
    -> impl Future<Output = Result<(), String>> + Send;
    /// Deletes the objects `objects` of `container`.
    fn delete_objects(
        &self,
        cx: C,
        container: String,
        objects: Vec<String>,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Bytes `start` to `end` of object `id`, **both inclusive** (as the WIT defines the
    /// range), as a stream, and how the transfer ended.
    fn get_container_data(
        &self,
        cx: C,
        id: ObjectId,
        start: u64,
        end: u64,
    ) -> impl Future<Output = Result<(ByteStream, Done), String>> + Send;
    /// What the interface says of object `id`.
    fn get_object_info(
        &self,
        cx: C,
        id: ObjectId,
    ) -> impl Future<Output = Result<ObjectInfo, String>> + Send;
    /// Whether object `id` exists.
    fn has_object(&self, cx: C, id: ObjectId) -> impl Future<Output = Result<bool, String>> + Send;
    /// Stores `data` as object `id`. Answers as soon as the upload is accepted; the returned
    /// future says when it is stored (or why not). A reader must never see half an object,
    /// and an upload whose stream ends with an error must not be stored.
    fn write_container_data(
        &self,
        cx: C,
        id: ObjectId,
        data: Upload,
    ) -> impl Future<Output = Result<Done, String>> + Send;
}

/// How many pieces a download reads ahead of its caller (see [`download`]).
const READ_AHEAD: usize = 8;

/// A download made of `pieces`: their bytes until the first error, and a [`Done`] that says
/// whether one came (the wire has no error in a byte stream; its `future<result>` says it).
///
/// The pieces are pulled by a task of their own, at most [`READ_AHEAD`] ahead of the caller:
/// reading the backend (a socket, a file) then overlaps sending to the caller instead of
/// taking turns with it, while a stalled caller still stalls the backend within a few
/// pieces. A caller that goes away ends the task and drops the backend's stream.
pub fn download<S>(pieces: S) -> (ByteStream, Done)
where
    S: Stream<Item = Result<Bytes, String>> + Send + 'static,
{
    let (ahead, mut next) = tokio::sync::mpsc::channel(READ_AHEAD);
    tokio::spawn(async move {
        let mut pieces = Box::pin(pieces);
        loop {
            let piece = tokio::select! {
                piece = futures::StreamExt::next(&mut pieces) => piece,
                () = ahead.closed() => break, // the caller went away mid-wait
            };
            let Some(piece) = piece else { break };
            let last = piece.is_err();
            if ahead.send(piece).await.is_err() || last {
                break;
            }
        }
    });
    let pieces = futures::stream::poll_fn(move |cx| next.poll_recv(cx));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
    let state = (Box::pin(pieces), Some(done_tx));
    let data = futures::stream::unfold(state, |(mut pieces, mut done)| async move {
        let outcome = match futures::StreamExt::next(&mut pieces).await {
            Some(Ok(bytes)) => return Some((bytes, (pieces, done))),
            Some(Err(err)) => Err(err),
            None => Ok(()),
        };
        if let Some(tx) = done.take() {
            let _ = tx.send(outcome);
        }
        None
    });
    // A reader that stops early drops the sender: nothing failed.
    let done: Done = Box::pin(async move { done_rx.await.unwrap_or(Ok(())) });
    (Box::pin(data), done)
}

/// A blobstore addressed by plain names: what a provider implements when each call only
/// needs its link's store (a bucket service, a root directory). [`ByLink`] turns the
/// provider's per-link lookup ([`Stores`]) into a [`Handler`].
///
/// The operations are those of [`Handler`], without the call context; `copy` moves when
/// `then_delete` is set; `write` answers once the object is stored.
pub trait Store: Send + Sync + 'static {
    /// Creates container `name` (succeeds when it exists).
    fn create_container(&self, name: &str) -> impl Future<Output = Result<(), String>> + Send;
    /// Whether container `name` exists.
    fn container_exists(&self, name: &str) -> impl Future<Output = Result<bool, String>> + Send;
    /// Deletes container `name` and everything in it.
    fn delete_container(&self, name: &str) -> impl Future<Output = Result<(), String>> + Send;
    /// Deletes every object of container `name`.
    fn clear_container(&self, name: &str) -> impl Future<Output = Result<(), String>> + Send;
    /// What the interface says of container `name`.
    fn container_info(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<ContainerInfo, String>> + Send;
    /// The names of `name`'s objects from `offset`, at most `limit`, in chunks.
    fn list(
        &self,
        name: &str,
        limit: Option<u64>,
        offset: Option<u64>,
    ) -> impl Future<Output = Result<(NameStream, Done), String>> + Send;
    /// Copies (or, `then_delete`, moves) object `src` to `dest`: (container, name) each.
    fn copy(
        &self,
        src: (&str, &str),
        dest: (&str, &str),
        then_delete: bool,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Deletes an object; deleting an absent one succeeds.
    fn delete_object(
        &self,
        container: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Deletes the objects `names` of `container`.
    fn delete_objects(
        &self,
        container: &str,
        names: Vec<String>,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Bytes `start..=end` of an object as a stream, and how the transfer ended.
    fn read(
        &self,
        container: &str,
        name: &str,
        start: u64,
        end: u64,
    ) -> impl Future<Output = Result<(ByteStream, Done), String>> + Send;
    /// What the interface says of an object.
    fn object_info(
        &self,
        container: &str,
        name: &str,
    ) -> impl Future<Output = Result<ObjectInfo, String>> + Send;
    /// Whether an object exists.
    fn has_object(
        &self,
        container: &str,
        name: &str,
    ) -> impl Future<Output = Result<bool, String>> + Send;
    /// Stores `data` as an object; an upload ending with an error stores nothing.
    fn write(
        &self,
        container: &str,
        name: &str,
        data: Upload,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Whether the backend can be used now (a provider's health): by default, whether it
    /// answers whether a container exists — any answer is one; a connection or credentials
    /// failure is the reason it cannot.
    fn reachable(&self) -> impl Future<Output = Result<(), String>> + Send {
        async { self.container_exists(HEALTH_PROBE).await.map(drop) }
    }
}

/// The container name [`Store::reachable`] asks about (it need not exist).
pub const HEALTH_PROBE: &str = "trellis-health-probe";

/// How long [`reachability`] waits for one store.
pub const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether each of `stores` (by whatever key a provider keeps them, its links) can be used
/// now, asked at once, each within [`HEALTH_TIMEOUT`]: what a provider's health is made of.
pub async fn reachability<K, S: Store>(
    stores: Vec<(K, std::sync::Arc<S>)>,
) -> Vec<(K, Result<(), String>)> {
    let checks = stores.into_iter().map(|(key, store)| async move {
        let answer = tokio::time::timeout(HEALTH_TIMEOUT, store.reachable()).await;
        let answer = answer.unwrap_or_else(|_| {
            Err(format!(
                "the backend did not answer within {HEALTH_TIMEOUT:?}"
            ))
        });
        (key, answer)
    });
    futures::future::join_all(checks).await
}

/// How a provider finds the [`Store`] of a call (its link's).
pub trait Stores<C>: Clone + Send + Sync + 'static {
    /// The store type.
    type Store: Store;
    /// The store of the call with context `cx`, or why there is none.
    fn store(&self, cx: &C) -> Result<std::sync::Arc<Self::Store>, String>;
}

/// A [`Handler`] made of a provider's [`Stores`]: each call runs on its link's store.
#[derive(Clone)]
pub struct ByLink<S>(pub S);

impl<C: Send + 'static, S: Stores<C>> Handler<C> for ByLink<S> {
    async fn create_container(&self, cx: C, name: String) -> Result<(), String> {
        self.0.store(&cx)?.create_container(&name).await
    }

    async fn container_exists(&self, cx: C, name: String) -> Result<bool, String> {
        self.0.store(&cx)?.container_exists(&name).await
    }

    async fn delete_container(&self, cx: C, name: String) -> Result<(), String> {
        self.0.store(&cx)?.delete_container(&name).await
    }

    async fn clear_container(&self, cx: C, name: String) -> Result<(), String> {
        self.0.store(&cx)?.clear_container(&name).await
    }

    async fn get_container_info(&self, cx: C, name: String) -> Result<ContainerInfo, String> {
        self.0.store(&cx)?.container_info(&name).await
    }

    async fn list_container_objects(
        &self,
        cx: C,
        name: String,
        limit: Option<u64>,
        offset: Option<u64>,
    ) -> Result<(NameStream, Done), String> {
        self.0.store(&cx)?.list(&name, limit, offset).await
    }

    async fn copy_object(&self, cx: C, src: ObjectId, dest: ObjectId) -> Result<(), String> {
        let (src, dest) = (
            (&*src.container, &*src.object),
            (&*dest.container, &*dest.object),
        );
        self.0.store(&cx)?.copy(src, dest, false).await
    }

    async fn move_object(&self, cx: C, src: ObjectId, dest: ObjectId) -> Result<(), String> {
        let (src, dest) = (
            (&*src.container, &*src.object),
            (&*dest.container, &*dest.object),
        );
        self.0.store(&cx)?.copy(src, dest, true).await
    }

    async fn delete_object(&self, cx: C, id: ObjectId) -> Result<(), String> {
        self.0
            .store(&cx)?
            .delete_object(&id.container, &id.object)
            .await
    }

    async fn delete_objects(
        &self,
        cx: C,
        container: String,
        objects: Vec<String>,
    ) -> Result<(), String> {
        self.0.store(&cx)?.delete_objects(&container, objects).await
    }

    async fn get_container_data(
        &self,
        cx: C,
        id: ObjectId,
        start: u64,
        end: u64,
    ) -> Result<(ByteStream, Done), String> {
        self.0
            .store(&cx)?
            .read(&id.container, &id.object, start, end)
            .await
    }

    async fn get_object_info(&self, cx: C, id: ObjectId) -> Result<ObjectInfo, String> {
        self.0
            .store(&cx)?
            .object_info(&id.container, &id.object)
            .await
    }

    async fn has_object(&self, cx: C, id: ObjectId) -> Result<bool, String> {
        self.0
            .store(&cx)?
            .has_object(&id.container, &id.object)
            .await
    }

    async fn write_container_data(
        &self,
        cx: C,
        id: ObjectId,
        data: Upload,
    ) -> Result<Done, String> {
        // The upload runs as the data comes; the `Done` says when it is stored.
        let store = self.0.store(&cx)?;
        Ok(Box::pin(async move {
            store.write(&id.container, &id.object, data).await
        }))
    }
}

/// Serves `handler` on `server`: the generated bindings, with `write-container-data` read
/// by hand (see `upload.rs`) and downloads paced to the caller.
pub async fn serve<S, H>(server: &S, handler: H) -> Result<Invocations, ServeError>
where
    S: wrpc_transport::Serve<
            Incoming = trellis_wrpc_nats::Incoming,
            Outgoing = trellis_wrpc_nats::Outgoing,
        >,
    S::Context: trellis_wrpc_nats::CallPacer + Send + 'static,
    H: Handler<S::Context>,
{
    let failed = |error| ServeError {
        interface: INSTANCE,
        error,
    };
    let generated = bindings::serve(server, wire::Wire(handler.clone()))
        .await
        .map_err(failed)?;
    upload::serve(server, handler, generated)
        .await
        .map_err(failed)
}

/// The parameter checks of the interface: none are needed (no function takes a list of
/// tuples, records or options, which the generated decoders would size from a forged length
/// prefix), so this is empty; providers pass it all the same, so a check added to the
/// interface reaches every provider.
pub fn param_checks() -> ParamChecks {
    ParamChecks::new()
}
