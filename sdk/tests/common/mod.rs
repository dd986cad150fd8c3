//! Shared helpers of the SDK integration tests: the real NATS server they run against.
#![allow(dead_code)]

use std::time::Duration;

/// The URL of the nats-server started by `scripts/services.sh start nats`.
///
/// Panics (failing the test loudly) when it is not set: these tests need a real server.
pub fn nats_url() -> String {
    match std::env::var("TRELLIS_NATS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "TRELLIS_NATS_URL is not set: start the test services first \
             (`eval \"$(scripts/services.sh start nats && scripts/services.sh env)\"`)"
        ),
    }
}

/// A fresh NATS connection to the test server.
pub async fn nats() -> async_nats::Client {
    let url = nats_url();
    tokio::time::timeout(Duration::from_secs(10), async_nats::connect(&url))
        .await
        .unwrap_or_else(|_| panic!("timed out connecting to {url}"))
        .unwrap_or_else(|e| panic!("cannot connect to the test nats-server at {url}: {e}"))
}

/// A lattice name no other test uses.
pub fn unique_lattice(tag: &str) -> String {
    format!("t{}-{tag}", uuid::Uuid::new_v4().simple())
}
