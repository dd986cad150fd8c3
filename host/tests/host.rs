//! The host against a real nats-server with a real component (`tests/components/echo`): its
//! export served to wRPC callers, its import routed by link to a provider built with the SDK,
//! its named config, a missing link, every limit, and two hosts sharing one component.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use trellis_host::engine::Limits;
use trellis_host::{Host, HostOptions, read_component};
use trellis_sdk::config::ProviderConfig;
use trellis_sdk::error::TransportError;
use trellis_sdk::provider::Provider;
use trellis_sdk::runtime::{CallContext, ProviderHandle};
use trellis_sdk::store::StoredLink;
use trellis_sdk::subjects::LatticeSubjects;
use trellis_tests as common;
use trellis_wrpc_nats::{Client, Connection};

use trellis_tests::components as bindings;
use trellis_tests::components as greeter;

use bindings::trellis_test::components::echo;

const ECHO_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/components/prebuilt/echo.wasm"
);

#[derive(Clone)]
struct Greeter;
impl Provider for Greeter {}
impl greeter::exports::trellis_test::greeter::greet::Handler<CallContext> for Greeter {
    async fn greeting(&self, cx: CallContext, name: String) -> anyhow::Result<String> {
        let greeting = cx
            .config()
            .get("greeting")
            .cloned()
            .unwrap_or_else(|| "hello".into());
        Ok(format!(
            "{greeting}, {name} (via {} from {})",
            cx.link_name, cx.source_id
        ))
    }
    async fn slow(&self, _cx: CallContext, ms: u32) -> anyhow::Result<String> {
        tokio::time::sleep(Duration::from_millis(ms.into())).await;
        Ok("done".into())
    }
}

struct Lattice {
    name: String,
    subjects: LatticeSubjects,
    caller: Connection,
    _provider: ProviderHandle,
}

impl Lattice {
    async fn new(tag: &str) -> Self {
        let name = common::unique_lattice(tag);
        let config = ProviderConfig::standalone(&name, "greeter", &common::nats_url()).unwrap();
        let provider = ProviderHandle::start(config, Arc::new(Greeter))
            .await
            .unwrap();
        provider
            .serve(
                greeter::exports::trellis_test::greeter::greet::serve_interface(
                    &provider.server(),
                    Greeter,
                )
                .await
                .unwrap(),
            )
            .unwrap();
        let caller = common::caller(Duration::from_secs(5)).await;
        Self {
            subjects: LatticeSubjects::new(&name).unwrap(),
            name,
            caller,
            _provider: provider,
        }
    }

    fn options(&self) -> HostOptions {
        HostOptions {
            lattice: self.name.clone(),
            limits: Limits {
                max_memory_bytes: 32 << 20,
                execution_deadline: Duration::from_millis(500),
                ..Limits::default()
            },
            ..HostOptions::default()
        }
    }

    fn client(&self, component: &str) -> Client {
        self.caller.client(self.subjects.wrpc_prefix(component))
    }
}

fn greeter_link(source: &str) -> StoredLink {
    StoredLink::new(source, "greeter", "trellis-test", "greeter", ["greet"])
        .with_target_config(["greet-cfg"])
}

