//! `keyvalue-redis`: serves `wasi:keyvalue` (store, atomics, batch) from Redis, and tells
//! watching components of changes (`wasi:keyvalue/watcher`).
//!
//! Each link names its Redis server and which buckets it may use (`settings`, see the
//! README); links pointing at the same server and credentials share one reconnecting
//! connection (`backend`); `handlers` implements the keyvalue interface on it; `watch` turns
//! keyspace notifications into calls of a watching link's component. Started by a
//! host (host data on stdin) or standalone (`keyvalue-redis --provider-id kv-redis`).
//!
//! A library as well as the binary: [`provider`] and [`serve`] are what the binary runs, and
//! what a host running the provider in its own process (`mode: in-process`) runs.

mod backend;
mod handlers;
mod settings;
mod watch;

use trellis_interfaces::keyvalue;
use trellis_sdk::runtime::ProviderHandle;

pub use handlers::RedisKv;

/// A fresh provider: its [`trellis_sdk::provider::Provider`] side (links) and its
/// [`keyvalue::Handler`] side are the same value.
pub fn provider() -> RedisKv {
    RedisKv::default()
}

/// Serves `kv` (started as `handle`) on the lattice: the keyvalue interfaces with their
/// parameter checks.
pub async fn serve(handle: &ProviderHandle, kv: RedisKv) -> anyhow::Result<()> {
    let server = handle.server().with_param_checks(keyvalue::param_checks());
    handle.serve(keyvalue::serve(&server, kv).await?)?;
    Ok(())
}
