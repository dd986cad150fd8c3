//! The typed client: one method per function, the interface's error or the transport's.
//!
//! Streamed results (an object's data, a listing's names) arrive on nested streams that a
//! task of the caller's runtime receives while the caller reads them. The names of a listing
//! are decoded without reserving room for a chunk's count up front (see [`Names`]).

use futures::StreamExt as _;
use tokio_util::codec::Decoder;
use trellis_wrpc_nats::Incoming;
use trellis_wrpc_nats::wrpc_transport::{
    Decode, Deferred, DeferredFn, Index as _, Invoke, InvokeExt as _,
};

use super::bindings::wrpc::blobstore0_2_0::{blobstore as w, types as wt};
use super::bounded::BoundedBytes;
use super::{ByteStream, ContainerInfo, Done, NameStream, ObjectId, ObjectInfo};
use crate::CallError;
use crate::error::fold;

/// Calls a blobstore provider over `wrpc` (a linked client, a host's router), every call
/// with context `cx`.
pub struct Client<'a, I: Invoke> {
    wrpc: &'a I,
    cx: I::Context,
}

type Res<T> = Result<T, CallError<String>>;

fn wire_id(id: &ObjectId) -> wt::ObjectId {
    wt::ObjectId {
        container: id.container.clone(),
        object: id.object.clone(),
    }
}

/// Drives a call's remaining I/O (a streamed result arriving) on its own task, and ties
/// `done` to it: the returned [`Done`] says how the transfer ended — `done`'s own answer, or
/// the I/O's failure if that comes first. (A `future` result whose I/O fails never resolves
/// by itself: without this a caller would wait for it for ever, as when the provider cancels
/// the call part-way.)
fn drive<F>(io: Option<F>, done: Done, what: &'static str) -> Done
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let Some(io) = io else {
        return done;
    };
    let mut io = tokio::spawn(io);
    Box::pin(async move {
        let mut done = done;
        tokio::select! {
            answer = &mut done => answer,
            ended = &mut io => match ended {
                // All I/O is in, the answer with it.
                Ok(Ok(())) => done.await,
                Ok(Err(err)) => Err(format!("{what} failed: {err:#}")),
                Err(err) => Err(format!("{what} failed: its I/O task ended: {err}")),
            },
        }
    })
}

/// Lets a refused call's remaining I/O (if any) finish on its own task.
fn finish<F>(io: Option<F>)
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    if let Some(io) = io {
        tokio::spawn(io);
    }
}

