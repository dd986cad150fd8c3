//! The generated serving trait, implemented for any [`Handler`]: conversions between the
//! wire records and the plain ones, nothing else.

use super::bindings::exports::wrpc::blobstore0_2_0::blobstore as w;
use super::bindings::wrpc::blobstore0_2_0::types as wt;
use trellis_wrpc_nats::CallPacer;

use super::{ByteStream, Done, Handler, NameStream, ObjectId};

/// A [`Handler`] as the generated bindings serve it.
#[derive(Clone)]
pub(super) struct Wire<H>(pub(super) H);

type WireResult<T> = anyhow::Result<Result<T, String>>;

fn id(id: wt::ObjectId) -> ObjectId {
    ObjectId {
        container: id.container,
        object: id.object,
    }
}

impl<C: CallPacer + Send + 'static, H: Handler<C>> w::Handler<C> for Wire<H> {
    async fn clear_container(&self, cx: C, name: String) -> WireResult<()> {
        Ok(self.0.clear_container(cx, name).await)
    }

    async fn container_exists(&self, cx: C, name: String) -> WireResult<bool> {
        Ok(self.0.container_exists(cx, name).await)
    }

    async fn create_container(&self, cx: C, name: String) -> WireResult<()> {
        Ok(self.0.create_container(cx, name).await)
    }

    async fn delete_container(&self, cx: C, name: String) -> WireResult<()> {
        Ok(self.0.delete_container(cx, name).await)
    }

    async fn get_container_info(&self, cx: C, name: String) -> WireResult<wt::ContainerMetadata> {
        let info = self.0.get_container_info(cx, name).await;
        Ok(info.map(|i| wt::ContainerMetadata {
            created_at: i.created_at,
        }))
    }

    async fn list_container_objects(
        &self,
        cx: C,
        name: String,
        limit: Option<u64>,
        offset: Option<u64>,
    ) -> WireResult<(NameStream, Done)> {
        Ok(self.0.list_container_objects(cx, name, limit, offset).await)
    }

    async fn copy_object(&self, cx: C, src: wt::ObjectId, dest: wt::ObjectId) -> WireResult<()> {
        Ok(self.0.copy_object(cx, id(src), id(dest)).await)
    }

    async fn delete_object(&self, cx: C, object: wt::ObjectId) -> WireResult<()> {
        Ok(self.0.delete_object(cx, id(object)).await)
    }

    async fn delete_objects(
        &self,
        cx: C,
        container: String,
        objects: Vec<String>,
    ) -> WireResult<()> {
        Ok(self.0.delete_objects(cx, container, objects).await)
    }

    async fn get_container_data(
        &self,
        cx: C,
        object: wt::ObjectId,
        start: u64,
        end: u64,
    ) -> WireResult<(ByteStream, Done)> {
        // Produced only as fast as the caller takes it.
        let pacer = cx.pacer().clone();
        let answer = self.0.get_container_data(cx, id(object), start, end).await;
        Ok(answer.map(|(data, done)| (Box::pin(pacer.pace(data)) as ByteStream, done)))
    }

    async fn get_object_info(&self, cx: C, object: wt::ObjectId) -> WireResult<wt::ObjectMetadata> {
        let info = self.0.get_object_info(cx, id(object)).await;
        Ok(info.map(|i| wt::ObjectMetadata {
            created_at: i.created_at,
            size: i.size,
        }))
    }

    async fn has_object(&self, cx: C, object: wt::ObjectId) -> WireResult<bool> {
        Ok(self.0.has_object(cx, id(object)).await)
    }

    async fn move_object(&self, cx: C, src: wt::ObjectId, dest: wt::ObjectId) -> WireResult<()> {
        Ok(self.0.move_object(cx, id(src), id(dest)).await)
    }

    /// Not reached: `upload.rs` serves this function in the generated one's place (this is
    /// what it would do, without the upload's failure).
    async fn write_container_data(
        &self,
        cx: C,
        object: wt::ObjectId,
        data: ByteStream,
    ) -> WireResult<Done> {
        let data = Box::pin(futures::StreamExt::map(data, Ok));
        Ok(self.0.write_container_data(cx, id(object), data).await)
    }
}
