//! The `keyvalue-redis` binary: the provider (see the library, `trellis_provider_keyvalue_redis`) on a
//! runtime of its own, started by a host (host data on stdin) or standalone.

use trellis_sdk::runtime::{provider_runtime, run_provider};

/// Serving a wRPC call allocates a few dozen small objects; mimalloc makes that a small
/// share of a call (see the workspace `Cargo.toml`).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One thread unless `TRELLIS_PROVIDER_THREADS` says otherwise (see `provider_runtime`).
fn main() -> anyhow::Result<()> {
    provider_runtime()?.block_on(async {
        let kv = trellis_provider_keyvalue_redis::provider();
        run_provider(kv.clone(), |handle| async move {
            trellis_provider_keyvalue_redis::serve(&handle, kv).await
        })
        .await
    })
}
