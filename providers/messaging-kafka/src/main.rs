//! `messaging-kafka`: `wasmcloud:messaging` on Kafka with `rdkafka` (bundled librdkafka) —
//! components publish through it (`consumer`), and it delivers the records of the topics a
//! link subscribes to into the component's `handler`, at least once: an offset is committed
//! only once its record and every earlier one of its partition were handled.
//!
//! `settings` parses each link's config (see the README); `backend` runs a link's consumer
//! group member into the SDK's delivery engine and commits what was handled; `replies`
//! gives requests their answers from a reply topic; `handlers` keeps the links and serves
//! the consumer interface.

mod backend;
mod handlers;
mod replies;
mod settings;

use trellis_interfaces::messaging;
use trellis_sdk::runtime::{provider_runtime, run_provider};

/// One thread unless `TRELLIS_PROVIDER_THREADS` says otherwise (see `provider_runtime`).
fn main() -> anyhow::Result<()> {
    provider_runtime()?.block_on(async {
        let provider = handlers::MessagingKafka::default();
        run_provider(provider.clone(), |handle| async move {
            let server = handle.server().with_param_checks(messaging::param_checks());
            handle.serve(messaging::serve_consumer(&server, provider).await?)?;
            Ok(())
        })
        .await
    })
}
