//! Set-ups the suites share on top of the test nats-server: a caller's transport connection,
//! a standalone SDK provider, serving an interface on a fresh prefix, retrying until a
//! provider has picked a link up, and running a test with the large stacks streaming futures
//! need in debug builds.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use trellis_interfaces::Invocations;
use trellis_sdk::config::ProviderConfig;
use trellis_sdk::provider::Provider;
use trellis_sdk::runtime::ProviderHandle;
use trellis_wrpc_nats::{Connection, Server, TransportOptions};

/// A transport connection on the test nats-server for calling, whose calls wait at most
/// `timeout` for the peer.
pub async fn caller(timeout: Duration) -> Connection {
    Connection::new(
        crate::nats().await,
        TransportOptions {
            timeout,
            ..TransportOptions::default()
        },
    )
    .await
    .expect("cannot set up the caller's transport connection")
}

/// An SDK provider `id` joining `lattice` standalone (serve its exports afterwards).
pub async fn provider<P: Provider>(lattice: &str, id: &str, provider: P) -> ProviderHandle {
    let config = ProviderConfig::standalone(lattice, id, &crate::nats_url()).expect("config");
    ProviderHandle::start(config, Arc::new(provider))
        .await
        .expect("provider did not start")
}

/// Drives every invocation of `invocations` on its own task, for as long as the runtime runs.
pub fn spawn_invocations(invocations: Invocations) {
    for (_, _, mut calls) in invocations {
        tokio::spawn(async move {
            while let Some(call) = calls.next().await {
                if let Ok(call) = call {
                    tokio::spawn(call);
                }
            }
        });
    }
}

/// A bare transport server under a fresh prefix (`tag` names it), and a client calling it.
/// The connection lives as long as the test's runtime; serve on the server, then call.
pub async fn fresh_server(tag: &str) -> (Server, trellis_wrpc_nats::Client, Connection) {
    let prefix = crate::unique_lattice(tag);
    let conn = Connection::new(crate::nats().await, TransportOptions::default())
        .await
        .expect("connects");
    let server = conn.server(prefix.clone(), None);
    let client = conn.client(prefix);
    (server, client, conn)
}

/// Keeps `conn` (and so what it serves) alive for the rest of the test, once the server has
/// every subscription made so far.
pub async fn keep_serving(conn: Connection) {
    conn.sync().await.expect("subscriptions are in place");
    tokio::spawn(async move {
        let _keep = conn;
        futures::future::pending::<()>().await;
    });
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

/// Runs `test` on a two-worker runtime whose threads have 16 MiB stacks: the futures
/// generated for streaming interfaces are large in unoptimised builds.
pub fn run_with_large_stacks<F>(test: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(16 << 20)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async { tokio::spawn(test).await.expect("the test panicked") });
}
