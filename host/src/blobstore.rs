//! `wasi:blobstore@0.2.0-draft` for components, carried over the lattice as the 1.x wire
//! interface `wrpc:blobstore/blobstore@0.2.0`, with object data streamed both ways.
//!
//! Memory stays bounded whatever the object size: an upload flows from the component's
//! output stream through a small in-memory pipe straight into the wRPC stream (the component
//! is paused while the pipe is full), and a download flows from the wRPC stream into the
//! component's input stream as it reads. Only `incoming-value-consume-sync`, which hands the
//! whole object to the component at once, collects it, up to [`MAX_SYNC_BODY`].

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use tokio::task::JoinHandle;
use tokio_util::io::{ReaderStream, StreamReader};
use wasmtime::component::Resource;
use wasmtime_wasi::p2::pipe::{AsyncReadStream, AsyncWriteStream};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

use tokio_util::codec::Decoder;
use trellis_wrpc_nats::Incoming;
use trellis_wrpc_nats::wrpc_transport::{Decode, Deferred, DeferredFn, Index as _, InvokeExt as _};

use crate::router::LinkRouter;
use crate::state::HostState;

mod guest {
    wasmtime::component::bindgen!({
        path: ["../wit/deps/io", "../wit/deps/blobstore"],
        world: "wasi:blobstore/imports@0.2.0-draft",
        imports: { default: async | trappable },
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:blobstore/container.container": super::Container,
            "wasi:blobstore/container.stream-object-names": super::ObjectNames,
            "wasi:blobstore/types.outgoing-value": super::OutgoingValue,
            "wasi:blobstore/types.incoming-value": super::IncomingValue,
        },
    });
}

use trellis_interfaces::blobstore::bindings as wire;

use guest::wasi::blobstore::{blobstore, container, types};
use wire::wrpc::blobstore0_2_0::blobstore as w;

/// Largest object `incoming-value-consume-sync` collects; larger ones must be read as a
/// stream (`incoming-value-consume-async`).
pub const MAX_SYNC_BODY: usize = 64 << 20;

/// Bytes buffered between a component writing an object and the upload.
const UPLOAD_PIPE: usize = 64 << 10;

type ByteStream = Pin<Box<dyn Stream<Item = Bytes> + Send>>;
type ResultFuture = Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// An open container: its name.
pub struct Container(String);

/// Object names being listed.
pub struct ObjectNames {
    names: Pin<Box<dyn Stream<Item = Vec<String>> + Send>>,
    pending: std::collections::VecDeque<String>,
    done: bool,
}

/// An object being written: the read end of its pipe until `write-data` starts the upload.
pub struct OutgoingValue {
    reader: Option<tokio::io::DuplexStream>,
    writer: Option<tokio::io::DuplexStream>,
    upload: Option<JoinHandle<Result<(), String>>>,
}

/// An object being read.
pub struct IncomingValue {
    data: ByteStream,
    done: ResultFuture,
    size: u64,
}

fn wire_id(container: &str, object: &str) -> w::ObjectId {
    w::ObjectId {
        container: container.to_string(),
        object: object.to_string(),
    }
}

/// Folds a wRPC call's outcome into the interface's `result<_, string>`.
fn fold<T>(res: anyhow::Result<Result<T, String>>) -> Result<T, String> {
    match res {
        Ok(r) => r,
        Err(err) => Err(format!("{err:#}")),
    }
}

impl HostState {
    fn container_name(&mut self, c: &Resource<Container>) -> wasmtime::Result<String> {
        Ok(self.table().get(c)?.0.clone())
    }
}

