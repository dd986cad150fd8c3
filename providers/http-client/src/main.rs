//! `http-client`: serves `wasi:http/outgoing-handler` (as `wrpc:http/outgoing-handler@0.1.0`)
//! for components, sending their requests with a pooled hyper client over rustls.
//!
//! Each link says which hosts its component may reach and its timeouts (`settings`, see the
//! README); one pool of connections serves every link (`backend`); `handlers` implements the
//! outgoing handler on it. Started by a host (host data on stdin) or standalone
//! (`http-client --provider-id http-client`).

mod backend;
mod handlers;
mod settings;

use trellis_interfaces::http::server;
use trellis_sdk::runtime::{provider_runtime, run_provider};

/// One thread unless `TRELLIS_PROVIDER_THREADS` says otherwise (see `provider_runtime`).
fn main() -> anyhow::Result<()> {
    provider_runtime()?.block_on(async {
        let client = handlers::HttpClient::new()?;
        run_provider(client.clone(), |handle| async move {
            let server = handle
                .server()
                .with_param_checks(server::outgoing_param_checks());
            handle.serve(server::serve_outgoing(&server, client).await?)?;
            Ok(())
        })
        .await
    })
}
