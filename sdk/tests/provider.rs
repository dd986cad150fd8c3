//! The provider SDK against a real nats-server: starting, links (push, pull, live update,
//! delete, named links), ping, purge, failure reports, health, shutdown draining, NATS
//! restarts and garbage on every subject.

use trellis_tests as common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use futures::StreamExt as _;
use trellis_sdk::admin;
use trellis_sdk::config::{ProviderConfig, StandaloneArgs};
use trellis_sdk::error::TransportError;
use trellis_sdk::host_data::HostData;
use trellis_sdk::link::{LinkDefinition, LinkSelector};
use trellis_sdk::provider::{HealthStatus, LinkConfig, Provider};
use trellis_sdk::runtime::{CallContext, ProviderHandle};
use trellis_sdk::store::{LatticeStore, StoredLink};
use trellis_sdk::subjects::LatticeSubjects;
use trellis_wrpc_nats::{Connection, TransportOptions};

use trellis_tests::components as bindings;

use bindings::trellis_test::greeter::greet as client;

const PROVIDER: &str = "greeter";
const INSTANCE: &str = "trellis-test:greeter/greet@0.1.0";

/// What the test provider was told, in order.
#[derive(Clone, Debug, PartialEq)]
enum Seen {
    Put {
        source: String,
        name: String,
        update: bool,
        greeting: String,
    },
    Delete {
        source: String,
        name: String,
    },
    Config(HashMap<String, String>),
}

#[derive(Clone, Default)]
struct TestProvider {
    seen: Arc<Mutex<Vec<Seen>>>,
    health: Arc<Mutex<&'static str>>,
}

impl TestProvider {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Provider for TestProvider {
    async fn receive_link_config_as_target(&self, link: LinkConfig<'_>) -> anyhow::Result<()> {
        if let Some(reason) = link.config.get("fail") {
            anyhow::bail!("refusing link: {reason}");
        }
        self.seen.lock().unwrap().push(Seen::Put {
            source: link.link.source_id.clone(),
            name: link.link.name.clone(),
            update: link.is_update,
            greeting: link.config.get("greeting").cloned().unwrap_or_default(),
        });
        Ok(())
    }

    async fn delete_link_as_target(&self, link: &LinkDefinition) -> anyhow::Result<()> {
        self.seen.lock().unwrap().push(Seen::Delete {
            source: link.source_id.clone(),
            name: link.name.clone(),
        });
        Ok(())
    }

    async fn on_config_update(&self, config: &HashMap<String, String>) -> anyhow::Result<()> {
        self.seen.lock().unwrap().push(Seen::Config(config.clone()));
        Ok(())
    }

    async fn health(&self) -> anyhow::Result<HealthStatus> {
        let mode = *self.health.lock().unwrap();
        match mode {
            "error" => anyhow::bail!("backend unreachable"),
            "panic" => panic!("health check exploded"),
            _ => Ok(HealthStatus::healthy()),
        }
    }
}

#[derive(Clone)]
struct Handler;

impl bindings::exports::trellis_test::greeter::greet::Handler<CallContext> for Handler {
    async fn greeting(&self, cx: CallContext, name: String) -> anyhow::Result<String> {
        let greeting = cx
            .config()
            .get("greeting")
            .cloned()
            .unwrap_or_else(|| "hello".into());
        let trace = cx
            .traceparent()
            .map(|t| format!(" trace {t}"))
            .unwrap_or_default();
        Ok(format!(
            "{greeting}, {name} (via {} from {}){trace}",
            cx.link_name, cx.source_id
        ))
    }

