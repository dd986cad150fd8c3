//! `blobstore-azure`: serves `wasi:blobstore` (as `wrpc:blobstore/blobstore@0.2.0`) from Azure
//! Blob Storage (or the Azurite emulator) with the Azure SDK.
//!
//! Each link names its account, key, endpoint and container aliases (`settings`, see the
//! README); `backend` holds the link's client and does each operation — uploads as staged
//! blocks committed at the end (one block in memory), ranged reads, listings paged by
//! marker; `handlers` implements the blobstore interface on it.

mod backend;
mod handlers;
mod settings;

use trellis_interfaces::blobstore;
use trellis_sdk::runtime::{provider_runtime, run_provider};

/// One thread unless `TRELLIS_PROVIDER_THREADS` says otherwise (see `provider_runtime`).
fn main() -> anyhow::Result<()> {
    provider_runtime()?.block_on(async {
        let azure = handlers::BlobAzure::default();
        run_provider(azure.clone(), |handle| async move {
            let server = handle.server().with_param_checks(blobstore::param_checks());
            handle.serve(blobstore::serve(&server, blobstore::ByLink(azure)).await?)?;
            Ok(())
        })
        .await
    })
}
