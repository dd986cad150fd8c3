//! `http-server`: HTTP in, components out. Each link from this provider to a component
//! exporting `wasi:http/incoming-handler` is a route (address, optional path prefix and
//! host); each request is the component's `wrpc:http/incoming-handler@0.1.0.handle` call on
//! the lattice, bodies streamed both ways. See the README for the config keys.
//!
//! Started by a host (host data on stdin) or standalone
//! (`http-server --provider-id http-server --nats-url nats://127.0.0.1:4222`).

mod backend;
mod cors;
mod handlers;
mod response;
mod routes;
mod server;
mod settings;

use trellis_sdk::runtime::run_provider;

use crate::server::HttpServer;

/// A worker pool, one thread per CPU, not `provider_runtime`'s single thread: parsing HTTP
/// and moving bodies is CPU work that grows with the number of clients, and the HTTP
/// benchmark was measured on the pool. `TRELLIS_PROVIDER_THREADS` does not apply here.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = HttpServer::default();
    run_provider(server.clone(), |handle| async move {
        server.attach(handle);
        Ok(())
    })
    .await
}
