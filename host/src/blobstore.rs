//! `wasi:blobstore@0.2.0-draft` for components, carried over the lattice as the 1.x wire
//! interface `wrpc:blobstore/blobstore@0.2.0`, with object data streamed both ways.
//!
//! Objects stream both ways: an upload flows from the component's output stream through a
//! small in-memory pipe into the wRPC stream (the component is paused while the pipe is
//! full), and a download flows from the wRPC stream into the component's input stream as it
//! reads. (What the wRPC stream itself buffers is `wrpc-transport`'s generated decoder's:
//! up to 128 of the sender's chunks; bounding it is part of the blobstore providers' work.) Only `incoming-value-consume-sync`, which hands the
//! whole object to the component at once, collects it, up to [`MAX_SYNC_BODY`].

use futures::StreamExt as _;
use tokio::task::JoinHandle;
use tokio_util::io::{ReaderStream, StreamReader};
use wasmtime::component::Resource;
use wasmtime_wasi::p2::pipe::{AsyncReadStream, AsyncWriteStream};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

use trellis_interfaces::CallError;
use trellis_interfaces::blobstore::{
    self as blobstore_wire, ByteStream, Done, NameStream, ObjectId,
};

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

use guest::wasi::blobstore::{blobstore, container, types};

/// Largest object `incoming-value-consume-sync` collects; larger ones must be read as a
/// stream (`incoming-value-consume-async`).
pub const MAX_SYNC_BODY: usize = 64 << 20;

/// Bytes buffered between a component writing an object and the upload.
const UPLOAD_PIPE: usize = 64 << 10;

/// An open container: its name.
pub struct Container(String);

/// Object names being listed.
pub struct ObjectNames {
    names: NameStream,
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
    done: Done,
    size: u64,
}

/// A failed call as the component sees it: the interface's string, or the transport's
/// reason.
fn fold<T>(res: Result<T, CallError<String>>) -> Result<T, String> {
    res.map_err(|e| match e {
        CallError::Interface(e) => e,
        CallError::Transport(e) => format!("{e:#}"),
    })
}

fn object_id(c: &types::ObjectId) -> ObjectId {
    ObjectId::new(&c.container, &c.object)
}

impl HostState {
    fn container_name(&mut self, c: &Resource<Container>) -> wasmtime::Result<String> {
        Ok(self.table().get(c)?.0.clone())
    }

    /// The blobstore client over the component's link for `wasi:blobstore`.
    fn blobs(&self) -> blobstore_wire::Client<'_, LinkRouter> {
        blobstore_wire::Client::new(self.router(), ())
    }
}

impl blobstore::Host for HostState {
    async fn create_container(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<Container>, String>> {
        match fold(self.blobs().create_container(&name).await) {
            Ok(()) => Ok(Ok(self.table().push(Container(name))?)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn get_container(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<Container>, String>> {
        match fold(self.blobs().container_exists(&name).await) {
            Ok(true) => Ok(Ok(self.table().push(Container(name))?)),
            Ok(false) => Ok(Err(format!("container {name:?} does not exist"))),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn delete_container(&mut self, name: String) -> wasmtime::Result<Result<(), String>> {
        Ok(fold(self.blobs().delete_container(&name).await))
    }

    async fn container_exists(&mut self, name: String) -> wasmtime::Result<Result<bool, String>> {
        Ok(fold(self.blobs().container_exists(&name).await))
    }

    async fn copy_object(
        &mut self,
        src: types::ObjectId,
        dest: types::ObjectId,
    ) -> wasmtime::Result<Result<(), String>> {
        let (s, d) = (object_id(&src), object_id(&dest));
        Ok(fold(self.blobs().copy_object(&s, &d).await))
    }

    async fn move_object(
        &mut self,
        src: types::ObjectId,
        dest: types::ObjectId,
    ) -> wasmtime::Result<Result<(), String>> {
        let (s, d) = (object_id(&src), object_id(&dest));
        Ok(fold(self.blobs().move_object(&s, &d).await))
    }
}

/// Starts the upload of `data` as `id`; resolves when the provider has stored it.
fn upload(router: LinkRouter, id: ObjectId, data: ByteStream) -> JoinHandle<Result<(), String>> {
    tokio::spawn(async move {
        let client = blobstore_wire::Client::new(&router, ());
        fold(client.write_container_data(&id, data).await)
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
            fold(self.blobs().get_container_info(&name).await).map(|m| types::ContainerMetadata {
                name,
                created_at: m.created_at,
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
        let id = ObjectId::new(container, name);
        let size = match fold(self.blobs().get_object_info(&id).await) {
            Ok(info) => info.size.min(end.saturating_add(1)).saturating_sub(start),
            Err(e) => return Ok(Err(e)),
        };
        match fold(self.blobs().get_container_data(&id, start, end).await) {
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
        value.upload = Some(upload(router, ObjectId::new(container, name), data));
        Ok(Ok(()))
    }

    async fn list_objects(
        &mut self,
        c: Resource<Container>,
    ) -> wasmtime::Result<Result<Resource<ObjectNames>, String>> {
        let name = self.container_name(&c)?;
        match fold(self.blobs().list_container_objects(&name, None, None).await) {
            Ok((names, _done)) => Ok(Ok(self.table().push(ObjectNames {
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
        let id = ObjectId::new(container, name);
        Ok(fold(self.blobs().delete_object(&id).await))
    }

    async fn delete_objects(
        &mut self,
        c: Resource<Container>,
        names: Vec<String>,
    ) -> wasmtime::Result<Result<(), String>> {
        let container = self.container_name(&c)?;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Ok(fold(self.blobs().delete_objects(&container, &names).await))
    }

    async fn has_object(
        &mut self,
        c: Resource<Container>,
        name: String,
    ) -> wasmtime::Result<Result<bool, String>> {
        let container = self.container_name(&c)?;
        let id = ObjectId::new(container, name);
        Ok(fold(self.blobs().has_object(&id).await))
    }

    async fn object_info(
        &mut self,
        c: Resource<Container>,
        name: String,
    ) -> wasmtime::Result<Result<types::ObjectMetadata, String>> {
        let container = self.container_name(&c)?;
        let res = self
            .blobs()
            .get_object_info(&ObjectId::new(&container, &name))
            .await;
        Ok(fold(res).map(|m| types::ObjectMetadata {
            name,
            container,
            created_at: m.created_at,
            size: m.size,
        }))
    }

    async fn clear(&mut self, c: Resource<Container>) -> wasmtime::Result<Result<(), String>> {
        let name = self.container_name(&c)?;
        Ok(fold(self.blobs().clear_container(&name).await))
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
