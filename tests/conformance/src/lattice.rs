//! Running a provider binary on a test lattice: start it standalone, write links and named
//! config to the lattice store, and call it as a linked component would.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use trellis_sdk::runtime::LinkedClient;
use trellis_sdk::store::{LatticeStore, StoredLink};
use trellis_sdk::subjects::LatticeSubjects;
use trellis_tests as common;
use trellis_wrpc_nats::{Connection, TransportOptions};

/// A provider process on its own lattice; killed on drop.
pub struct ProviderProcess {
    /// The lattice name.
    pub lattice: String,
    /// The provider id.
    pub id: String,
    /// The lattice store (links, config).
    pub store: LatticeStore,
    conn: Connection,
    child: Child,
}

impl ProviderProcess {
    /// Starts workspace binary `bin` as provider `id` on a fresh lattice of the test
    /// nats-server.
    pub async fn start(bin: &str, id: &str) -> Self {
        Self::start_with(bin, id, &[]).await
    }

    /// Like [`ProviderProcess::start`], with further command-line arguments (such as
    /// `--config key=value`).
    pub async fn start_with(bin: &str, id: &str, args: &[&str]) -> Self {
        Self::start_in(bin, id, &common::unique_lattice(id), args).await
    }

    /// Like [`ProviderProcess::start_with`], on lattice `lattice` (to run several providers
    /// on one lattice).
    pub async fn start_in(bin: &str, id: &str, lattice: &str, args: &[&str]) -> Self {
        let lattice = lattice.to_string();
        let child = Command::new(common::workspace_bin(bin))
            .args(["--lattice", &lattice, "--provider-id", id])
            .args(["--nats-url", &common::nats_url()])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let nats = common::nats().await;
        let subjects = LatticeSubjects::new(&lattice).expect("lattice name");
        let store = LatticeStore::open(&nats, &subjects)
            .await
            .expect("lattice store");
        let conn = Connection::new(
            nats,
            TransportOptions {
                timeout: Duration::from_secs(30),
                ..TransportOptions::default()
            },
        )
        .await
        .expect("connection");
        Self {
            lattice,
            id: id.to_string(),
            store,
            conn,
            child,
        }
    }

    /// Links component `source` to the provider for `interfaces` of `namespace:package`,
    /// with `config` as its named target config (`{source}-cfg`), and returns a client
    /// calling as that component.
    pub async fn link(
        &self,
        source: &str,
        namespace: &str,
        package: &str,
        interfaces: &[&str],
        config: HashMap<String, String>,
    ) -> LinkedClient {
        let name = format!("{source}-cfg");
        self.store
            .put_config(&name, &config)
            .await
            .expect("put config");
        self.store
            .put_link(
                StoredLink::new(
                    source,
                    &self.id,
                    namespace,
                    package,
                    interfaces.iter().copied(),
                )
                .with_target_config([name]),
            )
            .await
            .expect("put link");
        self.client(source)
    }

    /// A client calling the provider as component `source` over its default link.
    pub fn client(&self, source: &str) -> LinkedClient {
        let subjects = LatticeSubjects::new(&self.lattice).expect("lattice name");
        LinkedClient::new(
            self.conn.client(subjects.wrpc_prefix(&self.id)),
            source,
            "default",
        )
    }

    /// The provider's answer to a health check: (healthy, message). Panics if it does not
    /// answer within 3 s.
    pub async fn health(&self) -> (bool, String) {
        let subjects = LatticeSubjects::new(&self.lattice).expect("lattice name");
        let status = trellis_sdk::admin::provider_health(
            &common::nats().await,
            &subjects,
            &self.id,
            std::time::Duration::from_secs(3),
        )
        .await
        .expect("the provider answers health");
        (status.healthy, status.message.unwrap_or_default())
    }

    /// Waits (at most 10 s) until the provider's health answer satisfies `check`; the answer.
    pub async fn health_until(
        &self,
        what: &str,
        check: impl Fn(bool, &str) -> bool,
    ) -> (bool, String) {
        let started = std::time::Instant::now();
        loop {
            let (healthy, message) = self.health().await;
            if check(healthy, &message) {
                return (healthy, message);
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "{what}: the provider still answers healthy={healthy} {message:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for the process to exit; its status, if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process at once (SIGKILL: no drain, no goodbye), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ProviderProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server answering as component `id` on `lattice` of the test nats-server (what a
/// stand-in for a component serves an interface on).
pub async fn component_server(lattice: &str, id: &str) -> trellis_wrpc_nats::Server {
    let conn = Connection::new(common::nats().await, TransportOptions::default())
        .await
        .expect("connection");
    conn.server(
        LatticeSubjects::new(lattice)
            .expect("lattice name")
            .wrpc_prefix(id),
        None,
    )
}

/// Runs every call of `invocations` (each on a task of its own) until the returned tasks
/// are dropped or aborted.
pub fn run_calls(invocations: trellis_interfaces::Invocations) -> Vec<tokio::task::JoinHandle<()>> {
    invocations
        .into_iter()
        .map(|(_, _, mut calls)| {
            tokio::spawn(async move {
                while let Some(call) = futures::StreamExt::next(&mut calls).await {
                    if let Ok(call) = call {
                        tokio::spawn(call);
                    }
                }
            })
        })
        .collect()
}
