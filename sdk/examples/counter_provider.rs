//! A complete custom provider: per-link counters served over wRPC.
//!
//! Run standalone: `cargo run -p trellis-sdk --example counter_provider -- --provider-id counter`
//! (or start it from a host, which passes host data on stdin).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use trellis_sdk::link::{LinkDefinition, LinkKey};
use trellis_sdk::provider::{LinkConfig, Provider};
use trellis_sdk::runtime::{CallContext, run_provider};

wit_bindgen_wrpc::generate!({
    inline: "
        package trellis-example:counter@0.1.0;
        interface counter { increment: func(by: u64) -> u64; }
        world provider { export counter; }
    ",
});

/// One counter per link, starting at the link's `start` config value.
#[derive(Clone, Default)]
struct Counters(Arc<Mutex<HashMap<LinkKey, u64>>>);

impl Provider for Counters {
    async fn receive_link_config_as_target(&self, link: LinkConfig<'_>) -> anyhow::Result<()> {
        let start = match link.config.get("start") {
            Some(v) => v
                .parse()
                .map_err(|e| anyhow::anyhow!("bad `start` {v:?}: {e}"))?,
            None => 0,
        };
        let mut counters = self.0.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        counters.entry(link.link.key()).or_insert(start);
        Ok(())
    }

    async fn delete_link_as_target(&self, link: &LinkDefinition) -> anyhow::Result<()> {
        self.0
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .remove(&link.key());
        Ok(())
    }
}

impl exports::trellis_example::counter::counter::Handler<CallContext> for Counters {
    async fn increment(&self, cx: CallContext, by: u64) -> anyhow::Result<u64> {
        let mut counters = self.0.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let n = counters.entry(cx.link.key()).or_default();
        *n = n.saturating_add(by);
        Ok(*n)
    }
}

fn main() -> anyhow::Result<()> {
    // One thread unless TRELLIS_PROVIDER_THREADS asks for more: cheapest for I/O-bound work.
    trellis_sdk::runtime::provider_runtime()?.block_on(async {
        let counters = Counters::default();
        run_provider(counters.clone(), |handle| async move {
            handle.serve(serve(&handle.server(), counters).await?)?;
            Ok(())
        })
        .await
    })
}
