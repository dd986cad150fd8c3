//! `keyvalue-redis`: serves `wrpc:keyvalue/{store,atomics,batch}@0.2.0-draft` from Redis.
//!
//! Each link names its Redis server and which buckets it may use (see the README); links
//! pointing at the same server and credentials share one reconnecting connection. Started by
//! a host (host data on stdin) or standalone (`keyvalue-redis --provider-id kv-redis`).

mod buckets;
mod handlers;
mod pool;

use trellis_sdk::runtime::run_provider;
use trellis_sdk::wire_shape::ParamChecks;

use crate::handlers::RedisKv;

mod bindings {
    // wit-bindgen-wrpc 0.11 parses with wit-parser 0.220, which resolves the WASI 0.2.6 tree
    // only with these @unstable features on (nothing here uses them).
    wit_bindgen_wrpc::generate!({
        path: "../../wit",
        world: "trellis:lattice/keyvalue@0.1.0",
        generate_all,
        features: ["clocks-timezone", "cli-exit-with-code", "informational-outbound-responses", "network-error-code"],
    });
}

/// Serving a wRPC call allocates a few dozen small objects; mimalloc makes that a small
/// share of a call (see the workspace `Cargo.toml`).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One thread unless `TRELLIS_PROVIDER_THREADS` says otherwise: a call hops between the
/// NATS, serving and backend tasks, which is cheapest on one thread (see
/// `trellis_sdk::runtime::provider_runtime`).
fn main() -> anyhow::Result<()> {
    trellis_sdk::runtime::provider_runtime()?.block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let kv = RedisKv::default();
    run_provider(kv.clone(), |handle| async move {
        let server = handle.server().with_param_checks(param_checks());
        handle.serve(bindings::serve(&server, kv).await?)?;
        Ok(())
    })
    .await
}

/// `set-many` takes a list of tuples, for which wrpc-transport's decoder reserves room as
/// the length prefix says before reading any: its parameters are checked against their
/// shape first, so a forged prefix cannot abort the provider (see `trellis_sdk::wire_shape`).
fn param_checks() -> ParamChecks {
    ParamChecks::new().function::<(String, Vec<(String, bytes::Bytes)>)>(
        "wrpc:keyvalue/batch@0.2.0-draft",
        "set-many",
    )
}
