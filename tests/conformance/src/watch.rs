//! The keyvalue watch suite: a watcher standing in for the component a keyvalue provider
//! tells of changes (it records them and can fail on purpose), the link that makes the
//! provider watch, and the scenario every keyvalue provider must pass — watched sets and
//! deletes arrive with the bucket's name, key and value, in order per key; unwatched keys
//! and changes do not; a failed call is delivered again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use trellis_interfaces::keyvalue::{Change, Watcher, serve_watcher};
use trellis_sdk::link::{LinkRole, LinkState};
use trellis_sdk::runtime::LinkedClient;
use trellis_sdk::store::StoredLink;
use trellis_sdk::subjects::LatticeSubjects;
use trellis_tests as common;

use crate::keyvalue::{BUCKET, kv};
use crate::lattice::ProviderProcess;

/// What the stand-in watcher saw, and which key it fails for.
#[derive(Clone, Default)]
pub struct Changes {
    /// Every change it accepted, in order.
    pub seen: Arc<Mutex<Vec<Change>>>,
    /// Calls per key (failed ones included).
    pub calls: Arc<Mutex<HashMap<String, u32>>>,
    /// The first call for this key fails.
    pub fail_first: Option<String>,
}

impl Changes {
    fn record(&self, change: Change) -> Result<(), String> {
        let calls = {
            let mut c = self.calls.lock().unwrap();
            let n = c.entry(change.key().to_string()).or_insert(0);
            *n += 1;
            *n
        };
        if self.fail_first.as_deref() == Some(change.key()) && calls == 1 {
            return Err(format!("failing {} on purpose", change.key()));
        }
        self.seen.lock().unwrap().push(change);
        Ok(())
    }

    /// Waits until `change` was seen (at most 10 s).
    pub async fn wait_for(&self, change: &Change) {
        let started = Instant::now();
        while !self.seen.lock().unwrap().contains(change) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{change:?} never arrived; seen: {:?}",
                self.seen.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The changes seen of `key`, in order.
    pub fn of(&self, key: &str) -> Vec<Change> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|c| c.key() == key).cloned().collect()
    }
}

impl Watcher<trellis_wrpc_nats::ServeContext> for Changes {
    async fn on_set(
        &self,
        _: trellis_wrpc_nats::ServeContext,
        bucket: String,
        key: String,
        value: Bytes,
    ) -> Result<(), String> {
        self.record(Change::Set { bucket, key, value })
    }

    async fn on_delete(
        &self,
        _: trellis_wrpc_nats::ServeContext,
        bucket: String,
        key: String,
    ) -> Result<(), String> {
        self.record(Change::Delete { bucket, key })
    }
}

/// Serves `watcher` as component `id` on `lattice` until the returned tasks are dropped.
pub async fn stand_in(
    lattice: &str,
    id: &str,
    watcher: Changes,
) -> Vec<tokio::task::JoinHandle<()>> {
    let server = crate::lattice::component_server(lattice, id).await;
    let invocations = serve_watcher(&server, watcher)
        .await
        .expect("serve the watcher");
    crate::lattice::run_calls(invocations)
}

/// Links provider `p` to component `comp`'s watcher, with `config` as source config (as a
/// 1.x manifest would: `wasi:keyvalue`, interface `watcher`).
pub async fn watch_link(p: &ProviderProcess, comp: &str, config: HashMap<String, String>) {
    let name = format!("{comp}-watch");
    p.store.put_config(&name, &config).await.unwrap();
    p.store
        .put_link(
            StoredLink::new(&p.id, comp, "wasi", "keyvalue", ["watcher"])
                .with_source_config([name]),
        )
        .await
        .unwrap();
}

/// Keys of the scenario in a provider's key syntax: two watched, one not, and one whose
/// first delivery fails (watched too).
pub struct Keys {
    /// Watched.
    pub a: &'static str,
    /// Watched.
    pub b: &'static str,
    /// Not watched.
    pub unwatched: &'static str,
    /// Watched; the stand-in fails its first call.
    pub flaky: &'static str,
    /// Watched; set until its change arrives, so the scenario starts once the watch is up.
    pub probe: &'static str,
}

/// The scenario: `writer` changes bucket [`BUCKET`] (which the watch link reports as
/// `bucket`); `changes` is the stand-in the provider calls.
pub async fn scenario(writer: &LinkedClient, changes: &Changes, bucket: &str, keys: &Keys) {
    let store = kv(writer);
    let set = |key: &str, value: &str| Change::Set {
        bucket: bucket.to_string(),
        key: key.to_string(),
        value: Bytes::from(value.to_string()),
    };
    let delete = |key: &str| Change::Delete {
        bucket: bucket.to_string(),
        key: key.to_string(),
    };
    // The watch subscribes after the link is accepted: write the probe until it shows.
    let started = Instant::now();
    while changes.of(keys.probe).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the watch never started"
        );
        store
            .set(BUCKET, keys.probe, &Bytes::from_static(b"p"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each step waits for its change, so what the provider reads back is this step's value.
    store
        .set(BUCKET, keys.a, &Bytes::from_static(b"1"))
        .await
        .unwrap();
    changes.wait_for(&set(keys.a, "1")).await;
    store
        .set(BUCKET, keys.unwatched, &Bytes::from_static(b"x"))
        .await
        .unwrap();
    store
        .set(BUCKET, keys.b, &Bytes::from_static(b"2"))
        .await
        .unwrap();
    changes.wait_for(&set(keys.b, "2")).await;
    store
        .set(BUCKET, keys.a, &Bytes::from_static(b"3"))
        .await
        .unwrap();
    changes.wait_for(&set(keys.a, "3")).await;
    store.delete(BUCKET, keys.a).await.unwrap();
    changes.wait_for(&delete(keys.a)).await;
    store.delete(BUCKET, keys.unwatched).await.unwrap();
    store
        .set(BUCKET, keys.flaky, &Bytes::from_static(b"5"))
        .await
        .unwrap();
    changes.wait_for(&set(keys.flaky, "5")).await;

    assert_eq!(
        changes.of(keys.a),
        vec![set(keys.a, "1"), set(keys.a, "3"), delete(keys.a)],
        "in order, once each"
    );
    assert!(
        changes.of(keys.unwatched).is_empty(),
        "an unwatched key was delivered"
    );
    assert_eq!(
        changes.calls.lock().unwrap()[keys.flaky],
        2,
        "failed once, then delivered"
    );
}

/// The state of `p`'s watching (source) link once it reports one (at most 10 s).
pub async fn source_link_state(p: &ProviderProcess) -> LinkState {
    let nats = common::nats().await;
    let subjects = LatticeSubjects::new(&p.lattice).unwrap();
    let started = Instant::now();
    loop {
        let links = trellis_sdk::admin::ping_links(
            &nats,
            &subjects,
            Some(&p.id),
            Duration::from_millis(500),
        )
        .await
        .unwrap()
        .into_iter()
        .flat_map(|r| r.links);
        if let Some(l) = links.into_iter().find(|l| l.role == LinkRole::Source) {
            return l.state;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the watch link never showed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
