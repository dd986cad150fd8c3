//! `keyvalue-redis`: serves `wasi:keyvalue` (store, atomics, batch) from Redis, and tells
//! watching components of changes (`wasi:keyvalue/watcher`).
//!
//! Each link names its Redis server and which buckets it may use (`settings`, see the
//! README); links pointing at the same server and credentials share one reconnecting
//! connection (`backend`); `handlers` implements the keyvalue interface on it; `watch` turns
//! keyspace notifications into calls of a watching link's component. Started by a
//! host (host data on stdin) or standalone (`keyvalue-redis --provider-id kv-redis`).

mod backend;
mod handlers;
mod settings;
mod watch;

use trellis_interfaces::keyvalue;
use trellis_sdk::runtime::{provider_runtime, run_provider};

/// Serving a wRPC call allocates a few dozen small objects; mimalloc makes that a small
/// share of a call (see the workspace `Cargo.toml`).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One thread unless `TRELLIS_PROVIDER_THREADS` says otherwise (see `provider_runtime`).
fn main() -> anyhow::Result<()> {
    provider_runtime()?.block_on(async {
        let kv = handlers::RedisKv::default();
        run_provider(kv.clone(), |handle| async move {
            let server = handle.server().with_param_checks(keyvalue::param_checks());
            handle.serve(keyvalue::serve(&server, kv).await?)?;
            Ok(())
        })
        .await
    })
}
