//! The blobstore interface on the link's store: the provider keeps one `Store` per link
//! (built from the link's settings when it is put) and hands each call its link's
//! (`blobstore::ByLink` runs the operation there); a call over a link without one is
//! answered with the reason.

use std::sync::Arc;

use trellis_interfaces::blobstore;
use trellis_sdk::link::{LinkDefinition, LinkStates};
use trellis_sdk::provider::{HealthStatus, LinkConfig, Provider};
use trellis_sdk::runtime::CallContext;

use crate::backend::Store;
use crate::settings::LinkSettings;

/// The provider: each link's store.
#[derive(Clone, Default)]
pub struct BlobS3 {
    links: LinkStates<Store>,
}

impl Provider for BlobS3 {
    fn call_deadline(&self) -> std::time::Duration {
        blobstore::CALL_DEADLINE
    }

    async fn receive_link_config_as_target(&self, link: LinkConfig<'_>) -> anyhow::Result<()> {
        let settings = LinkSettings::parse(link.config)?;
        self.links.insert(link.link, Store::new(settings));
        Ok(())
    }

    async fn delete_link_as_target(&self, link: &LinkDefinition) -> anyhow::Result<()> {
        self.links.remove(link);
        Ok(())
    }

    /// Healthy when every link's store answers (`blobstore::Store::reachable`); otherwise
    /// unhealthy, naming each link that does not and why.
    async fn health(&self) -> anyhow::Result<HealthStatus> {
        let checks = blobstore::reachability(self.links.all()).await;
        Ok(HealthStatus::of_links(checks))
    }
}

impl blobstore::Stores<CallContext> for BlobS3 {
    type Store = Store;

    fn store(&self, cx: &CallContext) -> Result<Arc<Store>, String> {
        self.links
            .get(&cx.link)
            .ok_or_else(|| "this link has no blobstore-s3 settings (yet)".to_string())
    }
}
