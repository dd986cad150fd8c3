//! A task that lives as long as its owner: what a provider keeps per link for work running
//! in the background (a subscription's reader, a watch), so that removing the link's state
//! — a link deleted or changed, the provider shutting down — stops the work with it.

use std::future::Future;

/// A spawned task, aborted when this is dropped.
#[derive(Debug)]
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    /// Spawns `work` on the current runtime.
    pub fn spawn(work: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(tokio::spawn(work))
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
