//! `blobstore::Handler` on the link's root: each call resolves its link's root
//! (`self.root(&cx)?`, opened once per link) and runs there; failures are the interface's
//! error strings with the reason.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use trellis_interfaces::blobstore::{
    self, ByteStream, ContainerInfo, Done, NameStream, ObjectId, ObjectInfo, Upload,
};
use trellis_sdk::link::{LinkDefinition, LinkStates};
use trellis_sdk::provider::{HealthStatus, LinkConfig, Provider};
use trellis_sdk::runtime::CallContext;

use crate::backend::Root;
use crate::settings::LinkSettings;

/// The provider: each link's root, and the default root for links that name none.
#[derive(Clone, Default)]
pub struct BlobFs {
    links: LinkStates<Root>,
    default_root: Arc<OnceLock<Option<PathBuf>>>,
}

impl BlobFs {
    /// The root of links that name none (the provider's own `root` config).
    pub fn set_default_root(&self, root: Option<String>) {
        let _ = self.default_root.set(root.map(PathBuf::from));
    }

    /// The call's root.
    fn root(&self, cx: &CallContext) -> Result<Arc<Root>, String> {
        self.links
            .get(&cx.link)
            .ok_or_else(|| "this link has no blobstore-fs root (yet)".to_string())
    }
}

impl Provider for BlobFs {
    fn call_deadline(&self) -> std::time::Duration {
        blobstore::CALL_DEADLINE
    }

    async fn receive_link_config_as_target(&self, link: LinkConfig<'_>) -> anyhow::Result<()> {
        let settings = LinkSettings::parse(link.config)?;
        let path = match settings.root {
            Some(root) => root,
            None => self.default_root.get().cloned().flatten().ok_or_else(|| {
                anyhow::anyhow!(
                    "no `root` in the link's config and no default `root` for the provider"
                )
            })?,
        };
        let root = Root::open(&path)
            .map_err(|e| anyhow::anyhow!("cannot open the root {}: {e}", path.display()))?;
        tracing::debug!(root = %root.path().display(), "link root opened");
        self.links.insert(link.link, root);
        Ok(())
    }

    async fn delete_link_as_target(&self, link: &LinkDefinition) -> anyhow::Result<()> {
        self.links.remove(link);
        Ok(())
    }

    /// Healthy when every link's root is still a directory at its path (a root removed or
    /// replaced under the provider leaves it writing into a detached directory).
    async fn health(&self) -> anyhow::Result<HealthStatus> {
        let checks = self.links.all().into_iter().map(|(key, root)| {
            let check = match std::fs::metadata(root.path()) {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err(format!(
                    "its root {} is not a directory",
                    root.path().display()
                )),
                Err(e) => Err(format!("its root {}: {e}", root.path().display())),
            };
            (key, check)
        });
        Ok(HealthStatus::of_links(checks))
    }
}

impl blobstore::Handler<CallContext> for BlobFs {
    async fn create_container(&self, cx: CallContext, name: String) -> Result<(), String> {
        self.root(&cx)?.create_container(name).await
    }

    async fn container_exists(&self, cx: CallContext, name: String) -> Result<bool, String> {
        self.root(&cx)?.container_exists(name).await
    }

    async fn delete_container(&self, cx: CallContext, name: String) -> Result<(), String> {
        self.root(&cx)?.delete_container(name).await
    }

    async fn clear_container(&self, cx: CallContext, name: String) -> Result<(), String> {
        self.root(&cx)?.clear_container(name).await
    }

    async fn get_container_info(
        &self,
        cx: CallContext,
        name: String,
    ) -> Result<ContainerInfo, String> {
        self.root(&cx)?.container_info(name).await
    }

    async fn list_container_objects(
        &self,
        cx: CallContext,
        name: String,
        limit: Option<u64>,
        offset: Option<u64>,
    ) -> Result<(NameStream, Done), String> {
        let chunks = self.root(&cx)?.list(name, limit, offset).await?;
        let names: NameStream = Box::pin(futures::stream::iter(chunks));
        Ok((names, Box::pin(async { Ok(()) })))
    }

    async fn copy_object(
        &self,
        cx: CallContext,
        src: ObjectId,
        dest: ObjectId,
    ) -> Result<(), String> {
        let (src, dest) = ((src.container, src.object), (dest.container, dest.object));
        self.root(&cx)?.transfer(src, dest, true).await
    }

    async fn move_object(
        &self,
        cx: CallContext,
        src: ObjectId,
        dest: ObjectId,
    ) -> Result<(), String> {
        let (src, dest) = ((src.container, src.object), (dest.container, dest.object));
        self.root(&cx)?.transfer(src, dest, false).await
    }

    async fn delete_object(&self, cx: CallContext, id: ObjectId) -> Result<(), String> {
        self.root(&cx)?.delete_object(id.container, id.object).await
    }

    async fn delete_objects(
        &self,
        cx: CallContext,
        container: String,
        objects: Vec<String>,
    ) -> Result<(), String> {
        let root = self.root(&cx)?;
        for object in objects {
            root.delete_object(container.clone(), object).await?;
        }
        Ok(())
    }

    async fn get_container_data(
        &self,
        cx: CallContext,
        id: ObjectId,
        start: u64,
        end: u64,
    ) -> Result<(ByteStream, Done), String> {
        self.root(&cx)?
            .read(id.container, id.object, start, end)
            .await
    }

    async fn get_object_info(&self, cx: CallContext, id: ObjectId) -> Result<ObjectInfo, String> {
        self.root(&cx)?.object_info(id.container, id.object).await
    }

    async fn has_object(&self, cx: CallContext, id: ObjectId) -> Result<bool, String> {
        self.root(&cx)?.has_object(id.container, id.object).await
    }

    async fn write_container_data(
        &self,
        cx: CallContext,
        id: ObjectId,
        data: Upload,
    ) -> Result<Done, String> {
        self.root(&cx)?.write(id.container, id.object, data).await
    }
}