impl<'a, I> Client<'a, I>
where
    I: Invoke<Incoming = Incoming>,
    I::Context: Clone,
{
    /// A client calling over `wrpc` with context `cx`.
    pub fn new(wrpc: &'a I, cx: I::Context) -> Self {
        Self { wrpc, cx }
    }

    /// `create-container`.
    pub async fn create_container(&self, name: &str) -> Res<()> {
        fold(w::create_container(self.wrpc, self.cx.clone(), name).await)
    }

    /// `container-exists`.
    pub async fn container_exists(&self, name: &str) -> Res<bool> {
        fold(w::container_exists(self.wrpc, self.cx.clone(), name).await)
    }

    /// `delete-container`.
    pub async fn delete_container(&self, name: &str) -> Res<()> {
        fold(w::delete_container(self.wrpc, self.cx.clone(), name).await)
    }

    /// `clear-container`.
    pub async fn clear_container(&self, name: &str) -> Res<()> {
        fold(w::clear_container(self.wrpc, self.cx.clone(), name).await)
    }

    /// `get-container-info`.
    pub async fn get_container_info(&self, name: &str) -> Res<ContainerInfo> {
        fold(w::get_container_info(self.wrpc, self.cx.clone(), name).await).map(|m| ContainerInfo {
            created_at: m.created_at,
        })
    }

    /// `copy-object`.
    pub async fn copy_object(&self, src: &ObjectId, dest: &ObjectId) -> Res<()> {
        let (s, d) = (wire_id(src), wire_id(dest));
        fold(w::copy_object(self.wrpc, self.cx.clone(), &s, &d).await)
    }

    /// `move-object`.
    pub async fn move_object(&self, src: &ObjectId, dest: &ObjectId) -> Res<()> {
        let (s, d) = (wire_id(src), wire_id(dest));
        fold(w::move_object(self.wrpc, self.cx.clone(), &s, &d).await)
    }

    /// `delete-object`.
    pub async fn delete_object(&self, id: &ObjectId) -> Res<()> {
        fold(w::delete_object(self.wrpc, self.cx.clone(), &wire_id(id)).await)
    }

    /// `delete-objects`.
    pub async fn delete_objects(&self, container: &str, objects: &[&str]) -> Res<()> {
        fold(w::delete_objects(self.wrpc, self.cx.clone(), container, objects).await)
    }

    /// `get-object-info`.
    pub async fn get_object_info(&self, id: &ObjectId) -> Res<ObjectInfo> {
        fold(w::get_object_info(self.wrpc, self.cx.clone(), &wire_id(id)).await).map(|m| {
            ObjectInfo {
                created_at: m.created_at,
                size: m.size,
            }
        })
    }

    /// `has-object`.
    pub async fn has_object(&self, id: &ObjectId) -> Res<bool> {
        fold(w::has_object(self.wrpc, self.cx.clone(), &wire_id(id)).await)
    }

    /// `get-container-data`: bytes `start` to `end` (inclusive) of `id` as they arrive, and
    /// how the transfer ended.
    pub async fn get_container_data(
        &self,
        id: &ObjectId,
        start: u64,
        end: u64,
    ) -> Res<(ByteStream, Done)> {
        // The data (field 0) and how the transfer ended (field 1) of the result's tuple; the
        // data read in bounded pieces.
        let paths: [&[Option<usize>]; 2] = [&[Some(0), Some(0)], &[Some(0), Some(1)]];
        let call = self
            .wrpc
            .invoke_values::<_, _, (Result<(BoundedBytes, Done), String>,)>(
                self.cx.clone(),
                super::INSTANCE,
                "get-container-data",
                (wire_id(id), start, end),
                paths,
            )
            .await;
        let ((res,), io) = call.map_err(CallError::Transport)?;
        match res {
            Ok((BoundedBytes(data), done)) => Ok((data, drive(io, done, "the download"))),
            Err(err) => {
                finish(io);
                Err(CallError::Interface(err))
            }
        }
    }

    /// `write-container-data`: stores `data` as `id`, and returns once the provider has
    /// stored it (or failed to).
    pub async fn write_container_data(&self, id: &ObjectId, data: ByteStream) -> Res<()> {
        let call = w::write_container_data(self.wrpc, self.cx.clone(), &wire_id(id), data).await;
        let (res, io) = call.map_err(CallError::Transport)?;
        match res {
            // The upload streams while the provider stores it; `done` is its answer, or
            // the upload's failure.
            Ok(done) => drive(io, done, "the upload")
                .await
                .map_err(CallError::Interface),
            Err(refused) => {
                // Refused before storing anything: the provider's reason is the answer, not
                // what the abandoned upload then runs into.
                drop(io);
                Err(CallError::Interface(refused))
            }
        }
    }

    /// `list-container-objects`: the names of `name`'s objects in chunks, and how the
    /// listing ended.
    pub async fn list_container_objects(
        &self,
        name: &str,
        limit: Option<u64>,
        offset: Option<u64>,
    ) -> Res<(NameStream, Done)> {
        let paths: [&[Option<usize>]; 2] = [&[Some(0), Some(0)], &[Some(0), Some(1)]];
        let call = self
            .wrpc
            .invoke_values::<_, _, (Result<(Names, ListDone), String>,)>(
                self.cx.clone(),
                super::INSTANCE,
                "list-container-objects",
                (name, limit, offset),
                paths,
            )
            .await;
        let ((res,), io) = call.map_err(CallError::Transport)?;
        match res {
            Ok((Names(names), done)) => Ok((names, drive(io, done, "the listing"))),
            Err(err) => {
                finish(io);
                Err(CallError::Interface(err))
            }
        }
    }
}

