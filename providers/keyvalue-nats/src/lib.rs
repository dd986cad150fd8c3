//! `keyvalue-nats`: serves `wasi:keyvalue` (store, atomics, batch) from NATS JetStream
//! key-value buckets, and tells watching components of changes (`wasi:keyvalue/watcher`).
//!
//! Each link names its NATS server (default: the lattice's own) and which buckets it may use
//! (`settings`, see the README); links with the same server and credentials share one
//! connection (`backend`, `listing` for its key pages); `handlers` implements the keyvalue
//! interface on it; `watch` runs a watching link's KV watch into its component's watcher.
//! Started by a host (host data on stdin) or standalone (`keyvalue-nats --provider-id kv`).
//!
//! A library as well as the binary: [`provider`] and [`serve`] are what the binary runs, and
//! what a host running the provider in its own process (`mode: in-process`) runs.

mod backend;
mod handlers;
mod keys;
mod listing;
mod settings;
mod watch;

use trellis_interfaces::keyvalue;
use trellis_sdk::runtime::ProviderHandle;

pub use handlers::NatsKv;

/// A fresh provider: its [`trellis_sdk::provider::Provider`] side (links) and its
/// [`keyvalue::Handler`] side are the same value.
pub fn provider() -> NatsKv {
    NatsKv::default()
}

/// Serves `kv` (started as `handle`) on the lattice: the keyvalue interfaces with their
/// parameter checks. Links without a NATS URL of their own use the lattice's connection.
pub async fn serve(handle: &ProviderHandle, kv: NatsKv) -> anyhow::Result<()> {
    kv.set_lattice_nats(handle.nats().clone());
    let server = handle.server().with_param_checks(keyvalue::param_checks());
    handle.serve(keyvalue::serve(&server, kv).await?)?;
    Ok(())
}
