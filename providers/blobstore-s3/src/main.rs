//! `blobstore-s3`: serves `wasi:blobstore` (as `wrpc:blobstore/blobstore@0.2.0`) from S3 or
//! an S3-compatible store, with the official AWS SDK.
//!
//! Each link names its endpoint, region, credentials and container aliases (`settings`, see
//! the README); `backend` holds the link's S3 client and does each operation — uploads in
//! bounded parts (multipart above a threshold, aborted on failure), ranged reads, listings
//! paged by continuation token; `handlers` implements the blobstore interface on it.

mod backend;
mod handlers;
mod settings;

use trellis_interfaces::blobstore;
use trellis_sdk::runtime::{provider_runtime, run_provider};

/// One thread unless `TRELLIS_PROVIDER_THREADS` says otherwise (see `provider_runtime`).
fn main() -> anyhow::Result<()> {
    provider_runtime()?.block_on(async {
        let s3 = handlers::BlobS3::default();
        run_provider(s3.clone(), |handle| async move {
            let server = handle.server().with_param_checks(blobstore::param_checks());
            handle.serve(blobstore::serve(&server, blobstore::ByLink(s3)).await?)?;
            Ok(())
        })
        .await
    })
}