/// The end of a listing: its error, if it failed part-way.
type ListDone = Done;

/// The names `list-container-objects` streams, decoded without reserving room for a chunk's
/// names before they arrive: the generated decoder reserves as many as a pending chunk's
/// count says, so a provider answering with a forged count would abort the caller.
struct Names(NameStream);

/// The chunk decoder: a `list<string>` read name by name as the bytes come.
type NamesChunk = wasm_tokio::CoreVecDecoder<wasm_tokio::CoreNameDecoder>;

/// How many chunks of names wait for the component before the listing stops reading.
const NAMES_QUEUE: usize = 4;

/// Decodes [`Names`].
#[derive(Default)]
struct NamesDecoder {
    head: NamesChunk,
    deferred: Option<DeferredFn<wrpc_transport::Incoming<Incoming>>>,
}

impl Decoder for NamesDecoder {
    type Item = Names;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut bytes::BytesMut) -> std::io::Result<Option<Names>> {
        // A ready stream carries its names inline; a pending one is an empty list, its chunks
        // following on the value's nested stream.
        let Some(ready) = self.head.decode(src)? else {
            return Ok(None);
        };
        if !ready.is_empty() {
            return Ok(Some(Names(Box::pin(futures::stream::iter([ready])))));
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(NAMES_QUEUE);
        self.deferred = Some(Box::new(|r: wrpc_transport::Incoming<Incoming>, path| {
            Box::pin(async move {
                let r = if path.is_empty() {
                    r
                } else {
                    r.index(&path).map_err(std::io::Error::other)?
                };
                pump_names(r, tx).await
            })
        }));
        Ok(Some(Names(Box::pin(futures::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
        })))))
    }
}

impl Deferred<wrpc_transport::Incoming<Incoming>> for NamesDecoder {
    fn take_deferred(&mut self) -> Option<DeferredFn<wrpc_transport::Incoming<Incoming>>> {
        self.deferred.take()
    }
}

impl Decode<Incoming> for Names {
    type Decoder = NamesDecoder;
    type ListDecoder = wrpc_transport::ListDecoder<NamesDecoder, Incoming>;
}

/// Reads the chunks of a pending `stream<string>` from `r` (the empty one ends it) and sends
/// them to `tx`; a dropped receiver ends it without error.
async fn pump_names<R>(r: R, tx: tokio::sync::mpsc::Sender<Vec<String>>) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut chunks = tokio_util::codec::FramedRead::new(r, NamesChunk::default());
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        if chunk.is_empty() || tx.send(chunk).await.is_err() {
            return Ok(());
        }
    }
    Err(std::io::ErrorKind::UnexpectedEof.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks of names come through in order; a chunk claiming 2^32 - 1 names with few
    /// behind them fails the listing at the end of the stream (the generated decoder would
    /// reserve some 100 GB for them and abort the caller).
    #[tokio::test]
    async fn name_chunks_arrive_and_forged_counts_fail_the_listing() {
        let wire: &[u8] = b"\x02\x01a\x01b\x01\x01c\x00";
        let (tx, mut rx) = tokio::sync::mpsc::channel(NAMES_QUEUE);
        pump_names(wire, tx).await.expect("ends cleanly");
        assert_eq!(
            rx.recv().await,
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(rx.recv().await, Some(vec!["c".to_string()]));
        assert_eq!(rx.recv().await, None);

        let forged: &[u8] = b"\xff\xff\xff\xff\x0f\x01a";
        let (tx, _rx) = tokio::sync::mpsc::channel(NAMES_QUEUE);
        assert!(pump_names(forged, tx).await.is_err());
    }
}
