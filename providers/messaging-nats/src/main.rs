//! `messaging-nats`: `wasmcloud:messaging` on NATS — components publish and make requests
//! through it (`consumer`), and it delivers the messages of the subjects a link subscribes
//! to into the component's `handler`, on core NATS (optionally in a queue group) or from a
//! JetStream consumer (acknowledged only once the handler succeeded).
//!
//! `settings` parses each link's config (see the README); `backend` runs a link's
//! subscription into the SDK's delivery engine; `handlers` keeps the links and serves the
//! consumer interface.

mod backend;
mod handlers;
mod settings;

use trellis_interfaces::messaging;
use trellis_sdk::runtime::{provider_runtime, run_provider};

/// One thread unless `TRELLIS_PROVIDER_THREADS` says otherwise (see `provider_runtime`).
fn main() -> anyhow::Result<()> {
    provider_runtime()?.block_on(async {
        let provider = handlers::MessagingNats::default();
        run_provider(provider.clone(), |handle| async move {
            let server = handle.server().with_param_checks(messaging::param_checks());
            handle.serve(messaging::serve_consumer(&server, provider).await?)?;
            Ok(())
        })
        .await
    })
}
