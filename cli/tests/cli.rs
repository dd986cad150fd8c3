//! The `trellis` binary end to end, against real nats-server instances.
//!
//! - `up` of the example counter app: its own nats-server on a free port, the host, the
//!   http-server and keyvalue-nats providers; `curl` counts 1, 2, 3; a second `up` is
//!   refused; `inventory` and `link ping` see it all; Ctrl-C leaves no process behind.
//! - link and config round trips and a failed link in `link ping` (exit code 3), on the
//!   test services' NATS with a lattice of their own.
//! - a broken manifest fails before anything starts, naming file, line, column and field.
//! - `up` of the example events app: messages published on the lattice's NATS are counted
//!   per subject by the component, and the counts come back over HTTP.
//! - `up` of the example files app: a file uploaded over HTTP lands in blobstore-fs's root,
//!   is listed, downloaded byte for byte, deleted.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use trellis_tests as common;

const APP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/counter/app.yaml");
const FILES_APP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/files/app.yaml");
const EVENTS_APP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/events/app.yaml");

fn trellis() -> PathBuf {
    common::workspace_bin("trellis")
}

fn temp_home(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "trellis-cli-{tag}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("temp home");
    dir
}

/// A `trellis` command isolated from the developer's environment and running `up`.
fn cmd(home: &Path) -> Command {
    let mut c = Command::new(trellis());
    c.env("TRELLIS_HOME", home)
        .env_remove("TRELLIS_NATS_URL")
        .env_remove("TRELLIS_LATTICE")
        .env("RUST_LOG", "warn");
    c
}

fn run(c: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().expect("run trellis");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `GET /` over a fresh connection; the body.
fn get(port: u16) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP response: {text:?}")))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("not 200: {head} {body}")));
    }
    Ok(body.to_string())
}

/// Children of `pid` (from /proc).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …; comm may hold spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("X");
            state != "Z" && state != "X"
        })
        .unwrap_or(false)
}

fn sigint(pid: u32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
}

/// A running `trellis up`, killed if the test fails half way.
struct Up {
    child: Child,
    log: PathBuf,
}

impl Up {
    fn start(home: &Path, port: u16) -> Self {
        Self::start_app(home, Path::new(APP), port)
    }

    /// `trellis up app` with its own nats-server (`COUNTER_PORT`: `port`).
    fn start_app(home: &Path, app: &Path, port: u16) -> Self {
        Self::start_app_with(home, app, &[("COUNTER_PORT", port.to_string())])
    }

