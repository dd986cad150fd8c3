//! Two `trellis-host` processes given the same component share its load on a real
//! nats-server: both serve part of the calls, and the survivor serves all of them after the
//! other is stopped with SIGTERM.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use trellis_sdk::subjects::LatticeSubjects;
use trellis_tests as common;

use bindings::trellis_test::components::echo;
use trellis_tests::components as bindings;

const ECHO_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/components/prebuilt/echo.wasm"
);

/// A host process; killed if the test fails before stopping it.
struct HostProcess(Option<Child>);

impl HostProcess {
    fn start(lattice: &str, host_id: &str) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_trellis-host"))
            .args(["--lattice", lattice, "--host-id", host_id])
            .args(["--nats-url", &common::nats_url()])
            .args(["--component", &format!("echo={ECHO_WASM}")])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start trellis-host");
        Self(Some(child))
    }

    /// Stops it with SIGTERM and returns how many calls it says it served.
    fn stop(mut self) -> u64 {
        let child = self.0.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = child.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "host exited with {}: {log}",
            out.status
        );
        let line = log
            .lines()
            .find(|l| l.contains("component stopped"))
            .unwrap_or_else(|| panic!("no served count in the host log: {log}"));
        line.split("served=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("cannot read the served count in {line:?}"))
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_processes_share_one_component() {
    let lattice = common::unique_lattice("procs");
    let a = HostProcess::start(&lattice, "host-a");
    let b = HostProcess::start(&lattice, "host-b");
    let conn = common::caller(Duration::from_secs(5)).await;
    let client = conn.client(LatticeSubjects::new(&lattice).unwrap().wrpc_prefix("echo"));

    // Both hosts compile and subscribe; wait until each has answered at least once, counted
    // in the totals below.
    let mut ready = 0;
    for _ in 0..200 {
        if echo::echo(&client, None, "warm-up").await.is_ok() {
            ready += 1;
            if ready >= 10 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready >= 10, "the hosts did not start serving");
    // Give the slower host time to subscribe so the queue group spreads the load.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..60 {
        let x = format!("call {i}");
        assert_eq!(echo::echo(&client, None, &x).await.unwrap(), x);
    }
    let served_a = a.stop();
    // The survivor serves everything.
    for i in 0..20 {
        let x = format!("after {i}");
        assert_eq!(echo::echo(&client, None, &x).await.unwrap(), x);
    }
    let served_b = b.stop();
    assert_eq!(served_a + served_b, ready + 60 + 20);
    assert!(
        served_a > 0 && served_b > 20,
        "a served {served_a}, b {served_b}"
    );
}
