//! `wasi:keyvalue` in a component, carried to a provider as the 1.x wire interfaces
//! (`wrpc:keyvalue/{store,atomics,batch}@0.2.0-draft`, bucket as a string). The provider here
//! is a small SDK provider keeping values in memory: what is under test is the host's
//! mapping and routing; the real backends come with the keyvalue providers.

use bytes::Bytes;
use trellis_host::read_component;
use trellis_interfaces::keyvalue;
use trellis_sdk::provider::Provider;
use trellis_sdk::store::StoredLink;
use trellis_sdk::subjects::LatticeSubjects;
use trellis_tests::{self as common, MemKv};
use trellis_wrpc_nats::{Connection, TransportOptions};

mod support;

use trellis_tests::components as caller;

const ECHO_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/components/prebuilt/echo.wasm"
);

/// The provider side of the in-memory store: it keeps no link state.
struct MemProvider;

impl Provider for MemProvider {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_keyvalue_reaches_the_linked_provider_as_the_wire_interface() {
    let lattice = common::unique_lattice("kv");
    let subjects = LatticeSubjects::new(&lattice).unwrap();
    let kv = MemKv::new("ok");
    let provider = support::provider(&lattice, "kv-mem", MemProvider).await;
    provider
        .serve(
            keyvalue::serve(&provider.server(), kv.clone())
                .await
                .unwrap(),
        )
        .unwrap();

    let host = support::host(&lattice).await;
    host.admin()
        .put_link(StoredLink::new(
            "kv-comp",
            "kv-mem",
            "wasi",
            "keyvalue",
            ["store", "atomics", "batch"],
        ))
        .await
        .unwrap();
    let _c = host
        .start_component("kv-comp", read_component(ECHO_WASM).unwrap(), &[])
        .await
        .unwrap();
    let conn = Connection::new(common::nats().await, TransportOptions::default())
        .await
        .unwrap();
    let client = conn.client(subjects.wrpc_prefix("kv-comp"));
    let summary =
        common::eventually(|| caller::trellis_test::components::echo::kv(&client, None, "ok"))
            .await
            .unwrap();
    assert_eq!(
        summary.unwrap(),
        "get=hello exists=true counter=5 batch=2 keys=a,b,counter,greeting deleted=true"
    );
    // The values really are in the provider, under the bucket the component named.
    assert_eq!(
        kv.contents().get("counter").cloned(),
        Some(Bytes::from("5"))
    );
    // Backend errors arrive as the interface's error variant.
    let err = caller::trellis_test::components::echo::kv(&client, None, "unknown")
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err, "Error::NoSuchStore");
    // No link: the interface's `other` error, naming what is missing, not a trap.
    let _unlinked = host
        .start_component("kv-unlinked", read_component(ECHO_WASM).unwrap(), &[])
        .await
        .unwrap();
    let client = conn.client(subjects.wrpc_prefix("kv-unlinked"));
    let err = caller::trellis_test::components::echo::kv(&client, None, "ok")
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        err.contains("no link") && err.contains("wrpc:keyvalue/store"),
        "{err}"
    );
}
