//! Provider supervision against a real nats-server, with the SDK's example provider as the
//! child: started with host data (its links included), health-polled, restarted after a
//! crash with its links restored, stopped gracefully; and given up on when it cannot start.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::HeaderMap;
use futures::StreamExt as _;
use trellis_host::supervisor::{
    ProviderSpec, ProviderState, SupervisedProvider, SupervisorOptions,
};
use trellis_sdk::store::StoredLink;
use trellis_sdk::subjects::LatticeSubjects;
use trellis_tests as common;
use trellis_wrpc_nats::{Connection, TransportOptions};

mod support;

use trellis_tests::components::counter as bindings;

/// The SDK's example provider (built by scripts/test.sh), next to this test's executable.
fn counter_provider() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("counter_provider");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/test.sh (or cargo build --workspace --examples)",
        bin.display()
    );
    bin
}

fn fast() -> SupervisorOptions {
    SupervisorOptions {
        health_interval: Duration::from_millis(200),
        health_timeout: Duration::from_millis(500),
        unanswered_limit: 3,
        start_grace: Duration::from_secs(20),
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        max_restarts: 3,
        stable_after: Duration::from_secs(60),
        shutdown_grace: Duration::from_secs(3),
    }
}

async fn until(
    what: &str,
    p: &SupervisedProvider,
    check: impl Fn(&trellis_host::supervisor::ProviderStatus) -> bool,
) {
    for _ in 0..200 {
        if check(&p.status()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}: {:?}", p.status());
}

fn pid(p: &SupervisedProvider) -> Option<u32> {
    match p.status().state {
        ProviderState::Running { pid } => Some(pid),
        _ => None,
    }
}

async fn increment(conn: &Connection, subjects: &LatticeSubjects) -> anyhow::Result<u64> {
    let mut headers = HeaderMap::new();
    headers.insert("source-id", "comp");
    let client = conn
        .client(subjects.wrpc_prefix("counter"))
        .with_timeout(Duration::from_secs(2));
    bindings::trellis_example::counter::counter::increment(&client, Some(headers), 1).await
}

async fn increment_eventually(conn: &Connection, subjects: &LatticeSubjects) -> u64 {
    for _ in 0..100 {
        if let Ok(n) = increment(conn, subjects).await {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the provider never answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_is_started_restarted_with_its_links_and_stopped() {
    let lattice = common::unique_lattice("sup");
    let subjects = LatticeSubjects::new(&lattice).unwrap();
    let nats = common::nats().await;
    let host = support::host(&lattice).await;
    host.store()
        .put_config("ctr", &HashMap::from([("start".into(), "41".into())]))
        .await
        .unwrap();
    host.store()
        .put_link(
            StoredLink::new("comp", "counter", "trellis-example", "counter", ["counter"])
                .with_target_config(["ctr"]),
        )
        .await
        .unwrap();
    let mut events = nats
        .subscribe(subjects.event("health_check_passed"))
        .await
        .unwrap();
    let spec = ProviderSpec {
        id: "counter".into(),
        path: counter_provider(),
        config: HashMap::new(),
    };
    let provider = host.start_provider(spec, fast()).unwrap();
    until("the provider to run", &provider, |s| {
        matches!(s.state, ProviderState::Running { .. })
    })
    .await;

    let caller = Connection::new(nats.clone(), TransportOptions::default())
        .await
        .unwrap();
    // The link came with the host data: the counter starts at 41.
    assert_eq!(increment_eventually(&caller, &subjects).await, 42);
    until("a health check", &provider, |s| {
        s.health.as_ref().is_some_and(|h| h.healthy)
    })
    .await;
    let ev = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&ev.payload).contains("\"provider_id\":\"counter\""));

    // Crash it: the supervisor restarts it, with its links.
    let first = pid(&provider).unwrap();
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &first.to_string()])
            .status()
            .unwrap()
            .success()
    );
    until("the restart", &provider, |s| {
        s.restarts == 1 && matches!(s.state, ProviderState::Running { pid } if pid != first)
    })
    .await;
    assert_eq!(increment_eventually(&caller, &subjects).await, 42);

    // Graceful stop: the process is gone.
    let second = pid(&provider).unwrap();
    provider.stop().await;
    let alive = std::process::Command::new("kill")
        .args(["-0", &second.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(
        !alive.success(),
        "provider process {second} still alive after stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_cannot_run_is_given_up_and_reported() {
    let lattice = common::unique_lattice("giveup");
    let subjects = LatticeSubjects::new(&lattice).unwrap();
    let nats = common::nats().await;
    let host = support::host(&lattice).await;
    let mut events = nats
        .subscribe(subjects.event("provider_start_failed"))
        .await
        .unwrap();
    let spec = ProviderSpec {
        id: "broken".into(),
        path: PathBuf::from("/bin/false"),
        config: HashMap::new(),
    };
    let provider = host
        .start_provider(
            spec,
            SupervisorOptions {
                max_restarts: 2,
                backoff_base: Duration::from_millis(10),
                ..fast()
            },
        )
        .unwrap();
    until("giving up", &provider, |s| {
        matches!(s.state, ProviderState::GaveUp { .. })
    })
    .await;
    assert_eq!(provider.status().restarts, 2);
    let ev = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&ev.payload).contains("\"provider_id\":\"broken\""));

    let missing = ProviderSpec {
        id: "missing".into(),
        path: PathBuf::from("/nonexistent/provider"),
        config: HashMap::new(),
    };
    let provider = host
        .start_provider(
            missing,
            SupervisorOptions {
                max_restarts: 0,
                ..fast()
            },
        )
        .unwrap();
    until(
        "giving up",
        &provider,
        |s| matches!(&s.state, ProviderState::GaveUp { reason } if reason.contains("cannot start")),
    )
    .await;
}

