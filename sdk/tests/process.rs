//! The example provider as a real process: started like a host starts it (host data on stdin,
//! cleared environment), started standalone from flags, stopped by the host or by SIGTERM
//! (also once its NATS server is gone: the last flush is bounded), and refusing to start
//! without either.

use trellis_tests as common;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::HeaderMap;
use trellis_sdk::admin;
use trellis_sdk::connect::{FlushError, final_flush};
use trellis_sdk::host_data::HostData;
use trellis_sdk::link::LinkDefinition;
use trellis_sdk::subjects::LatticeSubjects;
use trellis_wrpc_nats::{Connection, TransportOptions};

use trellis_tests::components::counter as bindings;

/// The provider example binary (see [`example_bin`]).
fn example() -> PathBuf {
    example_bin("counter_provider")
}

/// Example binary `name` (built by `scripts/test.sh`, or `cargo build -p trellis-sdk
/// --examples`), found next to this test's executable.
fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("examples").join(name);
    assert!(
        bin.exists(),
        "{} is missing: run through `cargo test` (which builds examples)",
        bin.display()
    );
    bin
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("provider did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the example standalone, from flags, as provider `counter` of `lattice`.
fn standalone(lattice: &str, nats_url: &str) -> Child {
    Command::new(example())
        .args([
            "--provider-id",
            "counter",
            "--lattice",
            lattice,
            "--nats-url",
            nats_url,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Sends SIGTERM and expects a clean exit.
fn sigterm_and_wait(child: &mut Child) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = wait_exit(child, Duration::from_secs(15));
    assert!(status.success(), "{status}");
}

async fn wait_for_provider(nats: &async_nats::Client, subjects: &LatticeSubjects) {
    // Up to 30 s: a debug build starting on a loaded 2-core machine.
    for _ in 0..300 {
        let replies =
            admin::ping_links(nats, subjects, Some("counter"), Duration::from_millis(100))
                .await
                .unwrap();
        if !replies.is_empty() {
            return;
        }
    }
    panic!("provider never answered link ping");
}

async fn increment(conn: &Connection, subjects: &LatticeSubjects, by: u64) -> anyhow::Result<u64> {
    let mut headers = HeaderMap::new();
    headers.insert("source-id", "comp");
    let client = conn.client(subjects.wrpc_prefix("counter"));
    bindings::trellis_example::counter::counter::increment(&client, Some(headers), by).await
}

fn counter_link(start: &str) -> LinkDefinition {
    LinkDefinition {
        source_id: "comp".into(),
        target: "counter".into(),
        name: "default".into(),
        wit_namespace: "trellis-example".into(),
        wit_package: "counter".into(),
        interfaces: vec!["counter".into()],
        source_config: Default::default(),
        target_config: [("start".to_string(), start.to_string())].into(),
        source_secrets: None,
        target_secrets: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_data_on_stdin_then_host_shutdown() {
    let lattice = common::unique_lattice("stdin");
    let subjects = LatticeSubjects::new(&lattice).unwrap();
    let hd = HostData {
        host_id: "NHOST".into(),
        lattice_rpc_prefix: lattice.clone(),
        lattice_rpc_url: common::nats_url(),
        provider_key: "counter".into(),
        instance_id: "i-1".into(),
        link_definitions: vec![counter_link("41")],
        ..HostData::new()
    };
    let mut child = Command::new(example())
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    write!(stdin, "{}\r\n", hd.encode().unwrap()).unwrap();
    drop(stdin);
    // Its log is read as it comes (an unread pipe would stall it once full).
    let mut stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut log = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut log);
        log
    });

    let nats = common::nats().await;
    wait_for_provider(&nats, &subjects).await;
    let conn = Connection::new(nats.clone(), TransportOptions::default())
        .await
        .unwrap();
    assert_eq!(increment(&conn, &subjects, 1).await.unwrap(), 42);

    let reply = nats
        .request(
            subjects.shutdown("counter"),
            br#"{"host_id":"NHOST"}"#.as_slice().into(),
        )
        .await
        .unwrap();
    assert_eq!(&reply.payload[..], b"shutting down");
    let status = wait_exit(&mut child, Duration::from_secs(15));
    assert!(status.success(), "{status}");
    // Its log, written to a pipe as a 1.x host reads it: plain text, no colour codes.
    let log = log.join().unwrap();
    assert!(log.contains("shutdown requested"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "ANSI escape codes in a piped log: {log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_from_flags_then_sigterm() {
    let lattice = common::unique_lattice("flags");
    let subjects = LatticeSubjects::new(&lattice).unwrap();
    let mut child = standalone(&lattice, &common::nats_url());
    let nats = common::nats().await;
    wait_for_provider(&nats, &subjects).await;
    // A link with bad config is reported as failed through the request reply.
    let reply = nats
        .request(
            subjects.link_put("counter"),
            serde_json::to_vec(&counter_link("many")).unwrap().into(),
        )
        .await
        .unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["success"], false, "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("bad `start`"),
        "{reply}"
    );

    sigterm_and_wait(&mut child);
}

/// The client example links itself to the provider example through the lattice store,
/// counts through generated bindings, and sees the link reported active by link ping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_client_drives_the_example_provider() {
    let lattice = common::unique_lattice("exc");
    let subjects = LatticeSubjects::new(&lattice).unwrap();
    let mut child = standalone(&lattice, &common::nats_url());
    wait_for_provider(&common::nats().await, &subjects).await;

    let out = tokio::process::Command::new(example_bin("counter_client"))
        .args([common::nats_url().as_str(), lattice.as_str(), "3"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("the client example did not finish in 30 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("counter = 3"), "{stdout}");
    assert!(stdout.contains("\"active\""), "{stdout}");

    sigterm_and_wait(&mut child);
}

/// A provider whose NATS server is gone still stops on SIGTERM, promptly: nothing in a
/// graceful stop may wait on the lattice without a bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_provider_whose_nats_is_gone() {
    let mut own = common::OwnNats::start();
    let lattice = common::unique_lattice("gone");
    let subjects = LatticeSubjects::new(&lattice).unwrap();
    let mut child = standalone(&lattice, &own.url());
    let nats = async_nats::connect(own.url()).await.unwrap();
    wait_for_provider(&nats, &subjects).await;
    drop(nats);
    own.kill();
    // Let the provider notice the lost connection.
    tokio::time::sleep(Duration::from_millis(500)).await;
    sigterm_and_wait(&mut child);
}

/// The bounded flush every stopping process uses: done at once while NATS is there, a
/// `TimedOut` error within its bound once the server is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_flush_is_bounded_when_nats_is_gone() {
    let mut own = common::OwnNats::start();
    let nats = async_nats::connect(own.url()).await.unwrap();
    nats.publish("x", "1".into()).await.unwrap();
    final_flush(&nats, Duration::from_secs(5)).await.unwrap();
    own.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    nats.publish("x", "2".into()).await.unwrap();
    let err = final_flush(&nats, Duration::from_millis(500))
        .await
        .expect_err("no server to flush to");
    assert!(matches!(err, FlushError::TimedOut(_)), "{err}");
}

#[test]
fn without_host_data_or_flags_it_fails_clearly() {
    let out = Command::new(example())
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without host data"), "{stderr}");
}
