//! The NATS server `trellis up` starts for a local lattice: JetStream on, loopback only,
//! its storage in the session's directory.
//!
//! The binary is the one the project installs (`scripts/services.sh install nats` puts
//! nats-server in `~/.cache/trellis/venv/bin`), else `nats-server` on `PATH`, else what
//! `--nats-server` / `TRELLIS_NATS_SERVER` names.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// Why the server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum NatsServerError {
    /// No binary was found.
    #[error(
        "nats-server not found (looked for --nats-server/TRELLIS_NATS_SERVER, {0}, and on PATH); \
         run `scripts/services.sh install nats`, or join an existing lattice with --nats-url"
    )]
    NotFound(String),
    /// It could not be started or configured.
    #[error("cannot start nats-server {path}: {message}")]
    Start {
        /// The binary.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// It started but did not accept connections in time.
    #[error("nats-server did not accept connections on port {port} within {secs} s: {log}")]
    NotReady {
        /// Its port.
        port: u16,
        /// How long we waited.
        secs: u64,
        /// The end of its log.
        log: String,
    },
}

/// Finds the nats-server binary.
pub fn locate(explicit: Option<&Path>, home: &Path) -> Result<PathBuf, NatsServerError> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let bundled = home.join("venv").join("bin").join("nats-server");
    if bundled.is_file() {
        return Ok(bundled);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .ok_or_else(|| NatsServerError::NotFound(bundled.display().to_string()))
}

/// A nats-server child; killed if dropped, stopped gracefully by [`NatsServer::stop`].
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    /// Its client URL.
    pub url: String,
    log: PathBuf,
}

impl NatsServer {
    /// Starts `binary` on `port` (0: a free one) with JetStream in `dir`, and waits until it
    /// accepts connections.
    pub async fn start(binary: &Path, port: u16, dir: &Path) -> Result<Self, NatsServerError> {
        let start_err = |message: String| NatsServerError::Start {
            path: binary.to_path_buf(),
            message,
        };
        let port = if port == 0 {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|e| start_err(format!("no free port: {e}")))?
        } else {
            port
        };
        let store = dir.join("jetstream");
        std::fs::create_dir_all(&store)
            .map_err(|e| start_err(format!("{}: {e}", store.display())))?;
        let conf = dir.join("nats.conf");
        // JSON is valid NATS config and quotes the path safely.
        let config = serde_json::json!({
            "listen": format!("127.0.0.1:{port}"),
            "jetstream": { "store_dir": store.display().to_string() },
        });
        std::fs::write(&conf, config.to_string())
            .map_err(|e| start_err(format!("{}: {e}", conf.display())))?;
        let log = dir.join("nats.log");
        let log_file = std::fs::File::create(&log)
            .map_err(|e| start_err(format!("{}: {e}", log.display())))?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|e| start_err(e.to_string()))?)
            .stderr(log_file)
            // Its own process group: Ctrl-C in the terminal reaches `trellis up` only,
            // which stops everything in order (providers first, NATS last).
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| start_err(e.to_string()))?;
        let mut me = Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            log,
        };
        let wait = Duration::from_secs(20);
        let deadline = Instant::now() + wait;
        loop {
            if let Ok(Some(status)) = me.child.try_wait() {
                return Err(start_err(format!("exited ({status}): {}", me.log_tail())));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(me);
            }
            if Instant::now() >= deadline {
                return Err(NatsServerError::NotReady {
                    port,
                    secs: wait.as_secs(),
                    log: me.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// Asks it to stop (SIGTERM), waits up to `grace`, then kills it.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self
            .child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
