//! `wasi:keyvalue` in a component, carried to a provider as the 1.x wire interfaces
//! (`wrpc:keyvalue/{store,atomics,batch}@0.2.0-draft`, bucket as a string). The provider here
//! is a small SDK provider keeping values in memory: what is under test is the host's
//! mapping and routing; the real backends come with the keyvalue providers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use trellis_host::read_component;
use trellis_sdk::provider::Provider;
use trellis_sdk::runtime::CallContext;
use trellis_sdk::store::StoredLink;
use trellis_sdk::subjects::LatticeSubjects;
use trellis_sdk::transport::{Connection, TransportOptions};
use trellis_tests as common;

mod support;

mod provider_bindings {
    wit_bindgen_wrpc::generate!({
        path: "../wit",
        world: "trellis:lattice/keyvalue@0.1.0",
        generate_all,
        features: ["clocks-timezone", "cli-exit-with-code", "informational-outbound-responses", "network-error-code"],
    });
}
mod caller {
    wit_bindgen_wrpc::generate!({
        inline: "
            package trellis-test:components@0.1.0;
            interface echo { kv: func(bucket: string) -> result<string, string>; }
            world caller { import echo; }
        ",
    });
}

use provider_bindings::exports::wrpc::keyvalue::{atomics, batch, store};

const ECHO_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/components/prebuilt/echo.wasm"
);

/// Buckets the test provider knows; any other is `no-such-store`.
#[derive(Clone, Default)]
struct MemKv(Arc<Mutex<BTreeMap<(String, String), Bytes>>>);

impl Provider for MemKv {}

impl MemKv {
    fn check(bucket: &str) -> Result<(), store::Error> {
        if bucket == "ok" {
            Ok(())
        } else {
            Err(store::Error::NoSuchStore)
        }
    }
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Bytes>> {
        self.0.lock().unwrap()
    }
}

impl store::Handler<CallContext> for MemKv {
    async fn get(
        &self,
        _: CallContext,
        bucket: String,
        key: String,
    ) -> anyhow::Result<Result<Option<Bytes>, store::Error>> {
        Ok(Self::check(&bucket).map(|()| self.map().get(&(bucket, key)).cloned()))
    }
    async fn set(
        &self,
        _: CallContext,
        bucket: String,
        key: String,
        value: Bytes,
    ) -> anyhow::Result<Result<(), store::Error>> {
        Ok(Self::check(&bucket).map(|()| {
            self.map().insert((bucket, key), value);
        }))
    }
    async fn delete(
        &self,
        _: CallContext,
        bucket: String,
        key: String,
    ) -> anyhow::Result<Result<(), store::Error>> {
        Ok(Self::check(&bucket).map(|()| {
            self.map().remove(&(bucket, key));
        }))
    }
    async fn exists(
        &self,
        _: CallContext,
        bucket: String,
        key: String,
    ) -> anyhow::Result<Result<bool, store::Error>> {
        Ok(Self::check(&bucket).map(|()| self.map().contains_key(&(bucket, key))))
    }
    async fn list_keys(
        &self,
        _: CallContext,
        bucket: String,
        _cursor: Option<u64>,
    ) -> anyhow::Result<Result<store::KeyResponse, store::Error>> {
        Ok(Self::check(&bucket).map(|()| store::KeyResponse {
            keys: self
                .map()
                .keys()
                .filter(|(b, _)| *b == bucket)
                .map(|(_, k)| k.clone())
                .collect(),
            cursor: None,
        }))
    }
}

impl atomics::Handler<CallContext> for MemKv {
    async fn increment(
        &self,
        _: CallContext,
        bucket: String,
        key: String,
        delta: u64,
    ) -> anyhow::Result<Result<u64, store::Error>> {
        Ok(Self::check(&bucket).map(|()| {
            let mut map = self.map();
            let entry = map
                .entry((bucket, key))
                .or_insert_with(|| Bytes::from_static(b"0"));
            let n = String::from_utf8_lossy(entry).parse::<u64>().unwrap_or(0) + delta;
            *entry = Bytes::from(n.to_string());
            n
        }))
    }
}

impl batch::Handler<CallContext> for MemKv {
    async fn get_many(
        &self,
        _: CallContext,
        bucket: String,
        keys: Vec<String>,
    ) -> anyhow::Result<Result<Vec<Option<(String, Bytes)>>, store::Error>> {
        Ok(Self::check(&bucket).map(|()| {
            let map = self.map();
            keys.into_iter()
                .map(|k| {
                    map.get(&(bucket.clone(), k.clone()))
                        .map(|v| (k, v.clone()))
                })
                .collect()
        }))
    }
    async fn set_many(
        &self,
        _: CallContext,
        bucket: String,
        kvs: Vec<(String, Bytes)>,
    ) -> anyhow::Result<Result<(), store::Error>> {
        Ok(Self::check(&bucket).map(|()| {
            let mut map = self.map();
            for (k, v) in kvs {
                map.insert((bucket.clone(), k), v);
            }
        }))
    }
    async fn delete_many(
        &self,
        _: CallContext,
        bucket: String,
        keys: Vec<String>,
    ) -> anyhow::Result<Result<(), store::Error>> {
        Ok(Self::check(&bucket).map(|()| {
            let mut map = self.map();
            for k in keys {
                map.remove(&(bucket.clone(), k));
            }
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_keyvalue_reaches_the_linked_provider_as_the_wire_interface() {
    let lattice = common::unique_lattice("kv");
    let subjects = LatticeSubjects::new(&lattice).unwrap();
    let kv = MemKv::default();
    let provider = support::provider(&lattice, "kv-mem", kv.clone()).await;
    provider
        .serve(
            provider_bindings::serve(&provider.server(), kv.clone())
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
    let kv_call = || caller::trellis_test::components::echo::kv(&client, None, "ok");
    let mut summary = kv_call().await.unwrap();
    for _ in 0..50 {
        // The provider picks the link up from the store within milliseconds.
        if summary.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        summary = kv_call().await.unwrap();
    }
    assert_eq!(
        summary.unwrap(),
        "get=hello exists=true counter=5 batch=2 keys=a,b,counter,greeting deleted=true"
    );
    // The values really are in the provider, under the bucket the component named.
    assert_eq!(
        kv.map()
            .get(&("ok".to_string(), "counter".to_string()))
            .cloned(),
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
