//! `blobstore::Handler` on the link's Azure store: each call resolves its link's store
//! (`self.store(&cx)?`, built once per link) and runs there; failures are the interface's
//! error strings with the reason.

use std::sync::Arc;

use trellis_interfaces::blobstore::{
    self, ByteStream, ContainerInfo, Done, NameStream, ObjectId, ObjectInfo, Upload,
};
use trellis_sdk::link::{LinkDefinition, LinkStates};
use trellis_sdk::provider::{LinkConfig, Provider};
use trellis_sdk::runtime::CallContext;

use crate::backend::Store;
use crate::settings::LinkSettings;

/// The provider: each link's store.
#[derive(Clone, Default)]
pub struct BlobAzure {
    links: LinkStates<Store>,
}

impl BlobAzure {
    /// The call's store.
    fn store(&self, cx: &CallContext) -> Result<Arc<Store>, String> {
        self.links
            .get(&cx.link)
            .ok_or_else(|| "this link has no blobstore-azure settings (yet)".to_string())
    }
}

impl Provider for BlobAzure {
    async fn receive_link_config_as_target(&self, link: LinkConfig<'_>) -> anyhow::Result<()> {
        let settings = LinkSettings::parse(link.config)?;
        self.links.insert(link.link, Store::new(settings));
        Ok(())
    }

    async fn delete_link_as_target(&self, link: &LinkDefinition) -> anyhow::Result<()> {
        self.links.remove(link);
        Ok(())
    }
}

impl blobstore::Handler<CallContext> for BlobAzure {
    async fn create_container(&self, cx: CallContext, name: String) -> Result<(), String> {
        self.store(&cx)?.create_container(&name).await
    }

    async fn container_exists(&self, cx: CallContext, name: String) -> Result<bool, String> {
        self.store(&cx)?.container_exists(&name).await
    }

    async fn delete_container(&self, cx: CallContext, name: String) -> Result<(), String> {
        self.store(&cx)?.delete_container(&name).await
    }

    async fn clear_container(&self, cx: CallContext, name: String) -> Result<(), String> {
        self.store(&cx)?.clear_container(&name).await
    }

    async fn get_container_info(
        &self,
        cx: CallContext,
        name: String,
    ) -> Result<ContainerInfo, String> {
        self.store(&cx)?.container_info(&name).await
    }

    async fn list_container_objects(
        &self,
        cx: CallContext,
        name: String,
        limit: Option<u64>,
        offset: Option<u64>,
    ) -> Result<(NameStream, Done), String> {
        self.store(&cx)?.list(&name, limit, offset).await
    }

    async fn copy_object(
        &self,
        cx: CallContext,
        src: ObjectId,
        dest: ObjectId,
    ) -> Result<(), String> {
        let (src, dest) = (
            (&*src.container, &*src.object),
            (&*dest.container, &*dest.object),
        );
        self.store(&cx)?.copy(src, dest, false).await
    }

    async fn move_object(
        &self,
        cx: CallContext,
        src: ObjectId,
        dest: ObjectId,
    ) -> Result<(), String> {
        let (src, dest) = (
            (&*src.container, &*src.object),
            (&*dest.container, &*dest.object),
        );
        self.store(&cx)?.copy(src, dest, true).await
    }

    async fn delete_object(&self, cx: CallContext, id: ObjectId) -> Result<(), String> {
        self.store(&cx)?
            .delete_object(&id.container, &id.object)
            .await
    }

    async fn delete_objects(
        &self,
        cx: CallContext,
        container: String,
        objects: Vec<String>,
    ) -> Result<(), String> {
        self.store(&cx)?.delete_objects(&container, objects).await
    }

    async fn get_container_data(
        &self,
        cx: CallContext,
        id: ObjectId,
        start: u64,
        end: u64,
    ) -> Result<(ByteStream, Done), String> {
        self.store(&cx)?
            .read(&id.container, &id.object, start, end)
            .await
    }

    async fn get_object_info(&self, cx: CallContext, id: ObjectId) -> Result<ObjectInfo, String> {
        self.store(&cx)?
            .object_info(&id.container, &id.object)
            .await
    }

    async fn has_object(&self, cx: CallContext, id: ObjectId) -> Result<bool, String> {
        self.store(&cx)?.has_object(&id.container, &id.object).await
    }

    async fn write_container_data(
        &self,
        cx: CallContext,
        id: ObjectId,
        data: Upload,
    ) -> Result<Done, String> {
        // The upload runs as the data comes; the `Done` says when it is stored.
        let store = self.store(&cx)?;
        Ok(Box::pin(async move {
            store.write(&id.container, &id.object, data).await
        }))
    }
}
