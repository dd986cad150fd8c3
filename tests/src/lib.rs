//! The test harness shared by every Trellis test suite: finding the real services that
//! `scripts/services.sh` started, and owning a private nats-server when a test must stop and
//! restart it.
//!
//! Every lookup fails the test loudly when its service is missing: a test that needs a
//! backend never passes without one.

use std::time::Duration;

pub mod components;
mod lattice;
mod mem_blobs;
mod mem_kv;
mod readme;
pub mod secure_nats;
pub mod tls;
pub use lattice::{
    caller, eventually, fresh_server, keep_serving, provider, run_with_large_stacks,
    spawn_invocations,
};
pub use mem_blobs::MemBlobs;
pub use mem_kv::MemKv;
pub use readme::{readme_cargo_runs, readme_commands};

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

/// A free loopback port (for a server a test owns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// Whether something accepts connections on `port` within `tries` × 50 ms.
fn listening(port: u16, tries: u32) -> bool {
    for _ in 0..tries {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Kills and reaps a server a test owns, if it runs.
fn stop(child: &mut Option<std::process::Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A nats-server owned by one test (to stop and restart it), on a free loopback port, with
/// JetStream in a temporary directory. Killed on drop.
pub struct OwnNats {
    pub port: u16,
    dir: std::path::PathBuf,
    extra_config: String,
    child: Option<std::process::Child>,
}

impl OwnNats {
    /// Starts one; panics if `TRELLIS_NATS_SERVER` (set by scripts/services.sh) is missing.
    pub fn start() -> Self {
        Self::start_with_config("")
    }

    /// Starts one with `extra_config` appended to its configuration file (for example an
    /// `authorization { … }` block).
    pub fn start_with_config(extra_config: &str) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "trellis-own-nats-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let mut me = Self {
            port,
            dir,
            extra_config: extra_config.to_string(),
            child: None,
        };
        me.restart();
        me
    }

    /// Its client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn write_config(&self) -> std::path::PathBuf {
        std::fs::create_dir_all(&self.dir).expect("cannot create the nats-server directory");
        let conf = self.dir.join("nats.conf");
        let text = format!(
            "listen: 127.0.0.1:{}\njetstream {{ store_dir: {:?} }}\n{}\n",
            self.port,
            self.dir.join("js"),
            self.extra_config
        );
        std::fs::write(&conf, text).expect("cannot write the nats-server config");
        conf
    }

    /// Replaces the extra config and has the running server reload it (SIGHUP), waiting
    /// until its log says it did.
    pub fn reconfigure(&mut self, extra_config: &str) {
        self.extra_config = extra_config.to_string();
        self.write_config();
        let reloads = || self.log().matches("Reloaded server configuration").count();
        let before = reloads();
        let pid = self.child.as_ref().expect("running").id();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill -HUP");
        assert!(status.success(), "kill -HUP {pid}");
        for _ in 0..100 {
            if reloads() > before {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("nats-server did not reload:\n{}", self.log());
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nats.log")).unwrap_or_default()
    }

    /// (Re)starts the server on the same port and store, waiting until it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        let bin = std::env::var("TRELLIS_NATS_SERVER").unwrap_or_else(|_| {
            panic!("TRELLIS_NATS_SERVER is not set: run the tests through scripts/test.sh")
        });
        let conf = self.write_config();
        let child = std::process::Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.join("nats.log"))
                    .map(std::process::Stdio::from)
                    .unwrap_or_else(|_| std::process::Stdio::null()),
            )
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        self.child = Some(child);
        if listening(self.port, 100) {
            return;
        }
        let log = std::fs::read_to_string(self.dir.join("nats.log")).unwrap_or_default();
        panic!(
            "own nats-server did not start on port {}:\n{log}",
            self.port
        );
    }

    /// Kills it (the port stays reserved for [`OwnNats::restart`]).
    pub fn kill(&mut self) {
        stop(&mut self.child);
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Kafka-compatible broker (tansu, in-memory) owned by one test, to stop and restart it,
/// on a free loopback port. Killed on drop. A restart loses its topics and groups (memory
/// storage).
pub struct OwnKafka {
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnKafka {
    /// Starts one; panics if `TRELLIS_TANSU` (set by scripts/services.sh) is missing.
    pub fn start() -> Self {
        let port = free_port();
        let mut me = Self { port, child: None };
        me.restart();
        me
    }

    /// Its `host:port`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// (Re)starts the broker on the same port, waiting until it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        let bin = std::env::var("TRELLIS_TANSU").unwrap_or_else(|_| {
            panic!("TRELLIS_TANSU is not set: start the test services (scripts/services.sh start kafka)")
        });
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = std::process::Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        self.child = Some(child);
        if listening(self.port, 200) {
            return;
        }
        panic!("own Kafka broker did not start on port {}", self.port);
    }

    /// Kills it (the port stays reserved for [`OwnKafka::restart`]).
    pub fn kill(&mut self) {
        stop(&mut self.child);
    }
}