    async fn slow(&self, _cx: CallContext, ms: u32) -> anyhow::Result<String> {
        tokio::time::sleep(Duration::from_millis(ms.into())).await;
        Ok("done".into())
    }
}

fn link(source: &str, name: &str, cfg: &[(&str, &str)]) -> LinkDefinition {
    LinkDefinition {
        source_id: source.into(),
        target: PROVIDER.into(),
        name: name.into(),
        wit_namespace: "trellis-test".into(),
        wit_package: "greeter".into(),
        interfaces: vec!["greet".into()],
        source_config: HashMap::new(),
        target_config: cfg
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        source_secrets: None,
        target_secrets: None,
    }
}

/// A stored link from `source` to the provider, naming `target_config`.
fn stored_link(source: &str, target_config: Vec<String>) -> StoredLink {
    StoredLink::new(source, PROVIDER, "trellis-test", "greeter", ["greet"])
        .with_target_config(target_config)
}

struct Fixture {
    lattice: String,
    subjects: LatticeSubjects,
    nats: async_nats::Client,
    caller: Connection,
    provider: TestProvider,
    handle: ProviderHandle,
}

async fn start_with(config: ProviderConfig) -> Fixture {
    let lattice = config.lattice.clone();
    let provider = TestProvider::default();
    let handle = ProviderHandle::start(config, Arc::new(provider.clone()))
        .await
        .unwrap();
    let invocations =
        bindings::exports::trellis_test::greeter::greet::serve_interface(&handle.server(), Handler)
            .await
            .unwrap();
    handle.serve(invocations).unwrap();
    let nats = common::nats().await;
    let caller = common::caller(Duration::from_secs(5)).await;
    Fixture {
        subjects: LatticeSubjects::new(&lattice).unwrap(),
        lattice,
        nats,
        caller,
        provider,
        handle,
    }
}

async fn start(tag: &str) -> Fixture {
    let config =
        ProviderConfig::standalone(&common::unique_lattice(tag), PROVIDER, &common::nats_url())
            .unwrap();
    start_with(config).await
}

impl Fixture {
    async fn call(&self, source: &str, link_name: &str, name: &str) -> anyhow::Result<String> {
        let mut headers = HeaderMap::new();
        headers.insert("source-id", source);
        headers.insert("link-name", link_name);
        let client = self.caller.client(self.subjects.wrpc_prefix(PROVIDER));
        client::greeting(&client, Some(headers), name).await
    }

    /// A call as `source` carrying `proof` (`None`: no proof header).
    async fn call_proven(&self, source: &str, proof: Option<String>) -> anyhow::Result<String> {
        let mut headers = HeaderMap::new();
        headers.insert("source-id", source);
        headers.insert("link-name", "default");
        if let Some(proof) = proof {
            headers.insert("trellis-source-proof", proof.as_str());
        }
        let client = self.caller.client(self.subjects.wrpc_prefix(PROVIDER));
        client::greeting(&client, Some(headers), "x").await
    }

    async fn store(&self) -> LatticeStore {
        LatticeStore::open(&self.nats, &self.subjects)
            .await
            .unwrap()
    }

    async fn ping(&self) -> Vec<admin::PingReply> {
        admin::ping_links(
            &self.nats,
            &self.subjects,
            Some(PROVIDER),
            Duration::from_millis(300),
        )
        .await
        .unwrap()
    }

