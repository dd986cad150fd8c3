//! `wasi:blobstore` in a component, carried to a provider as the 1.x wire interface
//! `wrpc:blobstore/blobstore@0.2.0`, with data streamed both ways (objects larger than a NATS
//! message). The provider is a small SDK provider keeping objects in memory: what is under
//! test is the host's mapping and streaming; real backends come with the blobstore providers.

use std::time::Duration;

use trellis_host::read_component;
use trellis_interfaces::blobstore;
use trellis_sdk::provider::Provider;
use trellis_sdk::store::StoredLink;
use trellis_sdk::subjects::LatticeSubjects;
use trellis_tests::{self as common, MemBlobs};

mod support;

use trellis_tests::components as caller;

const ECHO_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/components/prebuilt/echo.wasm"
);

/// The provider side of the in-memory store: it keeps no link state.
struct MemProvider;

impl Provider for MemProvider {}

#[test]
fn wasi_blobstore_streams_objects_through_the_linked_provider() {
    common::run_with_large_stacks(blob_round_trips());
}

async fn blob_round_trips() {
    let lattice = common::unique_lattice("blob");
    let subjects = LatticeSubjects::new(&lattice).unwrap();
    let blobs = MemBlobs::default();
    let provider = support::provider(&lattice, "blobs", MemProvider).await;
    provider
        .serve(
            Box::pin(blobstore::serve(&provider.server(), blobs.clone()))
                .await
                .unwrap(),
        )
        .unwrap();

    let host = support::host(&lattice).await;
    host.admin()
        .put_link(StoredLink::new(
            "blob-comp",
            "blobs",
            "wasi",
            "blobstore",
            ["blobstore"],
        ))
        .await
        .unwrap();
    let _c = host
        .start_component("blob-comp", read_component(ECHO_WASM).unwrap(), &[])
        .await
        .unwrap();
    let conn = common::caller(Duration::from_secs(20)).await;
    let client = conn.client(subjects.wrpc_prefix("blob-comp"));
    let call = |size: u32| {
        Box::pin(caller::trellis_test::components::echo::blob(
            &client, None, "photos", "cat.jpg", size,
        ))
    };
    let mut res = call(1000).await.unwrap();
    for _ in 0..50 {
        // The provider picks the link up from the store within milliseconds.
        if res.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        res = call(1000).await.unwrap();
    }
    assert_eq!(
        res.unwrap(),
        "size=1000 read=1000 mismatches=0 listed=cat.jpg had=true gone=true"
    );
    // Five MiB: several NATS messages each way, streamed.
    let size = 5 << 20;
    let res = call(size).await.unwrap().unwrap();
    assert_eq!(
        res,
        format!("size={size} read={size} mismatches=0 listed=cat.jpg had=true gone=true")
    );
}
