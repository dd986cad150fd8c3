//! The keyvalue providers against real backends: the conformance suite over the lattice
//! for keyvalue-redis and keyvalue-nats, backend outages, and a component using
//! `wasi:keyvalue` in the host through each provider.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use trellis_conformance::keyvalue::{self, BUCKET, Error, kv};
use trellis_conformance::lattice::ProviderProcess;
use trellis_interfaces::SplitCall as _;
use trellis_sdk::runtime::LinkedClient;
use trellis_tests as common;

const KV: [&str; 3] = ["store", "atomics", "batch"];

fn config(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn unique(tag: &str) -> String {
    format!("{tag}{}", &common::unique_lattice("")[1..9])
}

async fn redis_links(p: &ProviderProcess, url: &str) -> (LinkedClient, LinkedClient) {
    redis_links_with(p, url, &[]).await
}

/// [`redis_links`] with `extra` config on both links.
async fn redis_links_with(
    p: &ProviderProcess,
    url: &str,
    extra: &[(&str, String)],
) -> (LinkedClient, LinkedClient) {
    // Each link maps the same bucket name to its own prefix in the shared test server.
    let a = p
        .link(
            "comp-a",
            "wrpc",
            "keyvalue",
            &KV,
            config(
                &[
                    &[
                        ("url", url.to_string()),
                        (&format!("bucket.{BUCKET}"), format!("/{}:", unique("a"))),
                    ][..],
                    extra,
                ]
                .concat(),
            ),
        )
        .await;
    let b = p
        .link(
            "comp-b",
            "wrpc",
            "keyvalue",
            &KV,
            config(
                &[
                    &[
                        ("URL", url.to_string()),
                        (&format!("bucket.{BUCKET}"), format!("/{}:", unique("b"))),
                    ][..],
                    extra,
                ]
                .concat(),
            ),
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

/// The answer to a `get` once the provider has the link (before, the call is refused or
/// says "(yet)").
async fn first_answer(c: &LinkedClient) -> Result<Option<bytes::Bytes>, Error> {
    for _ in 0..100 {
        match kv(c).get("default", "k").await.split() {
            Err(_) => {}
            Ok(Err(Error::Other(m))) if m.contains("(yet)") => {}
            Ok(answer) => return answer,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the link was never set up");
}

/// keyvalue-redis over TLS (`rediss://`, trusting the test's CA through `tls_ca_file`) to a
/// redis-server that speaks only TLS and requires a password: the whole suite passes; a
/// wrong password is `access-denied`; without the CA the server is not trusted and calls fail
/// saying Redis is unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_a_password_conforms() {
    let dir = std::env::temp_dir().join(format!("trellis-redis-tls-{}", unique("")));
    std::fs::create_dir_all(&dir).unwrap();
    let certs = trellis_tests::tls::certificates(&dir);
    let path = |p: &std::path::Path| p.display().to_string();
    let (cert, key, ca) = (path(&certs.cert), path(&certs.key), path(&certs.ca));
    let redis = common::OwnRedis::start_with(&[
        "--port",
        "0",
        "--tls-port",
        "{port}",
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
        "--requirepass",
        "s3cret-pw",
    ]);
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let p = ProviderProcess::start("keyvalue-redis", "kv-redis-tls").await;
    let trusted = [
        ("password", "s3cret-pw".to_string()),
        ("tls_ca_file", ca.clone()),
    ];
    let (a, b) = redis_links_with(&p, &url, &trusted).await;
    keyvalue::run_all(&a, &b).await;

    let wrong = p
        .link(
            "comp-wrong",
            "wrpc",
            "keyvalue",
            &KV,
            config(&[
                ("url", url.clone()),
                ("password", "not-it".to_string()),
                ("tls_ca_file", ca.clone()),
            ]),
        )
        .await;
    assert_eq!(first_answer(&wrong).await.unwrap_err(), Error::AccessDenied);

    let untrusting = p
        .link(
            "comp-untrusting",
            "wrpc",
            "keyvalue",
            &KV,
            config(&[("url", url.clone()), ("password", "s3cret-pw".to_string())]),
        )
        .await;
    let err = first_answer(&untrusting).await.unwrap_err();
    assert!(
        matches!(&err, Error::Other(m) if m.contains("Redis unavailable")),
        "{err:?}"
    );
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `set-many` whose list declares 2³² − 1 tuples with nothing behind them. wrpc-transport's
/// decoder would reserve about 240 GB for them before reading any: under glibc's allocator
/// that aborts the process (mimalloc, which this provider uses, maps the reservation lazily;
/// the call then fails later as incomplete). Checked first, the call fails with a clear
/// error naming the length, whatever the allocator, and the provider serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_forged_list_length_fails_the_call_not_the_provider() {
    let mut p = ProviderProcess::start("keyvalue-redis", "kv-redis-forged").await;
    let (a, _) = redis_links(&p, &common::redis_url()).await;
    keyvalue::wait_linked(&a).await;
    let err = forged_set_many(&a).await;
    assert!(err.contains("malformed parameters"), "{err}");
    assert!(p.is_running(), "the provider exited");
    keyvalue::batch_ops(&a).await;
}

/// Sends the forged `set-many`; returns how the call failed.
async fn forged_set_many(c: &LinkedClient) -> String {
    let mut params = vec![BUCKET.len() as u8];
    params.extend_from_slice(BUCKET.as_bytes());
    params.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    common::forged_call(
        c,
        (),
        "wrpc:keyvalue/batch@0.2.0-draft",
        "set-many",
        params.into(),
    )
    .await
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
    kv(c)
        .set(BUCKET, "fault:k", &"v".into())
        .await
        .split()
        .unwrap()
        .unwrap();
    assert_eq!(
        p.health().await,
        (true, String::new()),
        "healthy before the outage"
    );
    kill();
    // Health tells the truth: unhealthy, naming the link, while the backend is down.
    let (_, message) = p.health_until("the backend is down", |ok, _| !ok).await;
    assert!(message.contains("link comp -> "), "{message}");
    let down = Instant::now();
    let mut failures = 0;
    while down.elapsed() < Duration::from_secs(2) {
        let started = Instant::now();
        let res = kv(c).set(BUCKET, "fault:k", &"during".into()).await.split();
        let took = started.elapsed();
        assert!(
            took < deadline + Duration::from_millis(500),
            "an operation during the outage took {took:?}"
        );
        match res {
            Ok(Err(Error::Other(why))) => {
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
        if let Ok(Ok(())) = kv(c).set(BUCKET, "fault:k", &"after".into()).await.split() {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(2),
            "operations still failing 2 s after the backend came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("recovered {:?} after the backend came back", back.elapsed());
    p.health_until("the backend is back", |ok, _| ok).await;
    assert_eq!(
        kv(c)
            .get(BUCKET, "fault:k")
            .await
            .split()
            .unwrap()
            .unwrap()
            .as_deref(),
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

/// Creates JetStream KV bucket `name` on `nats`.
async fn create_kv(nats: &async_nats::Client, name: &str) {
    async_nats::jetstream::new(nats.clone())
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: name.to_string(),
            history: 1,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("cannot create KV bucket {name}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_conforms() {
    let p = ProviderProcess::start("keyvalue-nats", "kv-nats").await;
    let nats = common::nats().await;
    let (ka, kb) = (unique("A_"), unique("B_"));
    create_kv(&nats, &ka).await;
    create_kv(&nats, &kb).await;
    // Link a uses the lattice's own NATS (no url); link b names the server explicitly.
    let a = p
        .link(
            "comp-a",
            "wrpc",
            "keyvalue",
            &KV,
            config(&[(&format!("bucket.{BUCKET}"), ka)]),
        )
        .await;
    let b = p
        .link(
            "comp-b",
            "wrpc",
            "keyvalue",
            &KV,
            config(&[
                ("url", common::nats_url()),
                (&format!("bucket.{BUCKET}"), kb),
            ]),
        )
        .await;
    keyvalue::run_all(&a, &b).await;
}

/// keyvalue-nats' pages: the next page of a listing continues its consumer; the same cursor
/// asked again (as after a retry, or from another instance) starts afresh and skips to it —
/// the same page either way, and all pages together list every key once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_listing_pages_resume_from_any_cursor() {
    let p = ProviderProcess::start("keyvalue-nats", "kv-nats-pages").await;
    let name = unique("P_");
    create_kv(&common::nats().await, &name).await;
    let c = p
        .link(
            "comp-pages",
            "wrpc",
            "keyvalue",
            &KV,
            config(&[
                (&format!("bucket.{BUCKET}"), name),
                ("page_size", "100".to_string()),
            ]),
        )
        .await;
    keyvalue::wait_linked(&c).await;
    let store = kv(&c);
    let value = bytes::Bytes::from_static(b"v");
    for i in 0..250 {
        store
            .set(BUCKET, &format!("k{i:03}"), &value)
            .await
            .unwrap();
    }
    // A deleted key is not listed.
    store.delete(BUCKET, "k007").await.unwrap();
    let page = |cursor| {
        let store = &store;
        async move { store.list_keys(BUCKET, cursor).await.unwrap() }
    };
    let first = page(None).await;
    let second = page(first.cursor).await;
    let again = page(first.cursor).await;
    assert_eq!(second.keys, again.keys, "the same cursor, another page");
    assert_eq!(second.cursor, again.cursor);
    let third = page(second.cursor).await;
    assert_eq!((first.keys.len(), second.keys.len()), (100, 100));
    assert_eq!(third.cursor, None);
    let all: Vec<&String> = [&first.keys, &second.keys, &third.keys]
        .into_iter()
        .flatten()
        .collect();
    let unique: std::collections::HashSet<&&String> = all.iter().collect();
    assert_eq!(
        (all.len(), unique.len()),
        (249, 249),
        "lost or repeated keys"
    );
    assert!(!all.iter().any(|k| k.as_str() == "k007"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_outage_is_survived() {
    let backend = common::OwnNats::start();
    let kv_name = unique("F_");
    {
        let nats = async_nats::connect(backend.url()).await.unwrap();
        create_kv(&nats, &kv_name).await;
    }
    let mut p = ProviderProcess::start("keyvalue-nats", "kv-nats-fault").await;
    let c = p
        .link(
            "comp",
            "wrpc",
            "keyvalue",
            &KV,
            config(&[
                ("url", backend.url()),
                (&format!("bucket.{BUCKET}"), kv_name),
                ("timeout_ms", "500".into()),
            ]),
        )
        .await;
    let backend = std::sync::Arc::new(std::sync::Mutex::new(backend));
    let (b1, b2) = (backend.clone(), backend.clone());
    outage(
        &mut p,
        &c,
        move || b1.lock().unwrap().kill(),
        move || b2.lock().unwrap().restart(),
        Duration::from_millis(500),
    )
    .await;
}

mod e2e {
    //! A component using `wasi:keyvalue` in the host, through each real provider.
    use super::*;
    use trellis_host::read_component;
    use trellis_sdk::store::StoredLink;

    use trellis_tests::components as caller;

    const ECHO_WASM: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../components/prebuilt/echo.wasm"
    );

    async fn component_uses(p: &ProviderProcess, config: HashMap<String, String>) {
        p.store.put_config("e2e-kv", &config).await.unwrap();
        let host = crate::support::host(&p.lattice).await;
        host.admin()
            .put_link(
                StoredLink::new("kv-comp", &p.id, "wasi", "keyvalue", KV)
                    .with_target_config(["e2e-kv"]),
            )
            .await
            .unwrap();
        let _c = host
            .start_component("kv-comp", read_component(ECHO_WASM).unwrap(), &[])
            .await
            .unwrap();
        let client = crate::support::caller(&p.lattice, "kv-comp").await;
        assert_component_kv(&client).await;
    }

    /// The echo component's keyvalue round trip (set, get, exists, increment, batch, list,
    /// delete) through `client`, and a bucket the link does not map.
    async fn assert_component_kv(client: &trellis_wrpc_nats::Client) {
        let mut summary = Err(String::new());
        for _ in 0..100 {
            summary = caller::trellis_test::components::echo::kv(client, None, "app")
                .await
                .unwrap();
            if summary.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            summary.unwrap(),
            "get=hello exists=true counter=5 batch=2 keys=a,b,counter,greeting deleted=true"
        );
        let err = caller::trellis_test::components::echo::kv(client, None, "unmapped")
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err, "Error::NoSuchStore");
    }

    /// The same provider run in the host's process (`mode: in-process`): the component's
    /// calls go straight to its handler, the same link config applies, a component on
    /// another host reaches the same instance over the lattice, and a purged link is refused
    /// in-process as over the lattice.
    async fn component_uses_in_process(
        kind: trellis_host::in_process::InProcessKind,
        id: &str,
        local: HashMap<String, String>,
        remote: HashMap<String, String>,
    ) {
        let lattice = common::unique_lattice(id);
        let host = crate::support::host(&lattice).await;
        let admin = host.admin();
        let provider = host
            .start_in_process(id, kind, HashMap::new(), None)
            .await
            .unwrap();
        // Each link its own backend bucket: the round trip starts from empty on both.
        for (source, config) in [("kv-local", local), ("kv-remote", remote)] {
            admin.put_config(source, &config).await.unwrap();
            admin
                .put_link(
                    StoredLink::new(source, id, "wasi", "keyvalue", KV)
                        .with_target_config([source]),
                )
                .await
                .unwrap();
        }
        let _local = host
            .start_component("kv-local", read_component(ECHO_WASM).unwrap(), &[])
            .await
            .unwrap();
        assert_component_kv(&crate::support::caller(&lattice, "kv-local").await).await;
        // Its runtime answers health on the lattice as a child process's would.
        let subjects = trellis_sdk::subjects::LatticeSubjects::new(&lattice).unwrap();
        let health = trellis_sdk::admin::provider_health(
            &common::nats().await,
            &subjects,
            id,
            Duration::from_secs(5),
        )
        .await;
        assert!(health.as_ref().is_some_and(|h| h.healthy), "{health:?}");

        // A host without the provider in its process calls the same instance over NATS.
        let other = crate::support::host(&lattice).await;
        let _remote = other
            .start_component("kv-remote", read_component(ECHO_WASM).unwrap(), &[])
            .await
            .unwrap();
        assert_component_kv(&crate::support::caller(&lattice, "kv-remote").await).await;

        // Purged: refused on both paths with the provider's reason — straight from its
        // runtime in-process, through a failed wRPC call over the lattice (which shows the
        // local component's calls did not go over NATS).
        for source in ["kv-local", "kv-remote"] {
            let purged = provider
                .handle()
                .purge(trellis_sdk::link::LinkSelector {
                    source_id: source.into(),
                    target: None,
                    name: "default".into(),
                    wit_namespace: None,
                    wit_package: None,
                })
                .await;
            assert_eq!(purged.len(), 1, "{purged:?}");
        }
        let purged_err = |source: &'static str| {
            let lattice = lattice.clone();
            async move {
                let client = crate::support::caller(&lattice, source).await;
                caller::trellis_test::components::echo::kv(&client, None, "app")
                    .await
                    .unwrap()
                    .unwrap_err()
            }
        };
        let local_err = purged_err("kv-local").await;
        assert_eq!(
            local_err,
            format!(
                "Error::Other(\"link \\\"default\\\" from kv-local to provider {id} was purged; put it again to use it\")"
            )
        );
        let remote_err = purged_err("kv-remote").await;
        assert!(
            remote_err.contains("failed to invoke `wrpc:keyvalue/store@0.2.0-draft.set`")
                && remote_err.contains("call refused")
                && remote_err.contains("was purged"),
            "{remote_err}"
        );
        // Stopped, or dropped: off the lattice, as a child process that exited.
        let health = |id: String| {
            let subjects = subjects.clone();
            async move {
                trellis_sdk::admin::provider_health(
                    &common::nats().await,
                    &subjects,
                    &id,
                    Duration::from_millis(500),
                )
                .await
            }
        };
        provider.stop().await;
        assert!(
            health(id.to_string()).await.is_none(),
            "answers when stopped"
        );
        let dropped = format!("{id}-dropped");
        let second = host
            .start_in_process(&dropped, kind, HashMap::new(), None)
            .await
            .unwrap();
        assert!(health(dropped.clone()).await.is_some(), "runs");
        drop(second);
        let deadline = Instant::now() + Duration::from_secs(10);
        while health(dropped.clone()).await.is_some() {
            assert!(
                Instant::now() < deadline,
                "a dropped provider stays on the lattice"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn component_uses_redis_in_process() {
        component_uses_in_process(
            trellis_host::in_process::InProcessKind::KeyvalueRedis,
            "kv-redis-inproc",
            config(&[
                ("url", common::redis_url()),
                ("bucket.app", format!("/{}:", unique("ip"))),
            ]),
            config(&[
                ("url", common::redis_url()),
                ("bucket.app", format!("/{}:", unique("ir"))),
            ]),
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn component_uses_nats_in_process() {
        let (local, remote) = (unique("IP_"), unique("IR_"));
        create_kv(&common::nats().await, &local).await;
        create_kv(&common::nats().await, &remote).await;
        component_uses_in_process(
            trellis_host::in_process::InProcessKind::KeyvalueNats,
            "kv-nats-inproc",
            config(&[("bucket.app", local)]),
            config(&[("bucket.app", remote)]),
        )
        .await;
    }

    const WATCHER_WASM: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../components/prebuilt/watcher.wasm"
    );

    /// A component exporting `wasi:keyvalue/watcher` (it copies each change to `copy.KEY`
    /// through the bucket it is handed) watches `key` through the provider: the copy
    /// appears in the backend, and goes when the key does.
    async fn component_watches(
        p: &ProviderProcess,
        server: HashMap<String, String>,
        spec: &str,
        key: &str,
    ) {
        p.store.put_config("e2e-watch-kv", &server).await.unwrap();
        let host = crate::support::host(&p.lattice).await;
        host.admin()
            .put_link(
                StoredLink::new("kv-watcher", &p.id, "wasi", "keyvalue", ["store"])
                    .with_target_config(["e2e-watch-kv"]),
            )
            .await
            .unwrap();
        let _c = host
            .start_component("kv-watcher", read_component(WATCHER_WASM).unwrap(), &[])
            .await
            .unwrap();
        let mut watch_config = server.clone();
        watch_config.insert("watch".into(), spec.into());
        watch_config.insert("watch_bucket".into(), BUCKET.into());
        trellis_conformance::watch::watch_link(p, "kv-watcher", watch_config).await;
        let writer = p.link("writer", "wrpc", "keyvalue", &KV, server).await;
        keyvalue::wait_linked(&writer).await;

        let store = kv(&writer);
        let copy = format!("copy.{key}");
        let value = bytes::Bytes::from_static(b"watched");
        // The watch starts once its link is accepted: set the key until the copy shows.
        let started = Instant::now();
        while store.get(BUCKET, &copy).await.unwrap() != Some(value.clone()) {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "no copy of {key}"
            );
            store.set(BUCKET, key, &value).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        store.delete(BUCKET, key).await.unwrap();
        while store.get(BUCKET, &copy).await.unwrap().is_some() {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "the copy stayed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn component_watches_redis() {
        let p = ProviderProcess::start("keyvalue-redis", "kv-redis-e2e-watch").await;
        let server = config(&[
            ("url", common::redis_url()),
            (&format!("bucket.{BUCKET}"), format!("/{}:", unique("ew"))),
        ]);
        component_watches(&p, server, "SET@in:*,DEL@in:*", "in:a").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn component_watches_nats() {
        let p = ProviderProcess::start("keyvalue-nats", "kv-nats-e2e-watch").await;
        let name = unique("EW_");
        create_kv(&common::nats().await, &name).await;
        let server = config(&[(&format!("bucket.{BUCKET}"), name)]);
        component_watches(&p, server, "SET@in.>,DEL@in.>", "in.a").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn component_uses_redis() {
        let p = ProviderProcess::start("keyvalue-redis", "kv-redis-e2e").await;
        component_uses(
            &p,
            config(&[
                ("url", common::redis_url()),
                ("bucket.app", format!("/{}:", unique("e"))),
            ]),
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn component_uses_nats() {
        let p = ProviderProcess::start("keyvalue-nats", "kv-nats-e2e").await;
        let name = unique("E_");
        create_kv(&common::nats().await, &name).await;
        component_uses(&p, config(&[("bucket.app", name)])).await;
    }
}

mod watch {
    //! `wasi:keyvalue/watcher`: each provider tells a watching component of changes.
    use super::*;
    use trellis_conformance::watch::{self, Changes, Keys};
    use trellis_sdk::link::LinkState;

    /// Keys under the prefix `in:` (and one not).
    const REDIS_STYLE_KEYS: Keys = Keys {
        a: "in:a",
        b: "in:b",
        unwatched: "out:x",
        flaky: "in:flaky",
        probe: "in:probe",
    };

    fn with_watch(mut c: HashMap<String, String>, spec: &str) -> HashMap<String, String> {
        c.insert("watch".into(), spec.into());
        c.insert("watch_bucket".into(), BUCKET.into());
        c.insert("retry_backoff_ms".into(), "5".into());
        c
    }

    async fn watching(
        p: &ProviderProcess,
        server: HashMap<String, String>,
        spec: &str,
        keys: &Keys,
    ) {
        let writer = p
            .link("comp-w", "wrpc", "keyvalue", &KV, server.clone())
            .await;
        keyvalue::wait_linked(&writer).await;
        let changes = Changes {
            fail_first: Some(keys.flaky.to_string()),
            ..Default::default()
        };
        let _served = watch::stand_in(&p.lattice, "watching-comp", changes.clone()).await;
        watch::watch_link(p, "watching-comp", with_watch(server, spec)).await;
        watch::scenario(&writer, &changes, BUCKET, keys).await;
        let stats = trellis_conformance::messaging::delivered(p).await;
        assert_eq!(stats.len(), 1, "{stats:?}");
        assert!(
            stats[0].delivered >= 5 && stats[0].retried >= 1,
            "{stats:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_tells_a_watching_component_of_changes() {
        let p = ProviderProcess::start("keyvalue-redis", "kv-redis-watch").await;
        let server = config(&[
            ("url", common::redis_url()),
            (&format!("bucket.{BUCKET}"), format!("/{}:", unique("w"))),
        ]);
        watching(&p, server, "SET@in:*,DEL@in:*", &REDIS_STYLE_KEYS).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_tells_a_watching_component_of_changes() {
        let p = ProviderProcess::start("keyvalue-nats", "kv-nats-watch").await;
        let bucket = unique("W_");
        create_kv(&common::nats().await, &bucket).await;
        let server = config(&[(&format!("bucket.{BUCKET}"), bucket)]);
        // The same prefix as Redis's: keys with `:` are not NATS subjects (they are stored
        // encoded), and a prefix still matches them.
        watching(&p, server, "SET@in:*,DEL@in:*", &REDIS_STYLE_KEYS).await;
    }

    /// A Redis that does not publish keyspace notifications fails the link with the command
    /// that fixes it, instead of a watch that never fires.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_without_notifications_fails_the_link_saying_how_to_fix_it() {
        let redis = common::OwnRedis::start();
        let p = ProviderProcess::start("keyvalue-redis", "kv-redis-nonotify").await;
        let server = config(&[
            ("url", redis.url()),
            (&format!("bucket.{BUCKET}"), String::new()),
        ]);
        watch::watch_link(&p, "watching-comp", with_watch(server, "SET@k")).await;
        match watch::source_link_state(&p).await {
            LinkState::Failed { error } => {
                assert!(
                    error.contains("CONFIG SET notify-keyspace-events K$g"),
                    "{error}"
                )
            }
            other => panic!("the link should have failed: {other:?}"),
        }
    }
}
