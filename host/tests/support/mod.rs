//! Set-up shared by the host's integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use trellis_host::{Host, HostOptions};
use trellis_sdk::config::ProviderConfig;
use trellis_sdk::provider::Provider;
use trellis_sdk::runtime::ProviderHandle;
use trellis_tests as common;

/// A host on the test nats-server, in `lattice`.
pub async fn host(lattice: &str) -> Host {
    Host::new(
        common::nats().await,
        HostOptions {
            lattice: lattice.to_string(),
            nats_url: common::nats_url(),
            ..HostOptions::default()
        },
    )
    .await
    .expect("host did not start")
}

/// An SDK provider `id` joining `lattice` standalone (serve its exports afterwards).
pub async fn provider<P: Provider>(lattice: &str, id: &str, provider: P) -> ProviderHandle {
    let config = ProviderConfig::standalone(lattice, id, &common::nats_url()).expect("config");
    ProviderHandle::start(config, Arc::new(provider))
        .await
        .expect("provider did not start")
}

/// Retries `call` until it gives `Ok(Ok(_))` (a provider picks a new link up from the lattice
/// store within milliseconds), then returns its last outcome.
pub async fn eventually<T, E, F, Fut>(mut call: F) -> anyhow::Result<Result<T, E>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Result<T, E>>>,
{
    for _ in 0..50 {
        match call().await {
            Ok(Ok(v)) => return Ok(Ok(v)),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    call().await
}