fn failure(err: &anyhow::Error) -> String {
    match TransportError::find(err) {
        Some(TransportError::Failed(reason)) => reason.clone(),
        other => panic!("expected a failed call, got {other:?}: {err:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn component_serves_exports_routes_imports_and_reads_config() {
    let l = Lattice::new("host").await;
    let host = Host::new(common::nats().await, l.options()).await.unwrap();
    let store = host.store();
    store
        .put_config(
            "greet-cfg",
            &HashMap::from([("greeting".into(), "hey".into())]),
        )
        .await
        .unwrap();
    store
        .put_config(
            "echo-cfg",
            &HashMap::from([("color".into(), "blue".into())]),
        )
        .await
        .unwrap();
    store.put_link(greeter_link("echo-1")).await.unwrap();
    let wasm = read_component(ECHO_WASM).unwrap();
    let _echo = host
        .start_component("echo-1", wasm.clone(), &["echo-cfg".into()])
        .await
        .unwrap();
    let _unlinked = host.start_component("echo-2", wasm, &[]).await.unwrap();

    let c = l.client("echo-1");
    assert_eq!(echo::echo(&c, None, "ping").await.unwrap(), "ping");
    // Import → lattice → provider (with the link's config) → back.
    for _ in 0..50 {
        // The provider picks the link up from the store within milliseconds.
        if echo::greet_via_import(&c, None, "ann").await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        echo::greet_via_import(&c, None, "ann").await.unwrap(),
        "hey, ann (via default from echo-1)"
    );
    assert_eq!(
        echo::config_value(&c, None, "color")
            .await
            .unwrap()
            .as_deref(),
        Some("blue")
    );
    assert_eq!(echo::config_value(&c, None, "nope").await.unwrap(), None);
    echo::log(&c, None, "hello from the component")
        .await
        .unwrap();

    // No link: the call fails, the host says why in its log, nothing else is affected.
    let err = echo::greet_via_import(&l.client("echo-2"), None, "x")
        .await
        .unwrap_err();
    failure(&err);
    assert_eq!(
        echo::echo(&l.client("echo-2"), None, "still")
            .await
            .unwrap(),
        "still"
    );

    // A component naming missing config does not start, with a clear error.
    let err = host
        .start_component(
            "echo-3",
            read_component(ECHO_WASM).unwrap(),
            &["missing".into()],
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_enforced_and_the_host_keeps_serving() {
    let l = Lattice::new("limits").await;
    let host = Host::new(common::nats().await, l.options()).await.unwrap();
    let _echo = host
        .start_component("echo-l", read_component(ECHO_WASM).unwrap(), &[])
        .await
        .unwrap();
    let c = l.client("echo-l");
    assert_eq!(echo::echo(&c, None, "up").await.unwrap(), "up");

    // An infinite loop is interrupted at the execution deadline.
    let started = std::time::Instant::now();
    failure(&echo::spin(&c, None).await.unwrap_err());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "spin ran {:?}",
        started.elapsed()
    );
    // Memory past the limit (32 MiB) traps; within it works.
    assert_eq!(echo::hog(&c, None, 8).await.unwrap(), 8);
    failure(&echo::hog(&c, None, 100).await.unwrap_err());
    // A trap.
    failure(&echo::crash(&c, None).await.unwrap_err());
    // Other calls are unaffected, during and after.
    let (a, b) = tokio::join!(echo::spin(&c, None), echo::echo(&c, None, "meanwhile"));
    assert!(a.is_err());
    assert_eq!(b.unwrap(), "meanwhile");
    assert_eq!(echo::echo(&c, None, "after").await.unwrap(), "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_share_one_components_load() {
    let l = Lattice::new("share").await;
    let a = Host::new(common::nats().await, l.options()).await.unwrap();
    let b = Host::new(common::nats().await, l.options()).await.unwrap();
    let wasm = read_component(ECHO_WASM).unwrap();
    let on_a = a
        .start_component("shared", wasm.clone(), &[])
        .await
        .unwrap();
    let on_b = b.start_component("shared", wasm, &[]).await.unwrap();
    let c = l.client("shared");
    for i in 0..40 {
        assert_eq!(
            echo::echo(&c, None, &format!("{i}")).await.unwrap(),
            format!("{i}")
        );
    }
    let (na, nb) = (on_a.served(), on_b.served());
    assert_eq!(na + nb, 40);
    assert!(na > 0 && nb > 0, "one host served everything: {na} / {nb}");
    // One host goes away: the other serves everything.
    drop(on_a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..10 {
        echo::echo(&c, None, "x").await.unwrap();
    }
    assert_eq!(on_b.served(), nb + 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_and_config_are_validated_and_providers_see_them() {
    use trellis_host::lattice::LatticeError;
    let l = Lattice::new("admin").await;
    let host = Host::new(common::nats().await, l.options()).await.unwrap();
    let admin = host.admin();

    // Config names must exist.
    let err = admin.put_link(greeter_link("c1")).await.unwrap_err();
    assert!(
        matches!(err, LatticeError::MissingConfig(ref n) if n == "greet-cfg"),
        "{err}"
    );
    admin
        .put_config(
            "greet-cfg",
            &HashMap::from([("greeting".into(), "yo".into())]),
        )
        .await
        .unwrap();
    admin.put_link(greeter_link("c1")).await.unwrap();
    assert_eq!(admin.links(Some("c1")).await.unwrap().len(), 1);
    assert_eq!(
        admin.config("greet-cfg").await.unwrap().unwrap()["greeting"],
        "yo"
    );

    // The provider pulls what the host wrote: a call over the link works, with its config.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("source-id", "c1");
    let client = l.client("greeter");
    let mut answer = None;
    for _ in 0..50 {
        if let Ok(a) =
            greeter::trellis_test::greeter::greet::greeting(&client, Some(headers.clone()), "z")
                .await
        {
            answer = Some(a);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(answer.as_deref(), Some("yo, z (via default from c1)"));

    // Same source, interface and name, other target: refused.
    let mut other = greeter_link("c1");
    other.target = "elsewhere".into();
    let err = admin.put_link(other).await.unwrap_err();
    assert!(
        matches!(err, LatticeError::Conflict { ref existing_target, .. } if existing_target == "greeter"),
        "{err}"
    );
    // Bad names are refused before anything is written.
    let mut bad = greeter_link("c.1");
    bad.target_config.clear();
    assert!(matches!(
        admin.put_link(bad).await,
        Err(LatticeError::InvalidName(_))
    ));
    assert!(matches!(
        admin.put_config("a b", &HashMap::new()).await,
        Err(LatticeError::InvalidConfigName(_))
    ));

    // Config in use cannot be deleted; after the link goes, it can.
    let err = admin.delete_config("greet-cfg").await.unwrap_err();
    assert!(matches!(err, LatticeError::ConfigInUse { .. }), "{err}");
    assert_eq!(
        admin
            .delete_link("c1", "default", "trellis-test", "greeter")
            .await
            .unwrap(),
        1
    );
    admin.delete_config("greet-cfg").await.unwrap();
    assert!(admin.config("greet-cfg").await.unwrap().is_none());
}

const GREETER_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/components/prebuilt/greeter.wasm"
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_call_components_and_providers_call_components() {
    let l = Lattice::new("c2c").await;
    let host = Host::new(common::nats().await, l.options()).await.unwrap();
    let admin = host.admin();
    admin
        .put_config(
            "howdy",
            &HashMap::from([("greeting".into(), "howdy".into())]),
        )
        .await
        .unwrap();
    // echo's greeter import goes to a component this time, not to the provider.
    let mut link = greeter_link("echo-cc");
    link.target = "greeter-comp".into();
    link.target_config.clear();
    admin.put_link(link).await.unwrap();
    let _greeter = host
        .start_component(
            "greeter-comp",
            read_component(GREETER_WASM).unwrap(),
            &["howdy".into()],
        )
        .await
        .unwrap();
    let _echo = host
        .start_component("echo-cc", read_component(ECHO_WASM).unwrap(), &[])
        .await
        .unwrap();
    assert_eq!(
        echo::greet_via_import(&l.client("echo-cc"), None, "ann")
            .await
            .unwrap(),
        "howdy from a component, ann"
    );

    // A provider calling a component's export through its link (1.x headers included).
    let provider = &l._provider;
    let to_component = trellis_sdk::link::LinkDefinition {
        source_id: "greeter".into(),
        target: "echo-cc".into(),
        name: "default".into(),
        wit_namespace: "trellis-test".into(),
        wit_package: "components".into(),
        interfaces: vec!["echo".into()],
        source_config: HashMap::new(),
        target_config: HashMap::new(),
        source_secrets: None,
        target_secrets: None,
    };
    let linked = provider.linked_client(&to_component);
    assert_eq!(
        echo::echo(&linked, (), "from a provider").await.unwrap(),
        "from a provider"
    );
}

/// Source proofs both ways: a call into a component naming a source the lattice records
/// keys for must carry a proof one of them signed; and a host given its identity's key
/// proves its components' calls, which a provider checking proofs then accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_prove_the_sources_the_lattice_records_keys_for() {
    use trellis_sdk::secret::Secret;
    use trellis_sdk::source_proof::ProofSigner;
    let l = Lattice::new("proofs").await;
    let store = trellis_sdk::store::LatticeStore::open(&common::nats().await, &l.subjects)
        .await
        .unwrap();
    store
        .put_config(
            "greet-cfg",
            &HashMap::from([("greeting".to_string(), "hello".to_string())]),
        )
        .await
        .unwrap();
    let seed = |k: nkeys::KeyPair| Secret::new(k.seed().unwrap());
    let host_seed = seed(nkeys::KeyPair::new_user());
    let host = Host::new(
        common::nats().await,
        HostOptions {
            source_key: Some(host_seed.clone()),
            ..l.options()
        },
    )
    .await
    .unwrap();
    let host_key = host.source_public_key().expect("the host signs");
    let _echo = host
        .start_component("echo-p", read_component(ECHO_WASM).unwrap(), &[])
        .await
        .unwrap();
    let caller = ProofSigner::new(&seed(nkeys::KeyPair::new_user()), &l.name).unwrap();
    store
        .set_source_keys("caller-x", vec![caller.public_key()])
        .await
        .unwrap();
    store
        .set_source_keys("echo-p", vec![host_key.clone()])
        .await
        .unwrap();
    store.put_link(greeter_link("echo-p")).await.unwrap();

    let c = l.client("echo-p");
    let as_caller = |proof: Option<String>| {
        let mut h = async_nats::HeaderMap::new();
        h.insert("source-id", "caller-x");
        if let Some(p) = proof {
            h.insert("trellis-source-proof", p.as_str());
        }
        h
    };
    // The host follows the store: wait until it knows caller-x's key.
    let mut refused = String::new();
    for _ in 0..100 {
        match echo::echo(&c, Some(as_caller(None)), "ping").await {
            Err(err) => {
                refused = format!("{err:#}");
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(
        refused.contains("source caller-x is not proven"),
        "{refused}"
    );
    let forged = ProofSigner::new(&host_seed, &l.name)
        .unwrap()
        .proof("caller-x", "echo-p");
    let err = echo::echo(&c, Some(as_caller(Some(forged))), "ping")
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("may not speak for it"),
        "{err:#}"
    );
    let proof = caller.proof("caller-x", "echo-p");
    assert_eq!(
        echo::echo(&c, Some(as_caller(Some(proof))), "ping")
            .await
            .unwrap(),
        "ping"
    );
    // A call naming no source is not a claim to check.
    assert_eq!(echo::echo(&c, None, "ping").await.unwrap(), "ping");

    // The component's import reaches the greeter provider, which checks echo-p's proof:
    // the host signed it with the key the lattice records.
    let mut greeted = String::new();
    for _ in 0..100 {
        match echo::greet_via_import(&c, None, "ann").await {
            Ok(g) => {
                greeted = g;
                break;
            }
            Err(err) => greeted = format!("{err:#}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(greeted, "hello, ann (via default from echo-p)");
}

/// `trellis:routing/target`: a component picks the target of its calls at runtime among
/// those its policy allows, and gets a typed error naming the target otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_picks_a_target_its_policy_allows() {
    use bindings::trellis_test::components::picker;
    const PICKER_WASM: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/components/prebuilt/picker.wasm"
    );
    let l = Lattice::new("target").await;
    let store = trellis_sdk::store::LatticeStore::open(&common::nats().await, &l.subjects)
        .await
        .unwrap();
    let host = Host::new(common::nats().await, l.options()).await.unwrap();
    let mut running = Vec::new();
    for (id, color) in [("echo-red", "red"), ("echo-blue", "blue")] {
        store
            .put_config(
                &format!("{id}-cfg"),
                &HashMap::from([("color".to_string(), color.to_string())]),
            )
            .await
            .unwrap();
        running.push(
            host.start_component(
                id,
                read_component(ECHO_WASM).unwrap(),
                &[format!("{id}-cfg")],
            )
            .await
            .unwrap(),
        );
    }
    // Known to the lattice (it has a specification) but running nowhere.
    store
        .set_source_keys("echo-gone", vec!["UNOBODY".into()])
        .await
        .unwrap();
    // The picker's default link goes to red; its policy lets it pick blue or the gone one.
    store
        .put_link(StoredLink::new(
            "picker",
            "echo-red",
            "trellis-test",
            "components",
            ["echo"],
        ))
        .await
        .unwrap();
    host.allow_targets(
        "picker",
        vec!["echo-blue".into(), "echo-gone".into(), "nowhere".into()],
    );
    running.push(
        host.start_component("picker", read_component(PICKER_WASM).unwrap(), &[])
            .await
            .unwrap(),
    );
    let c = l.client("picker");
    // The host follows the store: wait until it knows blue's specification (its link is
    // not needed: blue is reached by its id).
    let mut picked = Err(String::new());
    for _ in 0..100 {
        picked = picker::pick(&c, None, "echo-blue", "color").await.unwrap();
        if picked.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(picked, Ok(Some("blue".into())));
    let refused = |target: &'static str| {
        let c = c.clone();
        async move { picker::pick(&c, None, target, "color").await.unwrap() }
    };
    let err = refused("echo-red").await.unwrap_err();
    assert!(
        err.starts_with("not-allowed: component picker may not pick target echo-red"),
        "{err}"
    );
    let err = refused("nowhere").await.unwrap_err();
    assert!(
        err.starts_with("no-such-target:") && err.contains("nowhere"),
        "{err}"
    );
    let err = refused("echo-gone").await.unwrap_err();
    assert!(
        err.starts_with("not-answering:") && err.contains("echo-gone"),
        "{err}"
    );
}
