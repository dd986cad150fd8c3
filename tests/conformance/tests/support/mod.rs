//! What the end-to-end suites share: a host on a test lattice, and a client calling the
//! components it runs.

// Each suite uses some of these helpers, not all.
#![allow(dead_code)]

use std::time::Duration;

use trellis_host::{Host, HostOptions};
use trellis_sdk::subjects::LatticeSubjects;
use trellis_tests as common;
use trellis_wrpc_nats::{Client, Connection, TransportOptions};

/// A host on `lattice` of the test nats-server.
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
    .expect("host")
}

/// A client calling component `id` on `lattice` (calls may take 20 s: debug builds).
pub async fn caller(lattice: &str, id: &str) -> Client {
    let conn = Connection::new(
        common::nats().await,
        TransportOptions {
            timeout: Duration::from_secs(20),
            ..TransportOptions::default()
        },
    )
    .await
    .expect("connection");
    conn.client(
        LatticeSubjects::new(lattice)
            .expect("lattice")
            .wrpc_prefix(id),
    )
}
