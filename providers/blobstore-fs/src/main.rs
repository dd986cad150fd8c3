//! `blobstore-fs`: serves `wasi:blobstore` (as `wrpc:blobstore/blobstore@0.2.0`) from a
//! directory: containers are its subdirectories, objects the files under them.
//!
//! Each link names its root (`settings`, see the README; the provider's own `root` config is
//! the default); `backend` resolves every name under that root's directory handle, so no
//! name or symlink reaches outside it, and writes atomically; `handlers` implements the
//! blobstore interface on it. Started by a host (host data on stdin) or standalone
//! (`blobstore-fs --provider-id blobs --config root=/srv/blobs`).

mod backend;
mod handlers;
mod settings;

use trellis_interfaces::blobstore;
use trellis_sdk::runtime::{provider_runtime, run_provider};

/// One thread unless `TRELLIS_PROVIDER_THREADS` says otherwise (see `provider_runtime`).
fn main() -> anyhow::Result<()> {
    provider_runtime()?.block_on(async {
        let fs = handlers::BlobFs::default();
        run_provider(fs.clone(), |handle| async move {
            fs.set_default_root(handle.config().config.get("root").cloned());
            let server = handle.server().with_param_checks(blobstore::param_checks());
            handle.serve(blobstore::serve(&server, fs).await?)?;
            Ok(())
        })
        .await
    })
}
