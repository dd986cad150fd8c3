//! Set-up shared by the host's integration tests.
#![allow(dead_code)]

use trellis_host::{Host, HostOptions};
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

// Not every suite uses both.
#[allow(unused_imports)]
pub use trellis_tests::{eventually, provider};
