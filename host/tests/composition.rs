//! Composed components in the host: the project's echo component composed with the greeter
//! component (a pair), with polite → exclaim (a chain of three) and with loud → greeter (a
//! wrapper in the middle), started with no link for the composed interface, answer through
//! the parts built into them; the imports left open still go over links at runtime; the
//! host's inventory names the parts.

use std::collections::HashMap;
use std::time::Duration;

use trellis_compose::{Composer, Part, Use};
use trellis_interfaces::keyvalue;
use trellis_sdk::admin::ping_hosts;
use trellis_sdk::provider::Provider;
use trellis_sdk::store::StoredLink;
use trellis_sdk::subjects::LatticeSubjects;
use trellis_tests::components::trellis_test::components::echo;
use trellis_tests::{self as common, MemKv};
use trellis_wrpc_nats::{Connection, TransportOptions};

mod support;

fn part(name: &str) -> Part {
    let path = format!(
        "{}/../tests/components/prebuilt/{name}.wasm",
        env!("CARGO_MANIFEST_DIR")
    );
    Part::new(
        name,
        std::fs::read(path).expect("a prebuilt test component"),
    )
}

fn compose(names: &[&str], uses: &[&str]) -> Vec<u8> {
    let composer = Composer::new(names.iter().map(|n| part(n)).collect()).expect("parts");
    let uses: Vec<Use> = uses.iter().map(|u| u.parse().expect("a use")).collect();
    let plan = composer.plan(&uses).expect("a plan");
    composer.encode(&plan).expect("composed")
}

struct MemProvider;
impl Provider for MemProvider {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composed_components_answer_through_their_parts_and_keep_their_links() {
    let lattice = common::unique_lattice("composed");
    let subjects = LatticeSubjects::new(&lattice).unwrap();
    let host = support::host(&lattice).await;
    let admin = host.admin();
    admin
        .put_config(
            "howdy",
            &HashMap::from([("greeting".into(), "howdy".into())]),
        )
        .await
        .unwrap();
    // The imports composition leaves open still go over links: keyvalue to a provider.
    let kv = MemKv::new("ok");
    let provider = support::provider(&lattice, "kv-mem", MemProvider).await;
    provider
        .serve(
            keyvalue::serve(&provider.server(), kv.clone())
                .await
                .unwrap(),
        )
        .unwrap();
    admin
        .put_link(StoredLink::new(
            "pair",
            "kv-mem",
            "wasi",
            "keyvalue",
            ["store", "atomics", "batch"],
        ))
        .await
        .unwrap();

    // No link for trellis-test:greeter/greet anywhere on this lattice.
    let _pair = host
        .start_component(
            "pair",
            compose(&["echo", "greeter"], &[]),
            &["howdy".into()],
        )
        .await
        .unwrap();
    let _chain = host
        .start_component("chain", compose(&["echo", "polite", "exclaim"], &[]), &[])
        .await
        .unwrap();
    // A wrapper in the middle: loud shouts what the greeter built in behind it says.
    let _wrapped = host
        .start_component(
            "wrapped",
            compose(
                &["echo", "loud", "greeter"],
                &["trellis-test:greeter/greet=loud"],
            ),
            &["howdy".into()],
        )
        .await
        .unwrap();
    let conn = Connection::new(common::nats().await, TransportOptions::default())
        .await
        .unwrap();
    let pair = conn.client(subjects.wrpc_prefix("pair"));
    let chain = conn.client(subjects.wrpc_prefix("chain"));

    // The greeter built in reads the composed component's config.
    let greeting = echo::greet_via_import(&pair, None, "ann").await.unwrap();
    assert_eq!(greeting, "howdy from a component, ann");
    let greeting = echo::greet_via_import(&chain, None, "bo").await.unwrap();
    assert_eq!(greeting, "good day, bo!");
    let wrapped = conn.client(subjects.wrpc_prefix("wrapped"));
    let greeting = echo::greet_via_import(&wrapped, None, "cy").await.unwrap();
    assert_eq!(greeting, "HOWDY FROM A COMPONENT, CY");
    assert_eq!(echo::echo(&pair, None, "x").await.unwrap(), "x");

    let summary = echo::kv(&pair, None, "ok").await.unwrap();
    assert_eq!(
        summary.unwrap(),
        "get=hello exists=true counter=5 batch=2 keys=a,b,counter,greeting deleted=true"
    );
    assert!(kv.contents().contains_key("counter"));

    let hosts = ping_hosts(&common::nats().await, &subjects, Duration::from_secs(1))
        .await
        .unwrap();
    let parts = |id: &str| -> Vec<String> {
        hosts
            .iter()
            .flat_map(|h| &h.components)
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("no component {id} in {hosts:?}"))
            .parts
            .clone()
    };
    assert_eq!(parts("pair"), ["echo", "greeter"]);
    assert_eq!(parts("chain"), ["echo", "polite", "exclaim"]);
    assert_eq!(parts("wrapped"), ["echo", "loud", "greeter"]);
}