impl Drop for OwnKafka {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The URL of the S3-compatible server (moto) started by `scripts/services.sh start s3`;
/// panics when it is not set.
pub fn s3_url() -> String {
    match std::env::var("TRELLIS_S3_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "TRELLIS_S3_URL is not set: start the test services first \
             (`eval \"$(scripts/services.sh start nats redis s3 && scripts/services.sh env)\"`)"
        ),
    }
}

/// The Azure blob emulator's account URL (Azurite, account `devstoreaccount1`), started by
/// `scripts/services.sh start azure`; panics when it is not set.
pub fn azure_url() -> String {
    match std::env::var("TRELLIS_AZURE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "TRELLIS_AZURE_URL is not set: start the test services first \
             (`eval \"$(scripts/services.sh start nats redis s3 azure && scripts/services.sh env)\"`)"
        ),
    }
}

/// The Azure emulator's well-known account key (public: it is Azurite's documented default).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The test Redis server's URL (`TRELLIS_REDIS_URL`); panics when it is not set.
pub fn redis_url() -> String {
    match std::env::var("TRELLIS_REDIS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "TRELLIS_REDIS_URL is not set: start the test services first \
             (`eval \"$(scripts/services.sh start nats redis && scripts/services.sh env)\"`)"
        ),
    }
}

/// A process's memory from `/proc/{pid}/status`, in KiB: (resident now, peak resident).
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A binary of this workspace (a provider, the host), next to the running test's own
/// directory: `cargo test --workspace` builds them all. Panics when it is missing.
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("no current exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test binary outside a target directory");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build the workspace binaries first (`cargo build --workspace --bins`)",
        bin.display()
    );
    bin
}

/// A redis-server owned by one test (to stop and restart it), on a free loopback port, no
/// persistence. Killed on drop.
pub struct OwnRedis {
    /// Its port.
    pub port: u16,
    args: Vec<String>,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    /// Starts one; panics if `TRELLIS_REDIS_SERVER` (set by scripts/services.sh) is missing.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts one with further arguments; `{port}` in them stands for its port (which the
    /// plain listener leaves alone when one of them says `--port 0`: a TLS-only server).
    pub fn start_with(args: &[&str]) -> Self {
        let port = free_port();
        let args = args
            .iter()
            .map(|a| a.replace("{port}", &port.to_string()))
            .collect();
        let mut me = Self {
            port,
            args,
            child: None,
        };
        me.restart();
        me
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)starts it on the same port (empty: no persistence), waiting until it accepts
    /// connections.
    pub fn restart(&mut self) {
        self.kill();
        let bin = std::env::var("TRELLIS_REDIS_SERVER").unwrap_or_else(|_| {
            panic!("TRELLIS_REDIS_SERVER is not set: run the tests through scripts/test.sh")
        });
        let child = std::process::Command::new(&bin)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        self.child = Some(child);
        if listening(self.port, 100) {
            return;
        }
        panic!("own redis-server did not start on port {}", self.port);
    }

    /// Kills it (the port stays reserved for [`OwnRedis::restart`]).
    pub fn kill(&mut self) {
        stop(&mut self.child);
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Invokes `func` of `instance` with raw parameter bytes (forged ones, in the tests that use
/// it) and returns how the call failed. Panics if it was answered, or not within 10 s.
/// (Boxed as `Send`: a generic `async fn` awaited in a spawned task trips the compiler's
/// higher-ranked `Send` check.)
pub fn forged_call<'a, C>(
    client: &'a C,
    cx: C::Context,
    instance: &'a str,
    func: &'a str,
    params: bytes::Bytes,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send + 'a>>
where
    C: wrpc_transport::Invoke + Sync,
    C::Context: Send + 'a,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    Box::pin(async move {
        let call = async {
            let paths: &[&[Option<usize>]] = &[];
            let (mut tx, mut rx) = client.invoke(cx, instance, func, params, paths).await?;
            tx.shutdown().await?;
            let mut results = Vec::new();
            rx.read_to_end(&mut results).await?;
            anyhow::Ok(results)
        };
        match tokio::time::timeout(Duration::from_secs(10), call).await {
            Ok(Ok(results)) => panic!("the forged call was answered: {results:?}"),
            Ok(Err(err)) => format!("{err:#}"),
            Err(_) => panic!("the forged call was never answered"),
        }
    })
}
