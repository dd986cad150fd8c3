//! `keyvalue-nats`: serves `wasi:keyvalue` (store, atomics, batch) from NATS JetStream
//! key-value buckets, and tells watching components of changes (`wasi:keyvalue/watcher`).
//!
//! Each link names its NATS server (default: the lattice's own) and which buckets it may use
//! (`settings`, see the README); links with the same server and credentials share one
//! connection (`backend`, `listing` for its key pages); `handlers` implements the keyvalue
//! interface on it; `watch` runs a watching link's KV watch into its component's watcher.
//! Started by a host (host data on stdin) or standalone (`keyvalue-nats --provider-id kv`).

mod backend;
mod handlers;
mod keys;
mod listing;
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
        let kv = handlers::NatsKv::default();
        run_provider(kv.clone(), |handle| async move {
            kv.set_lattice_nats(handle.nats().clone());
            let server = handle.server().with_param_checks(keyvalue::param_checks());
            handle.serve(keyvalue::serve(&server, kv).await?)?;
            Ok(())
        })
        .await
    })
}
