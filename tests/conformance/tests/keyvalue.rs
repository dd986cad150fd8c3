//! The keyvalue providers against real backends: the conformance suite over the lattice
//! for keyvalue-redis and keyvalue-nats, backend outages, and a component using
//! `wasi:keyvalue` in the host through each provider.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use trellis_conformance::keyvalue::{self, BUCKET, store};
use trellis_conformance::lattice::ProviderProcess;
use trellis_sdk::runtime::LinkedClient;
use trellis_tests as common;

const KV: [&str; 3] = ["store", "atomics", "batch"];

fn config(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn unique(tag: &str) -> String {
    format!("{tag}{}", &common::unique_lattice("")[1..9])
}

async fn redis_links(p: &ProviderProcess, url: &str) -> (LinkedClient, LinkedClient) {
    // Each link maps the same bucket name to its own prefix in the shared test server.
    let a = p
        .link(
            "comp-a",
            "wrpc",
            "keyvalue",
            &KV,
            config(&[
                ("url", url.to_string()),
                (&format!("bucket.{BUCKET}"), format!("/{}:", unique("a"))),
            ]),
        )
        .await;
    let b = p
        .link(
            "comp-b",
            "wrpc",
            "keyvalue",
            &KV,
            config(&[
                ("URL", url.to_string()),
                (&format!("bucket.{BUCKET}"), format!("/{}:", unique("b"))),
            ]),
        )
        .await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_conforms() {
    let p = ProviderProcess::start("keyvalue-redis", "kv-redis").await;
    let (a, b) = redis_links(&p, &common::redis_url()).await;
    keyvalue::run_all(&a, &b).await;
}

/// Operations run continuously while the backend is killed and restarted: during the outage
/// each fails with an error within its deadline; within 2 s of the backend's return they
/// succeed again; the provider never exits.
async fn outage(
    p: &mut ProviderProcess,
    c: &LinkedClient,
    kill: impl FnOnce(),
    restart: impl FnOnce(),
    deadline: Duration,
) {
    keyvalue::wait_linked(c).await;
    store::set(c, (), BUCKET, "fault:k", &"v".into()).await.unwrap().unwrap();
    kill();
    let down = Instant::now();
    let mut failures = 0;
    while down.elapsed() < Duration::from_secs(2) {
        let started = Instant::now();
        let res = store::set(c, (), BUCKET, "fault:k", &"during".into()).await;
        let took = started.elapsed();
        assert!(
            took < deadline + Duration::from_millis(500),
            "an operation during the outage took {took:?}"
        );
        match res {
            Ok(Err(store::Error::Other(why))) => {
                assert!(!why.is_empty());
                failures += 1;
            }
            Ok(Err(e)) => panic!("unexpected error during the outage: {e:?}"),
            Ok(Ok(())) => panic!("an operation succeeded with the backend down"),
            Err(e) => panic!("the provider failed the call itself: {e:#}"),
        }
    }
    assert!(failures > 0);
    restart();
    let back = Instant::now();
    loop {
        if let Ok(Ok(())) = store::set(c, (), BUCKET, "fault:k", &"after".into()).await {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(2),
            "operations still failing 2 s after the backend came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("recovered {:?} after the backend came back", back.elapsed());
    assert_eq!(
        store::get(c, (), BUCKET, "fault:k").await.unwrap().unwrap().as_deref(),
        Some(&b"after"[..])
    );
    assert!(p.is_running(), "the provider exited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_survived() {
    let redis = common::OwnRedis::start();
    let mut p = ProviderProcess::start("keyvalue-redis", "kv-redis-fault").await;
    let c = p
        .link(
            "comp",
            "wrpc",
            "keyvalue",
            &KV,
            config(&[
                ("url", redis.url()),
                (&format!("bucket.{BUCKET}"), String::new()),
                ("timeout_ms", "500".into()),
            ]),
        )
        .await;
    let redis = std::sync::Arc::new(std::sync::Mutex::new(redis));
    let (r1, r2) = (redis.clone(), redis.clone());
    outage(
        &mut p,
        &c,
        move || r1.lock().unwrap().kill(),
        move || r2.lock().unwrap().restart(),
        Duration::from_millis(500),
    )
    .await;
}