    /// `trellis up app` with its own nats-server and `env`.
    fn start_app_with(home: &Path, app: &Path, env: &[(&str, String)]) -> Self {
        let log = home.join("up.stderr");
        let child = cmd(home)
            .arg("up")
            .arg(app)
            .args(["--nats-port", "0"])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env(
                "TRELLIS_NATS_SERVER",
                std::env::var("TRELLIS_NATS_SERVER").expect(
                    "TRELLIS_NATS_SERVER is not set: start the test services (scripts/services.sh)",
                ),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn trellis up");
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Ctrl-C, then waits up to `within` for a clean exit.
    fn interrupt(&mut self, within: Duration) {
        sigint(self.child.id());
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "up did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(status.success(), "{status}:\n{}", self.log());
    }

    fn wait_for(&mut self, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log().contains(text) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "trellis up exited ({status}) before {text:?}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} in time:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            for pid in children(self.child.id()) {
                if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `trellis up` joined to a nats-server that lets in only holders of a user JWT, over TLS:
/// the host and both providers it starts join with the credentials file and CA `up` was
/// given (before, the providers crash-looped), and the app answers.
#[test]
fn up_joins_a_lattice_requiring_user_jwts_and_tls_with_every_process() {
    let secure = trellis_tests::secure_nats::SecureNats::start();
    let home = temp_home("secure");
    let port = free_port();
    let log = home.join("up.stderr");
    let child = cmd(&home)
        .args(["--nats-url", &secure.url()])
        .arg("--nats-creds")
        .arg(&secure.creds_file)
        .arg("--nats-tls-ca")
        .arg(&secure.ca_file)
        .args(["up", APP])
        .env("COUNTER_PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn trellis up");
    let mut up = Up { child, log };
    up.wait_for("ready in", Duration::from_secs(180));
    let counts: Vec<String> = (0..3).map(|_| get(port).expect("GET /")).collect();
    assert_eq!(counts, ["1\n", "2\n", "3\n"], "{}", up.log());
    let log = up.log();
    assert!(!log.contains("exited"), "a provider exited:\n{log}");
    // The user's seed is never printed.
    assert!(
        !log.contains(&secure.user_seed),
        "the seed leaked into up's output"
    );
    // Both providers run (they crash-looped when the host passed them no credentials).
    let joined = |c: &mut Command| {
        c.args(["--nats-url", &secure.url()])
            .arg("--nats-tls-ca")
            .arg(&secure.ca_file);
    };
    let mut inventory = cmd(&home);
    joined(&mut inventory);
    inventory.arg("--nats-creds").arg(&secure.creds_file);
    let (code, out, err) = run(inventory.args(["inventory", "--json"]));
    assert_eq!(code, 0, "{out}{err}");
    let inv: Value = serde_json::from_str(&out).expect("inventory JSON");
    let states: Vec<&str> = inv["hosts"][0]["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .map(|p| p["state"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(states, ["running", "running"], "{out}");
    // The server does require the credentials: without them, nothing joins.
    let mut anonymous = cmd(&home);
    joined(&mut anonymous);
    let (code, out, err) = run(anonymous.args(["inventory", "--json"]));
    assert_ne!(code, 0, "joined without credentials: {out}");
    assert!(err.to_lowercase().contains("authoriz"), "{err}");
    up.interrupt(Duration::from_secs(60));
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn up_runs_the_counter_app_and_ctrl_c_leaves_nothing() {
    let home = temp_home("up");
    let port = free_port();
    let mut up = Up::start(&home, port);
    up.wait_for("ready in", Duration::from_secs(180));
    let log = up.log();
    assert!(
        log.contains(&format!("http://127.0.0.1:{port}/ → counter")),
        "{log}"
    );

    let counts: Vec<String> = (0..3).map(|_| get(port).expect("GET /")).collect();
    assert_eq!(counts, ["1\n", "2\n", "3\n"], "{}", up.log());

    // A second `up` is refused and names the first.
    let (code, _, err) = run(cmd(&home).args(["up", APP]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("another `trellis up` is running") && err.contains(&up.child.id().to_string()),
        "{err}"
    );

    // Commands find the lattice through the running `up`.
    let (code, out, err) = run(cmd(&home).args(["inventory", "--json"]));
    assert_eq!(code, 0, "{out}{err}");
    let inv: Value = serde_json::from_str(&out).expect("inventory JSON");
    let host = &inv["hosts"][0];
    assert_eq!(host["components"][0]["id"], "counter", "{out}");
    assert_eq!(host["components"][0]["served"], 3, "{out}");
    let states: Vec<&str> = host["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .map(|p| p["state"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(states, ["running", "running"], "{out}");
    let links = inv["links"].as_array().expect("links");
    assert_eq!(links.len(), 2, "{out}");
    assert!(links.iter().all(|l| l["status"] == "active"), "{out}");

    let (code, out, err) = run(cmd(&home).args(["link", "ping"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("http-server") && out.contains("keyvalue-nats") && out.contains("active"),
        "{out}"
    );

    // Ctrl-C: everything stops, nothing is left behind.
    let kids = children(up.child.id());
    assert!(
        kids.len() >= 3,
        "expected nats-server and two providers, got {kids:?}"
    );
    up.interrupt(Duration::from_secs(60));
    for pid in kids {
        assert!(
            !alive(pid),
            "process {pid} outlived `trellis up`:\n{}",
            up.log()
        );
    }
    assert!(get(port).is_err(), "the HTTP port still answers");
    assert!(!home.join("up.json").exists(), "state file left behind");
    assert!(up.log().contains("nats-server"), "{}", up.log());
    // And `up` can run again (the lock was released).
    let (code, _, err) = run(cmd(&home).args(["down"]));
    assert_eq!(code, 4, "`down` with nothing running: {err}");
    let _ = std::fs::remove_dir_all(&home);
}

/// `trellis` on the shared test NATS, lattice `lattice`.
fn on(home: &Path, lattice: &str) -> Command {
    let mut c = cmd(home);
    c.args(["--nats-url", &common::nats_url(), "--lattice", lattice]);
    c
}

/// The connection flags are accepted after the subcommand too (as the README's several-machines
/// command writes them): what one command puts with them placed last, another reads with
/// them placed first.
#[test]
fn connection_flags_work_before_and_after_the_subcommand() {
    let home = temp_home("flags");
    let lattice = common::unique_lattice("cli");
    let (code, _, err) = run(cmd(&home).args([
        "config",
        "put",
        "placed-last",
        "k=v",
        "--nats-url",
        &common::nats_url(),
        "--lattice",
        &lattice,
    ]));
    assert_eq!(code, 0, "{err}");
    let (code, out, err) =
        run(on(&home, &lattice).args(["config", "get", "placed-last", "--json"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json"),
        serde_json::json!({ "k": "v" })
    );
    // `up` takes them after its manifest; an unreachable server is reported as such, not as
    // an unexpected argument.
    let (code, _, err) = run(cmd(&home).args([
        "up",
        APP,
        "--nats-url",
        "nats://127.0.0.1:1",
        "--lattice",
        &lattice,
        "--ready-timeout",
        "5",
    ]));
    assert_ne!(code, 2, "the command line was refused: {err}");
    assert!(!err.contains("unexpected argument"), "{err}");
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn links_and_config_round_trip_and_a_failed_link_shows_in_ping() {
    let home = temp_home("links");
    let lattice = common::unique_lattice("cli");

    // Config: put, get (JSON), delete, gone.
    let (code, _, err) = run(on(&home, &lattice).args([
        "config",
        "put",
        "web-cfg",
        "address=127.0.0.1:1",
        "mode=x=y",
    ]));
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(on(&home, &lattice).args(["config", "get", "web-cfg", "--json"]));
    assert_eq!(code, 0, "{err}");
    let got: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        got,
        serde_json::json!({ "address": "127.0.0.1:1", "mode": "x=y" })
    );
    let (code, out, _) = run(on(&home, &lattice).args(["config", "get", "web-cfg"]));
    assert_eq!(code, 0);
    assert!(
        out.starts_with("KEY") && out.contains("mode     x=y"),
        "{out}"
    );
    let (code, _, err) = run(on(&home, &lattice).args(["config", "put", "bad", "novalue"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("KEY=VALUE"), "{err}");

    // A link naming config that does not exist is refused.
    let (code, _, err) = run(on(&home, &lattice).args([
        "link",
        "put",
        "http",
        "web",
        "wasi:http/incoming-handler",
        "--source-config",
        "nope",
    ]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("\"nope\", which does not exist"), "{err}");

    // A provider whose link fails: http-server cannot bind a non-local address.
    let (code, _, err) =
        run(on(&home, &lattice).args(["config", "put", "unbindable", "address=192.0.2.1:80"]));
    assert_eq!(code, 0, "{err}");
    let mut provider = Command::new(common::workspace_bin("http-server"))
        .args([
            "--lattice",
            &lattice,
            "--provider-id",
            "http",
            "--nats-url",
            &common::nats_url(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start http-server");
    let (code, out, err) = run(on(&home, &lattice).args([
        "link",
        "put",
        "http",
        "web",
        "wasi:http/incoming-handler",
        "--source-config",
        "unbindable",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("http → web (wasi:http/incoming-handler) as default"),
        "{out}"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let out = loop {
        let (code, out, err) = run(on(&home, &lattice).args(["link", "ping", "http"]));
        if code == 3 {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "no failed link in ping: {code} {out}{err}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        out.contains("failed:") && out.contains("192.0.2.1:80"),
        "{out}"
    );
    let (code, out, _) = run(on(&home, &lattice).args(["link", "get", "--json"]));
    assert_eq!(code, 3, "{out}");
    let links: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(links[0]["status"], "failed", "{out}");
    assert_eq!(links[0]["source_config"][0], "unbindable", "{out}");

    // Purge drops the link's resources at the provider; ping then shows it purged.
    let (code, out, err) = run(on(&home, &lattice).args([
        "link", "purge", "http", "--source", "http", "--target", "web", "--json",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    let purged: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(purged[0]["provider_id"], "http", "{out}");
    assert_eq!(
        purged[0]["purged"].as_array().map(Vec::len),
        Some(1),
        "{out}"
    );
    let (_, out, err) = run(on(&home, &lattice).args(["link", "ping", "http", "--json"]));
    assert!(out.contains("\"purged\""), "{out}{err}");

    // Config in use cannot be deleted; the link can; then the config can.
    let (code, _, err) = run(on(&home, &lattice).args(["config", "del", "unbindable"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is used by"), "{err}");
    let (code, _, err) = run(on(&home, &lattice).args(["link", "del", "http", "wasi:http"]));
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = run(on(&home, &lattice).args(["link", "del", "http", "wasi:http"]));
    assert_eq!(code, 4, "deleting a missing link");
    let (code, _, err) = run(on(&home, &lattice).args(["config", "del", "unbindable"]));
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = run(on(&home, &lattice).args(["config", "get", "unbindable"]));
    assert_eq!(code, 4, "a deleted config is not found");

    // The provider shows in the inventory as standalone (no host started it).
    let (code, out, err) = run(on(&home, &lattice).args(["inventory"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("PROVIDERS") && out.contains("(standalone)"),
        "{out}"
    );

    let _ = provider.kill();
    let _ = provider.wait();
    let _ = std::fs::remove_dir_all(&home);
}

/// The credential flags reach NATS: a user and password the server requires let a command
/// through, a wrong password fails it with the server's reason, and no password is printed.
#[test]
fn credential_flags_authenticate_and_are_never_printed() {
    let nats = common::OwnNats::start_with_config(
        "authorization { users = [ { user: \"cli\", password: \"s3cret-pw\" } ] }",
    );
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let home = temp_home("creds");
    let lattice = common::unique_lattice("cli");
    let with = |password: &str| {
        let mut c = cmd(&home);
        c.args([
            "config",
            "put",
            "c",
            "k=v",
            "--nats-url",
            &url,
            "--lattice",
            &lattice,
            "--nats-user",
            "cli",
            "--nats-password",
            password,
        ]);
        c
    };
    let (code, out, err) = run(&mut with("s3cret-pw"));
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&mut with("wrong-pw"));
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.to_lowercase().contains("authoriz"), "{err}");
    assert!(
        !out.contains("wrong-pw") && !err.contains("wrong-pw"),
        "{out}{err}"
    );
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn a_broken_manifest_names_file_line_and_field() {
    let home = temp_home("manifest");
    let app = home.join("app.yaml");
    std::fs::write(
        &app,
        "name: broken\ncomponents:\n  - id: web\n    path: web.wasm\nlinks:\n  - source: web\n    target: kv\n    wit: wasi:keyvalue/store\n",
    )
    .expect("write");
    let started = Instant::now();
    let (code, _, err) = run(cmd(&home).args(["up", app.to_str().expect("utf-8")]));
    assert_eq!(code, 2, "{err}");
    let expected = format!(
        "{}:7:13: links[0].target: \"kv\" is not a component or provider",
        app.display()
    );
    assert!(err.contains(&expected), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        !home.join("up").exists(),
        "nothing may start for a broken manifest"
    );

    std::fs::write(
        &app,
        "name: broken\ncomponents:\n  - id: web\n    pth: web.wasm\n",
    )
    .expect("write");
    let (code, _, err) = run(cmd(&home).args(["up", app.to_str().expect("utf-8")]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("pth") && err.contains('4'), "{err}");
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn ctrl_c_while_starting_leaves_nothing() {
    let home = temp_home("early");
    let port = free_port();
    let mut up = Up::start(&home, port);
    // Collect every child seen until the first link is put (providers start right after),
    // then interrupt.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while !up.log().contains("✓ link") {
        seen.extend(children(up.child.id()));
        if let Ok(Some(status)) = up.child.try_wait() {
            panic!("trellis up exited ({status}) early:\n{}", up.log());
        }
        assert!(
            Instant::now() < deadline,
            "no link put in time:\n{}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    seen.extend(children(up.child.id()));
    sigint(up.child.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        seen.extend(children(up.child.id()));
        if let Some(status) = up.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "up did not stop:\n{}", up.log());
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}:\n{}", up.log());
    assert!(!seen.is_empty(), "nats-server was never seen");
    for pid in seen {
        assert!(
            !alive(pid),
            "process {pid} outlived `trellis up`:\n{}",
            up.log()
        );
    }
    assert!(!home.join("up.json").exists(), "state file left behind");
    let _ = std::fs::remove_dir_all(&home);
}

/// A manifest whose component imports what nothing serves: `up` names every such import and
/// starts nothing; `component inspect` shows what serves each import, before and after the
/// links are added.
#[test]
fn unmet_imports_are_named_before_anything_starts() {
    let home = temp_home("preflight");
    let app = home.join("app.yaml");
    let compat = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/components/prebuilt/compat.wasm"
    );
    let unlinked = format!("name: compat\ncomponents:\n  - id: compat\n    path: {compat}\n");
    std::fs::write(&app, &unlinked).expect("write");
    let app_arg = app.to_str().expect("utf-8");
    let (code, _, err) = run(cmd(&home).args(["up", app_arg]));
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("2 import(s) would have nothing to serve them"),
        "{err}"
    );
    assert!(
        err.contains(
            "compat: wasi:keyvalue/store@0.2.0-draft: no link from compat for wasi:keyvalue/store"
        ),
        "{err}"
    );
    assert!(
        err.contains("compat: wasi:http/outgoing-handler@0.2.6: no link from compat"),
        "{err}"
    );
    assert!(!home.join("up").exists(), "nothing may start");

    let inspect =
        |home: &Path| run(cmd(home).args(["component", "inspect", compat, "--manifest", app_arg]));
    let (code, out, err) = inspect(&home);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("NOTHING: no link from compat for wasi:keyvalue/store"),
        "{out}"
    );
    let bus = out
        .lines()
        .find(|l| l.starts_with("wasmcloud:bus/lattice@2.0.1"))
        .unwrap_or_default();
    assert!(bus.ends_with("  host"), "{out}");
    assert!(
        out.contains("EXPORT\ntrellis-test:components/compat@0.1.0"),
        "{out}"
    );

    let linked = format!(
        "{unlinked}providers:\n  - id: kv\n    ref: keyvalue-nats\n  - id: web\n    ref: http-client\nlinks:\n  - source: compat\n    target: kv\n    wit: wasi:keyvalue/store,atomics,batch\n  - source: compat\n    target: web\n    wit: wasi:http/outgoing-handler\n"
    );
    std::fs::write(&app, linked).expect("write");
    let (code, out, err) = inspect(&home);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("NOTHING"), "{out}");
    let kv = out
        .lines()
        .find(|l| l.starts_with("wasi:keyvalue/store@0.2.0-draft"))
        .unwrap_or_default();
    assert!(kv.ends_with("link: kv (default)"), "{out}");
    let _ = std::fs::remove_dir_all(&home);
}

/// A provider binary that speaks only the 1.x protocol (no link ping), packaged as a 1.x
/// provider archive by `trellis provider package` and given to `up` as that archive: its
/// links are reported as put ("1.x provider: no ping") without waiting out the ready timeout,
/// and `inventory` and `link ping` say what it is instead of failing; Ctrl-C stops it.
#[test]
fn a_1x_provider_is_shown_honestly() {
    let home = temp_home("legacy");
    let app = home.join("app.yaml");
    let hello = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/components/prebuilt/hello.wasm"
    );
    // Packaged as a 1.x provider archive, which the manifest gives as its `path:`.
    let par = home.join("legacy.par.gz");
    let binary = common::workspace_bin("legacy-provider");
    let (code, out, err) = run(cmd(&home)
        .args(["provider", "package"])
        .arg(&binary)
        .args(["--version", "0.1.0", "--out"])
        .arg(&par));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("wrote") && out.contains("signed by A"),
        "{out}"
    );
    for seed in ["issuer.nk", "legacy-provider_service.nk"] {
        let seed = std::fs::read_to_string(home.join("keys").join(seed)).expect("a kept seed");
        assert!(!out.contains(seed.trim()), "a seed was printed: {out}");
    }
    let legacy = par;
    std::fs::write(
        &app,
        format!(
            "name: legacy\ncomponents:\n  - id: hello\n    path: {hello}\nproviders:\n  - id: legacy\n    path: {}\nlinks:\n  - source: legacy\n    target: hello\n    wit: wasi:http/incoming-handler\n    source_secrets: {{ token: legacy-token }}\nsecrets:\n  legacy-token: {{ env: LEGACY_TOKEN }}\n",
            legacy.display()
        ),
    )
    .expect("write");
    let started = Instant::now();
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let env = [("LEGACY_TOKEN", token.clone()), ("RUST_LOG", "info".into())];
    let mut up = Up::start_app_with(&home, &app, &env);
    up.wait_for("ready in", Duration::from_secs(50));
    let log = up.log();
    assert!(
        log.contains("link put") && log.contains("(1.x provider: no ping)"),
        "{log}"
    );
    assert!(!log.contains("problems"), "{log}");
    // The host sealed the link's secret into the 1.x host data; the 1.x provider opened it
    // with the 1.x xkeys.
    up.wait_for(
        "legacy-provider opened the source_secrets of link default: token",
        Duration::from_secs(10),
    );
    assert!(
        !up.log().contains(&token),
        "the token leaked:\n{}",
        up.log()
    );
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "waited out the timeout"
    );

    let (code, out, err) = run(cmd(&home).args(["inventory"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1.x: no ping"), "{out}");
    let (code, out, err) = run(cmd(&home).args(["inventory", "--json"]));
    assert_eq!(code, 0, "{out}{err}");
    let inv: Value = serde_json::from_str(&out).expect("inventory JSON");
    assert_eq!(inv["links"][0]["status"], "1.x provider: no ping", "{out}");

    let (code, out, err) = run(cmd(&home).args(["link", "ping", "legacy"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("legacy: 1.x provider: no ping (it answers health: healthy (legacy ok))"),
        "{out}"
    );

    let kids = children(up.child.id());
    up.interrupt(Duration::from_secs(30));
    for pid in kids {
        assert!(!alive(pid), "process {pid} outlived `trellis up`");
    }
    let _ = std::fs::remove_dir_all(&home);
}

/// One HTTP/1.1 request over a fresh connection: status and body.
fn request(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes)?;
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP response head"))?;
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    let mut body = bytes[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = unchunk(&body);
    }
    Ok((status, body))
}

/// A chunked body decoded (the test's own responses: well formed).
fn unchunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16)
            .expect("chunk size");
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
    out
}

#[test]
fn up_runs_the_files_app_and_streams_files_both_ways() {
    let home = temp_home("files");
    let root = home.join("blobs");
    let port = free_port();
    let env = [
        ("FILES_PORT", port.to_string()),
        ("FILES_ROOT", root.display().to_string()),
    ];
    let mut up = Up::start_app_with(&home, Path::new(FILES_APP), &env);
    up.wait_for("ready in", Duration::from_secs(180));

    // 8 MiB up: streamed by the component into blobstore-fs, landing under the root.
    let data: Vec<u8> = (0..8 << 20).map(|i| (i % 251) as u8).collect();
    let (status, body) = request(port, "PUT", "/files/photos/big%20one.bin", &data).expect("PUT");
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 201, "{text}\n{}", up.log());
    assert_eq!(
        text,
        format!("stored photos/big one.bin ({} bytes)\n", data.len())
    );
    let stored = std::fs::read(root.join("files/photos/big one.bin")).expect("on disk");
    assert!(stored == data, "the stored file differs");

    let (status, body) = request(port, "GET", "/files/", b"").expect("list");
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"photos/big one.bin\n"[..])
    );
    let (status, body) = request(port, "GET", "/files/photos/big%20one.bin", b"").expect("GET");
    assert_eq!(status, 200);
    assert!(
        body == data,
        "downloaded {} bytes, not the file",
        body.len()
    );
    let (status, body) = request(port, "GET", "/files/nothing-here", b"").expect("GET");
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    // A malformed escape or a name trying to leave the root: refused, nothing touched.
    let (status, body) = request(port, "GET", "/files/bad%zzescape", b"").expect("GET");
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (status, _) = request(port, "PUT", "/files/..%2F..%2Fescaped", b"x").expect("PUT");
    assert_eq!(status, 400, "an escaping name");
    assert!(!root.parent().unwrap().join("escaped").exists());

    let (status, _) = request(port, "DELETE", "/files/photos/big%20one.bin", b"").expect("DEL");
    assert_eq!(status, 204);
    assert!(!root.join("files/photos/big one.bin").exists());
    up.interrupt(Duration::from_secs(60));
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn up_runs_the_events_app_and_counts_messages() {
    let home = temp_home("events");
    let port = free_port();
    let env = [("EVENTS_PORT", port.to_string())];
    let mut up = Up::start_app_with(&home, Path::new(EVENTS_APP), &env);
    up.wait_for("ready in", Duration::from_secs(180));
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("up.json")).expect("up.json"))
            .expect("up.json is JSON");
    let nats_url = state["nats_url"].as_str().expect("nats_url").to_string();
    // The lattice's NATS admits only the identities `up` issued: the admin's credentials
    // are where up.json says.
    let creds = state["nats_creds"]
        .as_str()
        .expect("nats_creds")
        .to_string();
    // Ten messages on each of three subjects, on the lattice's own NATS.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let refused = tokio::time::timeout(Duration::from_secs(5), async_nats::connect(&nats_url));
        match refused.await {
            Ok(Err(err)) => assert!(err.to_string().contains("authoriz"), "{err}"),
            Ok(Ok(_)) => panic!("an anonymous client joined the lattice"),
            Err(_) => panic!("an anonymous connection neither joined nor was refused"),
        }
        let nats = async_nats::ConnectOptions::with_credentials_file(&creds)
            .await
            .expect("admin creds")
            .connect(&nats_url)
            .await
            .expect("connect");
        for i in 0..30 {
            let subject = format!("events.{}", ["a", "b", "c"][i % 3]);
            nats.publish(subject, "hi".into()).await.expect("publish");
        }
        nats.flush().await.expect("flush");
    });
    let expected = "events.a 10\nevents.b 10\nevents.c 10\n";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = request(port, "GET", "/counts", b"").expect("GET /counts");
        let body = String::from_utf8_lossy(&body).into_owned();
        if status == 200 && body == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "counts: {status} {body:?}\n{}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, out, err) = run(cmd(&home).args(["link", "ping"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("delivered 30"), "{out}");
    up.interrupt(Duration::from_secs(60));
    let _ = std::fs::remove_dir_all(&home);
}

/// Secrets end to end: `up` puts the manifest's secrets in the lattice's secret store; the
/// host reads the component's grant and seals the Redis password for keyvalue-redis, which
/// opens a password-protected redis-server with it (the counter counts). Every line `up`
/// wrote — its own, the host's and the providers', at debug level — and every CLI output
/// (`secret put/list/del`, `config get` of the reference, `link get`, `inventory`, `link
/// ping`) is scanned for the known values: none appears.
#[test]
fn secrets_reach_their_readers_and_no_output_shows_them() {
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let api_key = format!("ak-{}", uuid::Uuid::new_v4().simple());
    let extra = format!("ex-{}", uuid::Uuid::new_v4().simple());
    let redis = common::OwnRedis::start_with(&["--requirepass", &password]);
    let home = temp_home("secrets");
    let port = free_port();
    let counter = Path::new(APP).with_file_name("counter.wasm");
    let app = write_app(
        &home,
        format!(
            "name: vault\n\
             components:\n  - id: counter\n    path: {}\n    config: {{ bucket: counter, key: count }}\n    \
             secrets:\n      api-key: {{ secret: api-key }}\n\
             providers:\n  - id: http-server\n    ref: http-server\n  - id: kv\n    ref: keyvalue-redis\n\
             links:\n  - source: http-server\n    target: counter\n    wit: wasi:http/incoming-handler\n    \
             source_config: {{ address: \"127.0.0.1:{port}\" }}\n  \
             - source: counter\n    target: kv\n    wit: wasi:keyvalue/store,atomics\n    \
             target_config: {{ url: \"{}\", auto_create: true }}\n    target_secrets: {{ password: redis-password }}\n\
             secrets:\n  redis-password: {{ env: TEST_REDIS_PASSWORD }}\n  api-key: {{ env: TEST_API_KEY }}\n",
            counter.display(),
            redis.url(),
        ),
    );
    let mut up = Up::start_app_with(
        &home,
        &app,
        &[
            ("TEST_REDIS_PASSWORD", password.clone()),
            ("TEST_API_KEY", api_key.clone()),
            ("RUST_LOG", "debug".into()),
        ],
    );
    up.wait_for("ready in", Duration::from_secs(180));
    let counts: Vec<String> = (0..3).map(|_| get(port).expect("GET /")).collect();
    assert_eq!(counts, ["1\n", "2\n", "3\n"], "{}", up.log());

    let mut outputs = Vec::new();
    let mut cli = |args: &[&str], stdin: Option<&str>| -> (i32, String) {
        let mut c = cmd(&home);
        c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        c.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = c.spawn().expect("run trellis");
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(text.as_bytes()).expect("write stdin");
        }
        let out = child.wait_with_output().expect("wait");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push((args.join(" "), text.clone()));
        (out.status.code().unwrap_or(-1), text)
    };
    let (code, out) = cli(&["secret", "list", "--json"], None);
    assert_eq!(code, 0, "{out}");
    let listed: Value = serde_json::from_str(&out).expect("secret list JSON");
    let readers = |name: &str| {
        listed
            .as_array()
            .expect("list")
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["readers"].clone())
    };
    assert_eq!(readers("redis-password"), Some(serde_json::json!(["kv"])));
    assert_eq!(readers("api-key"), Some(serde_json::json!(["counter"])));
    let (code, out) = cli(
        &["secret", "put", "extra", "--reader", "x"],
        Some(&format!("{extra}\n")),
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("secret extra stored (version 1"), "{out}");
    for args in [
        &["secret", "list"][..],
        &["config", "get", "SECRET_vault-link-1-target-password"],
        &["link", "get", "--json"],
        &["inventory", "--json"],
        &["link", "ping"],
        &["secret", "del", "extra"],
    ] {
        let (code, out) = cli(args, None);
        assert_eq!(code, 0, "{}: {out}", args.join(" "));
    }
    let (_, reference) = &outputs[3];
    assert!(
        reference.contains("redis-password") && reference.contains("trellis"),
        "{reference}"
    );
    up.interrupt(Duration::from_secs(60));
    let log = up.log();
    assert!(log.contains("DEBUG"), "not a debug-level log:\n{log}");
    outputs.push(("up".into(), log));
    for (what, text) in &outputs {
        for value in [&password, &api_key, &extra] {
            assert!(
                !text.contains(value.as_str()),
                "`trellis {what}` showed a secret:\n{text}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&home);
}

/// Writes manifest `text` as `app.yaml` in `home`.
fn write_app(home: &Path, text: String) -> PathBuf {
    let app = home.join("app.yaml");
    std::fs::write(&app, text).expect("manifest");
    app
}

/// A standalone provider started by hand with `--nats-*` flags, its output in `log`.
fn standalone(bin: &str, id: &str, url: &str, creds: &Path, log: &Path) -> Child {
    Command::new(common::workspace_bin(bin))
        .args([
            "--lattice",
            "default",
            "--provider-id",
            id,
            "--nats-url",
            url,
        ])
        .arg("--nats-creds")
        .arg(creds)
        .env("RUST_LOG", "info")
        .env_remove("TRELLIS_NATS_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("spawn the external service")
}

/// An external service ("virtual component") declared in the manifest joins with the
/// credentials `up` issued it — the SDK's standalone mode, here keyvalue-redis — and serves
/// the counter component over its link. Another declared service's credentials (stolen, but
/// scoped to that other service) cannot serve it: the server refuses the subscriptions.
#[test]
fn an_external_service_serves_with_its_issued_credentials_only() {
    let home = temp_home("external");
    let port = free_port();
    let counter = Path::new(APP).with_file_name("counter.wasm");
    let app = write_app(
        &home,
        format!(
            "name: ext\n\
             components:\n  - id: counter\n    path: {}\n    config: {{ bucket: counter, key: count }}\n\
             providers:\n  - id: http-server\n    ref: http-server\n\
             external:\n  - id: kv\n    exports: [\"wasi:keyvalue/store,atomics\"]\n  - id: spare\n\
             links:\n  - source: http-server\n    target: counter\n    wit: wasi:http/incoming-handler\n    \
             source_config: {{ address: \"127.0.0.1:{port}\" }}\n  \
             - source: counter\n    target: kv\n    wit: wasi:keyvalue/store,atomics\n    \
             target_config: {{ url: \"{}\", auto_create: true }}\n",
            counter.display(),
            common::redis_url(),
        ),
    );
    let mut up = Up::start_app_with(&home, &app, &[]);
    up.wait_for("ready in", Duration::from_secs(180));
    let log = up.log();
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("up.json")).expect("up.json"))
            .expect("up.json is JSON");
    let url = state["nats_url"].as_str().expect("nats_url").to_string();
    let creds = |id: &str| home.join("up").join(format!("external-{id}.creds"));
    assert!(log.contains(&creds("kv").display().to_string()), "{log}");
    assert!(get(port).is_err(), "answered with no kv service");
    // Declared, not answering yet: inventory and link ping say so.
    let answering = |home: &Path| -> Vec<(String, bool)> {
        let (code, out, err) = run(cmd(home).args(["inventory", "--json"]));
        assert_eq!(code, 0, "{out}{err}");
        let inv: Value = serde_json::from_str(&out).expect("inventory JSON");
        inv["externals"]
            .as_array()
            .expect("externals")
            .iter()
            .map(|e| {
                (
                    e["id"].as_str().unwrap_or_default().to_string(),
                    e["answering"].as_bool().unwrap_or_default(),
                )
            })
            .collect()
    };
    assert_eq!(
        answering(&home),
        [("kv".to_string(), false), ("spare".to_string(), false)]
    );
    let (code, out, err) = run(cmd(&home).args(["link", "ping", "kv"]));
    assert_eq!(code, 4, "{out}{err}");
    assert!(out.contains("kv: external service, not answering"), "{out}");

    // With the spare's credentials, a service cannot take kv's place.
    let impostor_log = home.join("impostor.log");
    let mut impostor = standalone("keyvalue-redis", "kv", &url, &creds("spare"), &impostor_log);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&impostor_log).unwrap_or_default();
        // kv's control subjects (and serving subjects, if it gets that far) are refused.
        if text.contains("Permissions Violation for Subscription to \"wasmbus.rpc.default.kv.") {
            break;
        }
        assert!(Instant::now() < deadline, "no violation reported:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(get(port).is_err(), "the impostor served kv");
    let _ = impostor.kill();
    let _ = impostor.wait();

    // With its own, it serves the component.
    let service_log = home.join("service.log");
    let mut service = standalone("keyvalue-redis", "kv", &url, &creds("kv"), &service_log);
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        match get(port) {
            Ok(count) => break count,
            Err(err) => assert!(
                Instant::now() < deadline,
                "the external service did not serve: {err}\n{}",
                std::fs::read_to_string(&service_log).unwrap_or_default()
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let next: u64 = first.trim().parse::<u64>().expect("a count") + 1;
    assert_eq!(get(port).expect("GET /"), format!("{next}\n"));
    assert_eq!(
        answering(&home),
        [("kv".to_string(), true), ("spare".to_string(), false)]
    );
    let (code, out, err) = run(cmd(&home).args(["link", "ping", "kv"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("counter") && out.contains("active"), "{out}");
    let _ = service.kill();
    let _ = service.wait();
    up.interrupt(Duration::from_secs(60));
    let _ = std::fs::remove_dir_all(&home);
}

/// `trellis compose` plans, refuses ambiguity naming the flag that settles it, writes only
/// its output (the originals stay byte-identical), and `component inspect` shows the parts;
/// then `up` composes a manifest's components (`mode: composed` links and `compose:` files)
/// before anything starts: no runtime link for what was composed, the other imports linked
/// as usual, the inventory naming the parts, the result cached by content.
#[test]
fn components_compose_by_interface_on_the_command_line_and_in_manifests() {
    let home = temp_home("compose");
    let prebuilt = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/components/prebuilt");
    let wasm = |name: &str| prebuilt.join(format!("{name}.wasm")).display().to_string();
    let originals: Vec<Vec<u8>> = ["echo", "greeter", "polite", "exclaim"]
        .iter()
        .map(|n| std::fs::read(wasm(n)).expect("prebuilt"))
        .collect();
    let out = home.join("composed.wasm");
    let out_arg = out.display().to_string();

    let (code, stdout, err) = run(cmd(&home).args([
        "compose",
        &out_arg,
        &wasm("echo"),
        &wasm("greeter"),
        &wasm("polite"),
    ]));
    assert_eq!(code, 1, "{stdout}{err}");
    assert!(
        err.contains("echo.wasm imports trellis-test:greeter/greet@0.1.0, which greeter.wasm and polite.wasm export: pick one with --use trellis-test:greeter/greet=greeter.wasm"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written on refusal");

    let (code, stdout, err) = run(cmd(&home).args([
        "compose",
        "--dry-run",
        "--use",
        "trellis-test:greeter/greet=polite.wasm",
        &out_arg,
        &wasm("echo"),
        &wasm("greeter"),
        &wasm("polite"),
        &wasm("exclaim"),
    ]));
    assert_eq!(code, 0, "{stdout}{err}");
    let wired = |line: &str| {
        stdout
            .lines()
            .any(|l| l.split_whitespace().eq(line.split_whitespace()))
    };
    assert!(
        wired("trellis-test:greeter/greet@0.1.0 echo.wasm polite.wasm"),
        "{stdout}"
    );
    assert!(
        wired("trellis-test:greeter/punctuation@0.1.0 polite.wasm exclaim.wasm"),
        "{stdout}"
    );
    assert!(stdout.contains("not used: greeter.wasm"), "{stdout}");
    assert!(
        stdout.contains("dry run: nothing written") && !out.exists(),
        "{stdout}"
    );

    let (code, stdout, err) = run(cmd(&home).args([
        "--json",
        "compose",
        &out_arg,
        &wasm("echo"),
        &wasm("greeter"),
    ]));
    assert_eq!(code, 0, "{stdout}{err}");
    let report: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(report["wires"][0]["exporter"], "greeter.wasm", "{report}");
    assert!(
        report["open"]
            .as_array()
            .expect("open")
            .iter()
            .any(|o| o["import"] == "wasi:keyvalue/store@0.2.0-draft" && o["served_by"] == "a link"),
        "{report}"
    );
    assert_eq!(
        report["bytes"].as_u64(),
        std::fs::metadata(&out).ok().map(|m| m.len())
    );
    let (code, stdout, err) = run(cmd(&home).args(["component", "inspect", &out_arg]));
    assert_eq!(code, 0, "{stdout}{err}");
    assert!(
        !stdout.contains("trellis-test:greeter/greet"),
        "composed away: {stdout}"
    );
    assert!(
        stdout.ends_with("COMPOSED OF\necho.wasm\ngreeter.wasm\n"),
        "{stdout}"
    );
    let (code, _, err) =
        run(cmd(&home).args(["compose", &wasm("echo"), &wasm("echo"), &wasm("greeter")]));
    assert_eq!(code, 1);
    assert!(err.contains("is one of the parts"), "{err}");
    for (name, before) in ["echo", "greeter", "polite", "exclaim"]
        .iter()
        .zip(&originals)
    {
        assert_eq!(
            &std::fs::read(wasm(name)).expect("read"),
            before,
            "{name} changed"
        );
    }

    // In a manifest: a composed link (app ← greeter) and composed files (chain ← polite ←
    // exclaim); their other imports are linked at runtime.
    let runtime_links = |id: &str| {
        format!(
            "  - source: {id}\n    target: kv\n    wit: wasi:keyvalue/store,atomics,batch\n  \
             - source: {id}\n    target: files\n    wit: wasi:blobstore/blobstore\n    target_config: {{ root: {} }}\n",
            home.join("blobs").display()
        )
    };
    let app = write_app(
        &home,
        format!(
            "name: composed\n\
             components:\n  - id: app\n    path: {}\n  - id: greeter\n    path: {}\n  \
             - id: chain\n    path: {}\n    compose: [{}, {}]\n\
             providers:\n  - id: kv\n    ref: keyvalue-nats\n  - id: files\n    ref: blobstore-fs\n\
             links:\n  - source: app\n    target: greeter\n    wit: trellis-test:greeter/greet\n    mode: composed\n{}{}",
            wasm("echo"),
            wasm("greeter"),
            wasm("echo"),
            wasm("polite"),
            wasm("exclaim"),
            runtime_links("app"),
            runtime_links("chain"),
        ),
    );
    let app_arg = app.display().to_string();
    let (code, stdout, err) = run(cmd(&home).args([
        "component",
        "inspect",
        &wasm("echo"),
        "--manifest",
        &app_arg,
        "--id",
        "app",
    ]));
    assert_eq!(code, 0, "{stdout}{err}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("trellis-test:greeter/greet@0.1.0")
                && l.ends_with("composed: greeter")),
        "{stdout}"
    );
    let mut up = Up::start_app_with(&home, &app, &[]);
    up.wait_for("ready in", Duration::from_secs(180));
    let log = up.log();
    assert!(
        log.contains("composed app") && log.contains("trellis-test:greeter/greet@0.1.0 ← greeter"),
        "{log}"
    );
    assert!(
        log.contains("trellis-test:greeter/punctuation@0.1.0 ← exclaim.wasm"),
        "{log}"
    );
    let (code, stdout, err) = run(cmd(&home).args(["inventory", "--json"]));
    assert_eq!(code, 0, "{stdout}{err}");
    let inventory: Value = serde_json::from_str(&stdout).expect("inventory JSON");
    let parts = |id: &str| -> Vec<String> {
        inventory["hosts"][0]["components"]
            .as_array()
            .expect("components")
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no component {id}: {inventory}"))["parts"]
            .as_array()
            .map(|p| {
                p.iter()
                    .filter_map(|n| n.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(parts("app"), ["app", "greeter"], "{inventory}");
    assert_eq!(
        parts("chain"),
        ["chain", "polite.wasm", "exclaim.wasm"],
        "{inventory}"
    );
    assert!(parts("greeter").is_empty(), "{inventory}");
    let links = inventory["links"].as_array().expect("links");
    assert_eq!(
        links.len(),
        4,
        "no runtime link for the composed one: {inventory}"
    );
    assert!(
        !links.iter().any(|l| l["target"] == "greeter"),
        "{inventory}"
    );
    up.interrupt(Duration::from_secs(60));
    let cached = std::fs::read_dir(home.join("cache").join("composed"))
        .expect("cache")
        .count();
    assert_eq!(cached, 2, "one cached composition per composed component");
    let _ = std::fs::remove_dir_all(&home);
}

/// The counter app with its keyvalue provider `mode: in-process`: it runs inside the host
/// (joined as its own identity, its link config from the manifest), counts, answers link
/// ping, shows in the inventory as in-process, and stops with Ctrl-C.
#[test]
fn a_provider_runs_in_the_hosts_process() {
    let home = temp_home("inproc");
    let port = free_port();
    let counter = Path::new(APP).with_file_name("counter.wasm");
    let app = write_app(
        &home,
        format!(
            "name: counter\n\
             components:\n  - id: counter\n    path: {}\n    config: {{ bucket: counter, key: count }}\n\
             providers:\n  - id: http-server\n    ref: http-server\n  - id: kv\n    ref: keyvalue-nats\n    mode: in-process\n\
             links:\n  - source: http-server\n    target: counter\n    wit: wasi:http/incoming-handler\n    \
             source_config: {{ address: \"127.0.0.1:{port}\" }}\n  \
             - source: counter\n    target: kv\n    wit: wasi:keyvalue/store,atomics\n    \
             target_config: {{ auto_create: true }}\n",
            counter.display(),
        ),
    );
    let mut up = Up::start_app_with(&home, &app, &[]);
    up.wait_for("ready in", Duration::from_secs(180));
    let log = up.log();
    assert!(log.contains("in-process (keyvalue-nats)"), "{log}");
    assert!(
        log.contains("link active") && log.contains("counter → kv"),
        "{log}"
    );
    let counts: Vec<String> = (0..2).map(|_| get(port).expect("GET /")).collect();
    assert_eq!(counts, ["1\n", "2\n"], "{}", up.log());

    let (code, out, err) = run(cmd(&home).args(["inventory", "--json"]));
    assert_eq!(code, 0, "{out}{err}");
    let inventory: Value = serde_json::from_str(&out).expect("inventory JSON");
    let kv = inventory["hosts"][0]["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .find(|p| p["id"] == "kv")
        .unwrap_or_else(|| panic!("no kv: {inventory}"))
        .clone();
    assert_eq!(kv["state"], "running", "{kv}");
    assert_eq!(kv["image_ref"], "in-process: keyvalue-nats", "{kv}");
    let (code, out, err) = run(cmd(&home).args(["link", "ping", "kv"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("counter") && out.contains("active"), "{out}");
    up.interrupt(Duration::from_secs(60));
    let log = up.log();
    assert!(
        log.lines()
            .any(|l| l.contains("provider kv") && l.contains("stopped")),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&home);
}