    /// Waits (bounded) until `check` holds for the provider's link statuses.
    async fn until(&self, what: &str, check: impl Fn(&ProviderHandle) -> bool) {
        for _ in 0..100 {
            if check(&self.handle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "timed out waiting for {what}; links: {:#?}",
            self.handle.links()
        );
    }

    async fn push_put(&self, link: &LinkDefinition) -> serde_json::Value {
        let msg = self
            .nats
            .request(
                self.subjects.link_put(PROVIDER),
                serde_json::to_vec(link).unwrap().into(),
            )
            .await
            .unwrap();
        serde_json::from_slice(&msg.payload).unwrap()
    }
}

fn refusal(err: &anyhow::Error) -> String {
    match TransportError::find(err) {
        Some(TransportError::Refused(reason)) => reason.clone(),
        other => panic!("expected a refusal, got {other:?}: {err:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_from_host_data_with_its_links() {
    let lattice = common::unique_lattice("hd");
    let hd = HostData {
        host_id: "NHOST".into(),
        lattice_rpc_prefix: lattice.clone(),
        lattice_rpc_url: common::nats_url(),
        provider_key: PROVIDER.into(),
        instance_id: "inst-1".into(),
        link_definitions: vec![link("comp", "default", &[("greeting", "hi")])],
        default_rpc_timeout_ms: Some(4000),
        ..HostData::new()
    };
    // Exactly what a host writes on stdin.
    let line = format!("{}\r\n", hd.encode().unwrap());
    let read = HostData::read_from(line.as_bytes(), Duration::from_secs(1))
        .await
        .unwrap();
    let config = ProviderConfig::from_host_data(read).unwrap();
    assert_eq!(config.rpc_timeout, Duration::from_secs(4));
    let f = start_with(config).await;
    assert_eq!(
        f.call("comp", "default", "ann").await.unwrap(),
        "hi, ann (via default from comp)"
    );
    let ping = f.ping().await;
    assert_eq!(ping.len(), 1);
    assert_eq!(ping[0].instance_id, "inst-1");
    assert_eq!(ping[0].host_id.as_deref(), Some("NHOST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_standalone_from_flags() {
    let lattice = common::unique_lattice("sa");
    let args = StandaloneArgs::try_parse_from_args(&[
        "greeter",
        "--lattice",
        &lattice,
        "--provider-id",
        PROVIDER,
        "--nats-url",
        &common::nats_url(),
    ]);
    let f = start_with(ProviderConfig::from_args(args).unwrap()).await;
    // No link yet: a clear refusal, not a timeout.
    let err = f.call("comp", "default", "x").await.unwrap_err();
    assert!(refusal(&err).contains("no link"), "{err:#}");
    let reply = f.push_put(&link("comp", "default", &[])).await;
    assert_eq!(reply["success"], true, "{reply}");
    assert_eq!(
        f.call("comp", "default", "x").await.unwrap(),
        "hello, x (via default from comp)"
    );
    assert_eq!(f.lattice, f.handle.config().lattice);
}

trait TryParse {
    fn try_parse_from_args(args: &[&str]) -> StandaloneArgs;
}

impl TryParse for StandaloneArgs {
    fn try_parse_from_args(args: &[&str]) -> StandaloneArgs {
        <StandaloneArgs as clap::Parser>::try_parse_from(args).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_links_are_idempotent_and_changes_are_updates() {
    let f = start("push").await;
    let l = link("comp", "default", &[("greeting", "hi")]);
    f.push_put(&l).await;
    f.push_put(&l).await; // a 1.x re-push of the same link
    let changed = link("comp", "default", &[("greeting", "yo")]);
    let reply = f.push_put(&changed).await;
    assert_eq!(reply["success"], true);
    assert_eq!(
        f.provider.seen(),
        vec![
            Seen::Put {
                source: "comp".into(),
                name: "default".into(),
                update: false,
                greeting: "hi".into()
            },
            Seen::Put {
                source: "comp".into(),
                name: "default".into(),
                update: true,
                greeting: "yo".into()
            },
        ]
    );
    assert!(
        f.call("comp", "default", "b")
            .await
            .unwrap()
            .starts_with("yo, b")
    );

    // The caller's trace context reaches the handler.
    let mut headers = HeaderMap::new();
    headers.insert("source-id", "comp");
    headers.insert(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    );
    let client = f.caller.client(f.subjects.wrpc_prefix(PROVIDER));
    let traced = client::greeting(&client, Some(headers), "t").await.unwrap();
    assert!(
        traced.ends_with("trace 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        "{traced}"
    );

    // Delete over the 1.x subject.
    let del = serde_json::json!({"source_id": "comp", "name": "default", "wit_namespace": "trellis-test", "wit_package": "greeter"});
    f.nats
        .request(
            f.subjects.link_del(PROVIDER),
            serde_json::to_vec(&del).unwrap().into(),
        )
        .await
        .unwrap();
    assert_eq!(
        f.provider.seen().last(),
        Some(&Seen::Delete {
            source: "comp".into(),
            name: "default".into()
        })
    );
    assert!(refusal(&f.call("comp", "default", "b").await.unwrap_err()).contains("no link"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_are_pulled_from_the_store_and_followed_live() {
    let f = start("pull").await;
    let store = f.store().await;
    store
        .put_config(
            "greet-cfg",
            &HashMap::from([("greeting".to_string(), "bonjour".to_string())]),
        )
        .await
        .unwrap();
    let stored = stored_link("comp", vec!["greet-cfg".into()]);
    store.put_link(stored.clone()).await.unwrap();
    f.until("the pulled link", |h| h.links().len() == 1).await;
    assert!(
        f.call("comp", "default", "c")
            .await
            .unwrap()
            .starts_with("bonjour, c")
    );

    // Editing the named config updates the link in place: the provider is told, as an update.
    store
        .put_config(
            "greet-cfg",
            &HashMap::from([("greeting".to_string(), "salut".to_string())]),
        )
        .await
        .unwrap();
    f.until("the config update", |_| {
        f.provider
            .seen()
            .iter()
            .any(|s| matches!(s, Seen::Put { update: true, greeting, .. } if greeting == "salut"))
    })
    .await;
    assert!(
        f.call("comp", "default", "c")
            .await
            .unwrap()
            .starts_with("salut, c")
    );

    // Deleting it from the store deletes it in the provider.
    store
        .delete_link("comp", "default", "trellis-test", "greeter")
        .await
        .unwrap();
    f.until("the delete", |h| h.links().is_empty()).await;
    assert_eq!(
        f.provider.seen().last(),
        Some(&Seen::Delete {
            source: "comp".into(),
            name: "default".into()
        })
    );

    // A link naming config that does not exist is reported as failed, with the reason.
    let mut broken = stored;
    broken.target_config = vec!["nope".into()];
    store.put_link(broken).await.unwrap();
    f.until("the broken link", |h| {
        h.links().iter().any(|s| matches!(&s.state, trellis_sdk::link::LinkState::Failed { error } if error.contains("nope")))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_named_links_from_one_component_stay_apart() {
    let f = start("named").await;
    f.push_put(&link("comp", "default", &[("greeting", "one")]))
        .await;
    f.push_put(&link("comp", "second", &[("greeting", "two")]))
        .await;
    assert!(
        f.call("comp", "default", "z")
            .await
            .unwrap()
            .starts_with("one, z (via default")
    );
    assert!(
        f.call("comp", "second", "z")
            .await
            .unwrap()
            .starts_with("two, z (via second")
    );
    assert_eq!(f.handle.links().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_shows_active_failed_and_purged_links_and_purge_refuses_calls() {
    let f = start("ping").await;
    let mut events = f
        .nats
        .subscribe(f.subjects.event("linkdef_set_failed"))
        .await
        .unwrap();
    f.push_put(&link("a", "default", &[])).await;
    let reply = f
        .push_put(&link("b", "default", &[("fail", "bad password")]))
        .await;
    assert_eq!(reply["success"], false);
    assert!(
        reply["message"].as_str().unwrap().contains("bad password"),
        "{reply}"
    );
    f.push_put(&link("c", "default", &[])).await;

    // The failure is reported on the lattice, not only logged.
    let ev = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap();
    let ev: serde_json::Value = serde_json::from_slice(&ev.payload).unwrap();
    assert_eq!(ev["type"], "com.wasmcloud.lattice.linkdef_set_failed");
    assert!(
        ev["data"]["error"]
            .as_str()
            .unwrap()
            .contains("bad password")
    );

    assert!(f.call("c", "default", "n").await.is_ok());
    let purged = admin::purge_links(
        &f.nats,
        &f.subjects,
        PROVIDER,
        &LinkSelector {
            source_id: "c".into(),
            name: "default".into(),
            ..LinkSelector::default()
        },
        Duration::from_millis(500),
    )
    .await
    .unwrap();
    assert_eq!(purged.len(), 1);
    assert_eq!(purged[0].purged.len(), 1);
    assert_eq!(
        f.provider.seen().last(),
        Some(&Seen::Delete {
            source: "c".into(),
            name: "default".into()
        })
    );

    let ping = f.ping().await;
    let states: HashMap<String, serde_json::Value> = ping[0]
        .links
        .iter()
        .map(|s| (s.link.source_id.clone(), serde_json::to_value(s).unwrap()))
        .collect();
    assert_eq!(states["a"]["state"], "active");
    assert_eq!(states["b"]["state"], "failed");
    assert!(
        states["b"]["error"]
            .as_str()
            .unwrap()
            .contains("bad password")
    );
    assert_eq!(states["c"]["state"], "purged");
    assert_eq!(states["c"]["calls"], 1);

    // Calls over purged and failed links get a clear error right away.
    assert!(refusal(&f.call("c", "default", "n").await.unwrap_err()).contains("purged"));
    assert!(refusal(&f.call("b", "default", "n").await.unwrap_err()).contains("bad password"));
    // Until the link is put again.
    f.push_put(&link("c", "default", &[])).await;
    assert!(f.call("c", "default", "n").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_errors_and_panics_are_unhealthy_but_never_fatal() {
    let f = start("health").await;
    let ask = || async {
        let msg = f
            .nats
            .request(f.subjects.health(PROVIDER), "".into())
            .await
            .unwrap();
        serde_json::from_slice::<HealthStatus>(&msg.payload).unwrap()
    };
    assert!(ask().await.healthy);
    *f.provider.health.lock().unwrap() = "error";
    let h = ask().await;
    assert!(!h.healthy && h.message.unwrap().contains("backend unreachable"));
    *f.provider.health.lock().unwrap() = "panic";
    assert!(!ask().await.healthy);
    *f.provider.health.lock().unwrap() = "ok";
    assert!(ask().await.healthy);
    f.push_put(&link("comp", "default", &[])).await;
    assert!(f.call("comp", "default", "still").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_calls_and_refuses_new_ones() {
    let f = start("drain").await;
    f.push_put(&link("comp", "default", &[])).await;
    let mut headers = HeaderMap::new();
    headers.insert("source-id", "comp");
    let client = f.caller.client(f.subjects.wrpc_prefix(PROVIDER));
    let slow = {
        let client = client.clone();
        let headers = headers.clone();
        tokio::spawn(async move { client::slow(&client, Some(headers), 800).await })
    };
    f.until("the call to be in flight", |h| h.inflight() == 1)
        .await;
    let stopping = {
        let handle = f.handle.clone();
        let provider = f.provider.clone();
        tokio::spawn(async move { handle.stop(&provider).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // New calls are refused while draining (or find nobody once stopped).
    let err = client::greeting(&client, Some(headers), "late")
        .await
        .unwrap_err();
    assert!(TransportError::find(&err).is_some(), "{err:#}");
    // The in-flight call completes normally.
    assert_eq!(slow.await.unwrap().unwrap(), "done");
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .unwrap()
        .unwrap();
}

/// A 1.x host kills a provider the moment its shutdown request is answered: the answer comes
/// only once the calls in flight have finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_request_is_answered_once_in_flight_calls_are_done() {
    let f = start("sdreply").await;
    f.push_put(&link("comp", "default", &[])).await;
    let mut headers = HeaderMap::new();
    headers.insert("source-id", "comp");
    let client = f.caller.client(f.subjects.wrpc_prefix(PROVIDER));
    let slow = tokio::spawn(async move { client::slow(&client, Some(headers), 800).await });
    f.until("the call to be in flight", |h| h.inflight() == 1)
        .await;
    // What run_provider does once shutdown is asked for.
    let stopping = {
        let (handle, provider) = (f.handle.clone(), f.provider.clone());
        tokio::spawn(async move {
            handle.wait_for_shutdown().await;
            handle.stop(&provider).await
        })
    };
    let reply = f
        .nats
        .request(
            f.subjects.shutdown(PROVIDER),
            br#"{"host_id":"NHOST"}"#.as_slice().into(),
        )
        .await
        .unwrap();
    assert_eq!(&reply.payload[..], b"shutting down");
    assert_eq!(
        f.handle.inflight(),
        0,
        "answered with a call still in flight"
    );
    assert_eq!(slow.await.unwrap().unwrap(), "done");
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_request_from_another_host_is_ignored() {
    let lattice = common::unique_lattice("sd");
    let mut config = ProviderConfig::standalone(&lattice, PROVIDER, &common::nats_url()).unwrap();
    config.host_id = Some("NHOST".into());
    let f = start_with(config).await;
    let waiter = {
        let h = f.handle.clone();
        tokio::spawn(async move { h.wait_for_shutdown().await })
    };
    f.nats
        .publish(
            f.subjects.shutdown(PROVIDER),
            br#"{"host_id":"OTHER"}"#.as_slice().into(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());
    // (Answered only once stopped: see the test below.)
    f.nats
        .publish(
            f.subjects.shutdown(PROVIDER),
            br#"{"host_id":"NHOST"}"#.as_slice().into(),
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_every_subject_is_survived() {
    let f = start("garbage").await;
    f.push_put(&link("comp", "default", &[])).await;
    let subjects = [
        f.subjects.link_put(PROVIDER),
        f.subjects.link_del(PROVIDER),
        f.subjects.health(PROVIDER),
        f.subjects.shutdown(PROVIDER),
        f.subjects.config_update(PROVIDER),
        f.subjects.link_ping(PROVIDER),
        f.subjects.link_ping_all(),
        f.subjects.link_purge(PROVIDER),
        format!(
            "{}.wrpc.0.0.1.{INSTANCE}.greeting",
            f.subjects.wrpc_prefix(PROVIDER)
        ),
        format!(
            "{}.wrpc.0.0.1.{INSTANCE}.slow",
            f.subjects.wrpc_prefix(PROVIDER)
        ),
    ];
    let garbage: [&[u8]; 5] = [
        b"",
        b"\xff\xfe\x00garbage",
        b"{\"source_id\": 7}",
        b"[[[[[[",
        &[0x80; 4096],
    ];
    for subject in &subjects {
        for g in garbage {
            // With and without a reply subject; some requests are answered with an error.
            f.nats
                .publish(subject.clone(), g.to_vec().into())
                .await
                .unwrap();
            let _ = tokio::time::timeout(
                Duration::from_millis(300),
                f.nats.request(subject.clone(), g.to_vec().into()),
            )
            .await;
        }
    }
    // Hostile wRPC traffic with a header claiming a link: still only a clear failure.
    let mut headers = HeaderMap::new();
    headers.insert("source-id", "comp");
    let _ = tokio::time::timeout(
        Duration::from_millis(300),
        f.nats
            .request_with_headers(subjects[8].clone(), headers, vec![0xff; 64].into()),
    )
    .await;

    // Still serving and answering.
    assert!(f.call("comp", "default", "ok").await.is_ok());
    assert_eq!(f.ping().await.len(), 1);
    let msg = f
        .nats
        .request(f.subjects.health(PROVIDER), "".into())
        .await
        .unwrap();
    assert!(
        serde_json::from_slice::<HealthStatus>(&msg.payload)
            .unwrap()
            .healthy
    );
}

/// Callers that stall in the middle of their parameters hold up no other call: the provider
/// hands a call to the generated decoder (which takes one call after another) only once its
/// synchronous parameters are all here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_parameters_hold_up_no_other_call() {
    let mut config = ProviderConfig::standalone(
        &common::unique_lattice("stall"),
        PROVIDER,
        &common::nats_url(),
    )
    .unwrap();
    // Far longer than the caller's own timeout (5 s): a call queued behind a stalled one
    // would fail.
    config.rpc_timeout = Duration::from_secs(60);
    let f = start_with(config).await;
    f.push_put(&link("comp", "default", &[])).await;
    let subject = format!(
        "{}.wrpc.0.0.1.{INSTANCE}.greeting",
        f.subjects.wrpc_prefix(PROVIDER)
    );
    let mut headers = HeaderMap::new();
    headers.insert("source-id", "comp");
    headers.insert("link-name", "default");
    // Starts a call as a 1.x client does (no `p-complete`) with the first bytes of its
    // parameters; returns the server's parameter subject from the handshake and the
    // subscription on which the results will come.
    let begin = async |first: &'static [u8]| {
        let inbox = f.nats.new_inbox();
        let mut replies = f.nats.subscribe(format!("{inbox}.>")).await.unwrap();
        f.nats
            .publish_with_reply_and_headers(
                subject.clone(),
                format!("{inbox}.x"),
                headers.clone(),
                first.to_vec().into(),
            )
            .await
            .unwrap();
        let handshake = tokio::time::timeout(Duration::from_secs(5), replies.next())
            .await
            .expect("the provider answers every handshake")
            .unwrap();
        let server_rx = handshake
            .reply
            .expect("a handshake names the server's inbox");
        (format!("{server_rx}.params"), inbox, replies)
    };
    // Stalled calls: the name says 100 bytes, 3 come; half of them get a few more bytes,
    // then nothing.
    for i in 0..20 {
        let (params_rx, _, _) = begin(b"\x64abc").await;
        if i % 2 == 0 {
            f.nats
                .publish(params_rx, b"defg".to_vec().into())
                .await
                .unwrap();
        }
    }
    f.nats.flush().await.unwrap();
    // Well-behaved calls go through at once, every one of them.
    for name in ["ann", "bob", "cy"] {
        assert_eq!(
            f.call("comp", "default", name).await.unwrap(),
            format!("hello, {name} (via default from comp)")
        );
    }
    // A call that completes its parameters late is served too.
    let (params, late, mut late_rx) = begin(b"\x05ab").await;
    f.nats
        .publish(params.clone(), b"cde".to_vec().into())
        .await
        .unwrap();
    f.nats.publish(params, Vec::new().into()).await.unwrap();
    let results = tokio::time::timeout(Duration::from_secs(5), late_rx.next())
        .await
        .expect("results of the late call")
        .unwrap();
    assert_eq!(results.subject.as_str(), format!("{late}.x.results"));
    assert!(
        String::from_utf8_lossy(&results.payload).contains("hello, abcde (via default from comp)"),
        "{:?}",
        results.payload
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_nats_restart_and_keeps_serving() {
    let mut server = common::OwnNats::start();
    let lattice = common::unique_lattice("restart");
    let config = ProviderConfig::standalone(&lattice, PROVIDER, &server.url()).unwrap();
    let subjects = LatticeSubjects::new(&lattice).unwrap();
    let provider = TestProvider::default();
    let handle = ProviderHandle::start(config, Arc::new(provider.clone()))
        .await
        .unwrap();
    handle
        .serve(
            bindings::exports::trellis_test::greeter::greet::serve_interface(
                &handle.server(),
                Handler,
            )
            .await
            .unwrap(),
        )
        .unwrap();

    let connect = || async {
        let nats = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(server.url())
            .await
            .unwrap();
        // On the test's own server (the one it restarts), not the shared one.
        let conn = Connection::new(
            nats.clone(),
            TransportOptions {
                timeout: Duration::from_secs(2),
                ..TransportOptions::default()
            },
        )
        .await
        .unwrap();
        (nats, conn)
    };
    let (nats, caller) = connect().await;
    let store = LatticeStore::open(&nats, &subjects).await.unwrap();
    store.put_link(stored_link("comp", vec![])).await.unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("source-id", "comp");
    let prefix = subjects.wrpc_prefix(PROVIDER);
    let call = |caller: Connection, headers: HeaderMap| {
        let prefix = prefix.clone();
        async move {
            let client = caller.client(prefix);
            client::greeting(&client, Some(headers), "r").await
        }
    };
    for _ in 0..100 {
        if !handle.links().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    call(caller.clone(), headers.clone()).await.unwrap();

    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // During the outage calls fail with a clear error within their timeout (no hang).
    let during = tokio::time::timeout(
        Duration::from_secs(5),
        call(caller.clone(), headers.clone()),
    )
    .await;
    assert!(
        matches!(during, Ok(Err(_))),
        "call during the outage did not fail cleanly"
    );
    server.restart();

    // Both sides reconnect by themselves; calls succeed again.
    let mut ok = false;
    for _ in 0..60 {
        if call(caller.clone(), headers.clone()).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "provider did not serve again after the NATS restart");

    // And the link store is followed again: a new link put after the restart arrives.
    store.put_link(stored_link("other", vec![])).await.unwrap();
    let mut seen = false;
    for _ in 0..100 {
        if handle.links().len() == 2 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen,
        "link put after the restart never arrived: {:#?}",
        handle.links()
    );
    handle.stop(&provider).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_updates_reach_the_provider() {
    let f = start("cfg").await;
    f.nats
        .publish(
            f.subjects.config_update(PROVIDER),
            br#"{"a":"1","b":"2"}"#.as_slice().into(),
        )
        .await
        .unwrap();
    let expected = HashMap::from([
        ("a".to_string(), "1".to_string()),
        ("b".to_string(), "2".to_string()),
    ]);
    f.until("the config update", |_| {
        f.provider.seen().contains(&Seen::Config(expected.clone()))
    })
    .await;
}

/// A stand-in component: answers with the headers the call carried.
#[derive(Clone)]
struct Component;

impl bindings::exports::trellis_test::greeter::greet::Handler<trellis_wrpc_nats::ServeContext>
    for Component
{
    async fn greeting(
        &self,
        cx: trellis_wrpc_nats::ServeContext,
        name: String,
    ) -> anyhow::Result<String> {
        Ok(format!(
            "{name}: source-id={} target-id={} link-name={}",
            cx.header("source-id").unwrap_or("-"),
            cx.header("target-id").unwrap_or("-"),
            cx.header("link-name").unwrap_or("-"),
        ))
    }

    async fn slow(&self, _cx: trellis_wrpc_nats::ServeContext, _ms: u32) -> anyhow::Result<String> {
        Ok(String::new())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_calls_its_linked_component_with_1x_headers() {
    let f = start("linked").await;
    // A component the provider is linked to (the provider is the link's source).
    let server = Connection::new(common::nats().await, TransportOptions::default())
        .await
        .unwrap();
    let prefix = f.subjects.wrpc_prefix("comp-x");
    let wrpc = server.server(prefix.clone(), Some(prefix.into()));
    for (_, _, mut st) in
        bindings::exports::trellis_test::greeter::greet::serve_interface(&wrpc, Component)
            .await
            .unwrap()
    {
        tokio::spawn(async move {
            while let Some(Ok(fut)) = st.next().await {
                tokio::spawn(fut);
            }
        });
    }
    let mut l = link("ignored", "outbound", &[]);
    l.source_id = PROVIDER.into();
    l.target = "comp-x".into();
    assert_eq!(f.push_put(&l).await["success"], true);
    let linked = f
        .handle
        .linked_client(&l)
        .with_timeout(Duration::from_secs(3));
    let got = client::greeting(&linked, (), "hi").await.unwrap();
    assert_eq!(
        got,
        "hi: source-id=greeter target-id=comp-x link-name=outbound"
    );
    // Clients are cached per target: a second ask for the same target hands out the cached
    // client (its prefix is the same allocation, not an equal one built anew), another
    // target gets its own.
    let (first, again, other) = (
        f.handle.client("comp-x"),
        f.handle.client("comp-x"),
        f.handle.client("comp-y"),
    );
    assert!(
        std::ptr::eq(first.prefix().as_ptr(), again.prefix().as_ptr()),
        "the client of comp-x was built anew instead of taken from the cache"
    );
    assert!(!std::ptr::eq(
        first.prefix().as_ptr(),
        other.prefix().as_ptr()
    ));
    assert!(other.prefix().ends_with(".comp-y"), "{}", other.prefix());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_their_deadline_are_cancelled_and_concurrency_is_bounded() {
    let lattice = common::unique_lattice("limits");
    let mut config = ProviderConfig::standalone(&lattice, PROVIDER, &common::nats_url()).unwrap();
    config.call_deadline = Some(Duration::from_millis(300));
    config.max_concurrent_calls = 2;
    let f = start_with(config).await;
    f.push_put(&link("comp", "default", &[])).await;
    let mut headers = HeaderMap::new();
    headers.insert("source-id", "comp");
    let client = f.caller.client(f.subjects.wrpc_prefix(PROVIDER));

    // Over the deadline: the call is cancelled and the caller gets an error, not a result
    // after 5 s and not a hang.
    let started = std::time::Instant::now();
    let err = client::slow(&client, Some(headers.clone()), 5_000)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(4), "{err:#}");
    assert_eq!(f.handle.inflight(), 0);

    // Six calls at once against a limit of two: all succeed, never more than two run.
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let client = client.clone();
            let headers = headers.clone();
            tokio::spawn(async move { client::slow(&client, Some(headers), 100).await })
        })
        .collect();
    let mut max_seen = 0;
    while calls.iter().any(|c| !c.is_finished()) {
        max_seen = max_seen.max(f.handle.inflight());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap(), "done");
    }
    assert_eq!(max_seen, 2, "the concurrency limit was not applied");
}

/// A source whose keys the lattice records must prove each call: the host running another
/// component linked to the same provider cannot use this one's link by naming it; a source
/// with no recorded keys (a 1.x caller) is still taken at its word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_source_id_is_refused_when_the_source_has_keys() {
    use trellis_sdk::source_proof::ProofSigner;
    let f = start("proof").await;
    let store = f.store().await;
    let signer = |lattice: &str| {
        let key = nkeys::KeyPair::new_user();
        let seed = trellis_sdk::secret::Secret::new(key.seed().unwrap());
        ProofSigner::new(&seed, lattice).unwrap()
    };
    let (host_a, host_b) = (signer(&f.lattice), signer(&f.lattice));
    for (source, host) in [("comp-a", &host_a), ("comp-b", &host_b)] {
        store.put_link(stored_link(source, vec![])).await.unwrap();
        store
            .set_source_keys(source, vec![host.public_key()])
            .await
            .unwrap();
    }
    store.put_link(stored_link("legacy", vec![])).await.unwrap();
    f.until("three links", |h| h.links().len() == 3).await;
    // The keys arrive with the links (same sync); a proven call goes through.
    let proven = f
        .call_proven("comp-a", Some(host_a.proof("comp-a", PROVIDER)))
        .await;
    assert!(proven.is_ok(), "{proven:?}");

    // Host b, whose component comp-b may call the provider, names comp-a.
    for (proof, why) in [
        (None, "carries no trellis-source-proof header"),
        (
            Some(host_b.proof("comp-a", PROVIDER)),
            "may not speak for it",
        ),
        (Some(host_a.proof("comp-b", PROVIDER)), "does not verify"),
        (
            Some(host_a.proof("comp-a", "another-target")),
            "does not verify",
        ),
    ] {
        let err = f.call_proven("comp-a", proof).await.unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("source comp-a is not proven") && err.contains(why),
            "{err}"
        );
    }
    // Its own component works; a source with no recorded keys is taken at its word.
    assert!(
        f.call_proven("comp-b", Some(host_b.proof("comp-b", PROVIDER)))
            .await
            .is_ok()
    );
    assert!(f.call_proven("legacy", None).await.is_ok());
}