impl blobstore::Host for HostState {
    async fn create_container(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<Container>, String>> {
        match fold(w::create_container(self.router(), (), &name).await) {
            Ok(()) => Ok(Ok(self.table().push(Container(name))?)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn get_container(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<Container>, String>> {
        match fold(w::container_exists(self.router(), (), &name).await) {
            Ok(true) => Ok(Ok(self.table().push(Container(name))?)),
            Ok(false) => Ok(Err(format!("container {name:?} does not exist"))),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn delete_container(&mut self, name: String) -> wasmtime::Result<Result<(), String>> {
        Ok(fold(w::delete_container(self.router(), (), &name).await))
    }

    async fn container_exists(&mut self, name: String) -> wasmtime::Result<Result<bool, String>> {
        Ok(fold(w::container_exists(self.router(), (), &name).await))
    }

    async fn copy_object(
        &mut self,
        src: types::ObjectId,
        dest: types::ObjectId,
    ) -> wasmtime::Result<Result<(), String>> {
        let (s, d) = (
            wire_id(&src.container, &src.object),
            wire_id(&dest.container, &dest.object),
        );
        Ok(fold(w::copy_object(self.router(), (), &s, &d).await))
    }

    async fn move_object(
        &mut self,
        src: types::ObjectId,
        dest: types::ObjectId,
    ) -> wasmtime::Result<Result<(), String>> {
        let (s, d) = (
            wire_id(&src.container, &src.object),
            wire_id(&dest.container, &dest.object),
        );
        Ok(fold(w::move_object(self.router(), (), &s, &d).await))
    }
}

/// Starts the upload of `data` as `id`; resolves when the provider has stored it.
fn upload(router: LinkRouter, id: w::ObjectId, data: ByteStream) -> JoinHandle<Result<(), String>> {
    tokio::spawn(async move {
        let (res, io) = match w::write_container_data(&router, (), &id, data).await {
            Ok(v) => v,
            Err(err) => return Err(format!("{err:#}")),
        };
        let io = io.map(tokio::spawn);
        let done = match res {
            Ok(done) => done.await,
            Err(e) => Err(e),
        };
        if let Some(io) = io {
            match io.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return Err(format!("upload failed: {err:#}")),
                Err(err) => return Err(format!("upload task failed: {err}")),
            }
        }
        done
    })
}

impl container::HostContainer for HostState {
    async fn name(&mut self, c: Resource<Container>) -> wasmtime::Result<Result<String, String>> {
        Ok(Ok(self.container_name(&c)?))
    }

    async fn info(
        &mut self,
        c: Resource<Container>,
    ) -> wasmtime::Result<Result<types::ContainerMetadata, String>> {
        let name = self.container_name(&c)?;
        Ok(
            fold(w::get_container_info(self.router(), (), &name).await).map(|m| {
                types::ContainerMetadata {
                    name,
                    created_at: m.created_at,
                }
            }),
        )
    }

    async fn get_data(
        &mut self,
        c: Resource<Container>,
        name: String,
        start: u64,
        end: u64,
    ) -> wasmtime::Result<Result<Resource<IncomingValue>, String>> {
        let container = self.container_name(&c)?;
        let id = wire_id(&container, &name);
        let size = match fold(w::get_object_info(self.router(), (), &id).await) {
            Ok(info) => info.size.min(end.saturating_add(1)).saturating_sub(start),
            Err(e) => return Ok(Err(e)),
        };
        let (res, io) = match w::get_container_data(self.router(), (), &id, start, end).await {
            Ok(v) => v,
            Err(err) => return Ok(Err(format!("{err:#}"))),
        };
        if let Some(io) = io {
            tokio::spawn(async move {
                if let Err(err) = io.await {
                    tracing::debug!(error = %format!("{err:#}"), "blob download stream ended with an error");
                }
            });
        }
        match res {
            Ok((data, done)) => Ok(Ok(self.table().push(IncomingValue { data, done, size })?)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn write_data(
        &mut self,
        c: Resource<Container>,
        name: String,
        value: Resource<OutgoingValue>,
    ) -> wasmtime::Result<Result<(), String>> {
        let container = self.container_name(&c)?;
        let router = self.router().clone();
        let value = self.table().get_mut(&value)?;
        let Some(reader) = value.reader.take() else {
            return Ok(Err("this outgoing value is already being written".into()));
        };
        let data: ByteStream =
            Box::pin(ReaderStream::new(reader).filter_map(|r| async move { r.ok() }));
        value.upload = Some(upload(router, wire_id(&container, &name), data));
        Ok(Ok(()))
    }

    async fn list_objects(
        &mut self,
        c: Resource<Container>,
    ) -> wasmtime::Result<Result<Resource<ObjectNames>, String>> {
        let name = self.container_name(&c)?;
        // `w::list_container_objects`, with the names decoded by `Names`.
        let paths: [&[Option<usize>]; 2] = [&[Some(0), Some(0)], &[Some(0), Some(1)]];
        let call = self
            .router()
            .invoke_values::<_, _, (Result<(Names, ListDone), String>,)>(
                (),
                "wrpc:blobstore/blobstore@0.2.0",
                "list-container-objects",
                (name.as_str(), None::<u64>, None::<u64>),
                paths,
            )
            .await;
        let ((res,), io) = match call {
            Ok(v) => v,
            Err(err) => return Ok(Err(format!("{err:#}"))),
        };
        if let Some(io) = io {
            tokio::spawn(async move {
                let _ = io.await;
            });
        }
        match res {
            Ok((Names(names), _done)) => Ok(Ok(self.table().push(ObjectNames {
                names,
                pending: Default::default(),
                done: false,
            })?)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn delete_object(
        &mut self,
        c: Resource<Container>,
        name: String,
    ) -> wasmtime::Result<Result<(), String>> {
        let container = self.container_name(&c)?;
        Ok(fold(
            w::delete_object(self.router(), (), &wire_id(&container, &name)).await,
        ))
    }

    async fn delete_objects(
        &mut self,
        c: Resource<Container>,
        names: Vec<String>,
    ) -> wasmtime::Result<Result<(), String>> {
        let container = self.container_name(&c)?;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Ok(fold(
            w::delete_objects(self.router(), (), &container, &names).await,
        ))
    }

    async fn has_object(
        &mut self,
        c: Resource<Container>,
        name: String,
    ) -> wasmtime::Result<Result<bool, String>> {
        let container = self.container_name(&c)?;
        Ok(fold(
            w::has_object(self.router(), (), &wire_id(&container, &name)).await,
        ))
    }

    async fn object_info(
        &mut self,
        c: Resource<Container>,
        name: String,
    ) -> wasmtime::Result<Result<types::ObjectMetadata, String>> {
        let container = self.container_name(&c)?;
        let res = w::get_object_info(self.router(), (), &wire_id(&container, &name)).await;
        Ok(fold(res).map(|m| types::ObjectMetadata {
            name,
            container,
            created_at: m.created_at,
            size: m.size,
        }))
    }

    async fn clear(&mut self, c: Resource<Container>) -> wasmtime::Result<Result<(), String>> {
        let name = self.container_name(&c)?;
        Ok(fold(w::clear_container(self.router(), (), &name).await))
    }

    async fn drop(&mut self, c: Resource<Container>) -> wasmtime::Result<()> {
        self.table().delete(c)?;
        Ok(())
    }
}

impl container::HostStreamObjectNames for HostState {
    async fn read_stream_object_names(
        &mut self,
        names: Resource<ObjectNames>,
        len: u64,
    ) -> wasmtime::Result<Result<(Vec<String>, bool), String>> {
        let names = self.table().get_mut(&names)?;
        let want = usize::try_from(len).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        while out.len() < want {
            if let Some(n) = names.pending.pop_front() {
                out.push(n);
                continue;
            }
            if names.done {
                break;
            }
            match names.names.next().await {
                Some(chunk) => names.pending.extend(chunk),
                None => names.done = true,
            }
        }
        let end = names.done && names.pending.is_empty();
        Ok(Ok((out, end)))
    }

    async fn skip_stream_object_names(
        &mut self,
        names: Resource<ObjectNames>,
        num: u64,
    ) -> wasmtime::Result<Result<(u64, bool), String>> {
        let res = self.read_stream_object_names(names, num).await?;
        Ok(res.map(|(skipped, end)| (skipped.len() as u64, end)))
    }

    async fn drop(&mut self, names: Resource<ObjectNames>) -> wasmtime::Result<()> {
        self.table().delete(names)?;
        Ok(())
    }
}

impl types::Host for HostState {}

impl container::Host for HostState {}

impl types::HostOutgoingValue for HostState {
    async fn new_outgoing_value(&mut self) -> wasmtime::Result<Resource<OutgoingValue>> {
        let (writer, reader) = tokio::io::duplex(UPLOAD_PIPE);
        Ok(self.table().push(OutgoingValue {
            reader: Some(reader),
            writer: Some(writer),
            upload: None,
        })?)
    }

    async fn outgoing_value_write_body(
        &mut self,
        value: Resource<OutgoingValue>,
    ) -> wasmtime::Result<Result<Resource<DynOutputStream>, ()>> {
        let Some(writer) = self.table().get_mut(&value)?.writer.take() else {
            return Ok(Err(()));
        };
        let stream: DynOutputStream = Box::new(AsyncWriteStream::new(UPLOAD_PIPE, writer));
        Ok(Ok(self.table().push(stream)?))
    }

    async fn finish(
        &mut self,
        value: Resource<OutgoingValue>,
    ) -> wasmtime::Result<Result<(), String>> {
        let value = self.table().delete(value)?;
        // The component dropped its output stream (the WIT requires it before `finish`), so
        // the pipe ends and the upload can complete.
        drop(value.writer);
        match value.upload {
            Some(upload) => Ok(upload
                .await
                .unwrap_or_else(|e| Err(format!("upload task failed: {e}")))),
            None => Ok(Err(
                "the value was never written to a container (write-data)".into(),
            )),
        }
    }

    async fn drop(&mut self, value: Resource<OutgoingValue>) -> wasmtime::Result<()> {
        self.table().delete(value)?;
        Ok(())
    }
}

impl types::HostIncomingValue for HostState {
    async fn incoming_value_consume_sync(
        &mut self,
        value: Resource<IncomingValue>,
    ) -> wasmtime::Result<Result<Vec<u8>, String>> {
        let IncomingValue {
            mut data,
            done,
            size,
        } = self.table().delete(value)?;
        if size > MAX_SYNC_BODY as u64 {
            return Ok(Err(format!(
                "object is {size} bytes, more than {MAX_SYNC_BODY} for a synchronous read; read it as a stream"
            )));
        }
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(MAX_SYNC_BODY));
        while let Some(chunk) = data.next().await {
            if out.len() + chunk.len() > MAX_SYNC_BODY {
                return Ok(Err(format!(
                    "object is larger than {MAX_SYNC_BODY} bytes; read it as a stream"
                )));
            }
            out.extend_from_slice(&chunk);
        }
        match done.await {
            Ok(()) => Ok(Ok(out)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn incoming_value_consume_async(
        &mut self,
        value: Resource<IncomingValue>,
    ) -> wasmtime::Result<Result<Resource<DynInputStream>, String>> {
        let IncomingValue { data, .. } = self.table().delete(value)?;
        let reader = StreamReader::new(data.map(Ok::<_, std::io::Error>));
        let stream: DynInputStream = Box::new(AsyncReadStream::new(reader));
        Ok(Ok(self.table().push(stream)?))
    }

    async fn size(&mut self, value: Resource<IncomingValue>) -> wasmtime::Result<u64> {
        Ok(self.table().get(&value)?.size)
    }

    async fn drop(&mut self, value: Resource<IncomingValue>) -> wasmtime::Result<()> {
        self.table().delete(value)?;
        Ok(())
    }
}

/// Adds `wasi:blobstore` to `linker` (wasi:io comes from wasmtime-wasi).
pub(crate) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<HostState>,
) -> wasmtime::Result<()> {
    type Me = wasmtime::component::HasSelf<HostState>;
    types::add_to_linker::<HostState, Me>(linker, |s| s)?;
    container::add_to_linker::<HostState, Me>(linker, |s| s)?;
    blobstore::add_to_linker::<HostState, Me>(linker, |s| s)
}

/// The end of a listing: its error, if it failed part-way.
type ListDone = Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// The names `list-container-objects` streams, decoded without reserving room for a chunk's
/// names before they arrive: the generated decoder reserves as many as a pending chunk's
/// count says, so a provider answering with a forged count would abort the host.
struct Names(Pin<Box<dyn Stream<Item = Vec<String>> + Send>>);

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
    /// reserve some 100 GB for them and abort the host).
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