/// A provider that exits says why: its last line on stderr (colour codes removed) is in the
/// state's reason, which `up`, the host log and `inventory` show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exiting_provider_shows_its_last_error_line() {
    let lattice = common::unique_lattice("lastline");
    let host = support::host(&lattice).await;
    let dir = std::env::temp_dir().join(format!("trellis-lastline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("failing-provider");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'starting up' >&2\nprintf '\\033[31mERROR\\033[0m cannot reach nats://10.0.0.1:4222: authorization violation\\n\\n' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let spec = ProviderSpec {
        id: "failing".into(),
        path: script,
        config: HashMap::new(),
    };
    let provider = host
        .start_provider(
            spec,
            SupervisorOptions {
                max_restarts: 0,
                ..fast()
            },
        )
        .unwrap();
    until("giving up", &provider, |s| {
        matches!(s.state, ProviderState::GaveUp { .. })
    })
    .await;
    let state = provider.status().state;
    let ProviderState::GaveUp { reason } = &state else {
        panic!("not given up: {state:?}");
    };
    assert_eq!(
        reason,
        "exited with exit status: 1: ERROR cannot reach nats://10.0.0.1:4222: authorization violation"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A provider that hangs — it runs but never answers health — is killed and restarted with
/// backoff once its start grace is over, and says why; one that answers (even unhealthy) is
/// left alone (the counter provider in the other tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_provider_is_restarted() {
    let lattice = common::unique_lattice("hung");
    let host = support::host(&lattice).await;
    let dir = std::env::temp_dir().join(format!("trellis-hung-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("hung-provider");
    std::fs::write(&script, "#!/bin/sh\nread line\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let spec = ProviderSpec {
        id: "hung".into(),
        path: script,
        config: HashMap::new(),
    };
    let started = std::time::Instant::now();
    let provider = host
        .start_provider(
            spec,
            SupervisorOptions {
                health_timeout: Duration::from_millis(200),
                start_grace: Duration::from_secs(1),
                max_restarts: 1,
                ..fast()
            },
        )
        .unwrap();
    // Restarted once, then given up on (max_restarts 1), with the reason.
    until("giving up on the hung provider", &provider, |s| {
        matches!(&s.state, ProviderState::GaveUp { reason } if reason.contains("stopped answering health"))
    })
    .await;
    assert_eq!(provider.status().restarts, 1);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "restarted within its start grace"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
