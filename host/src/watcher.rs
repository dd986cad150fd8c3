//! A component's `wasi:keyvalue/watcher@0.2.0-draft` export, served on the lattice as
//! `wrpc:keyvalue/watcher@0.2.0-draft` (what keyvalue providers call, 1.x's and ours).
//!
//! The wire carries the bucket as a name; the component gets a real `bucket` resource of
//! that name — the same one `store.open` gives — so what it does with it (read the key
//! again, write another) goes over its own keyvalue link like any other keyvalue call.
//! (wasmCloud 1.9 hands the component a resource that is not in its table, so any use of it
//! traps.) A trap fails the call, which the provider delivers again.

use std::sync::Arc;

use bytes::Bytes;
use tracing::warn;
use trellis_interfaces::keyvalue::Watcher;
use wasmtime::component::InstancePre;

use crate::http::MakeStore;
use crate::keyvalue::Bucket;
use crate::state::HostState;

mod guest {
    wasmtime::component::bindgen!({
        path: "../wit/deps/keyvalue",
        world: "wasi:keyvalue/watch-service@0.2.0-draft",
        exports: { default: async },
        with: {
            "wasi:keyvalue/store": crate::keyvalue::guest::wasi::keyvalue::store,
            "wasi:keyvalue/atomics": crate::keyvalue::guest::wasi::keyvalue::atomics,
            "wasi:keyvalue/batch": crate::keyvalue::guest::wasi::keyvalue::batch,
        },
    });
}

/// The export name a component's watcher is found under.
pub(crate) const EXPORT: &str = "wasi:keyvalue/watcher@0.2.0-draft";

/// Calls one component's watcher, a fresh instance per change.
#[derive(Clone)]
pub(crate) struct ComponentWatcher {
    pub(crate) component_id: Arc<str>,
    pub(crate) pre: guest::WatchServicePre<HostState>,
    pub(crate) make_store: MakeStore,
}

impl ComponentWatcher {
    pub(crate) fn new(
        component_id: Arc<str>,
        pre: &InstancePre<HostState>,
        make_store: MakeStore,
    ) -> wasmtime::Result<Self> {
        Ok(Self {
            component_id,
            pre: guest::WatchServicePre::new(pre.clone())?,
            make_store,
        })
    }

    /// Instantiates the component and runs `on-set` (`value` given) or `on-delete` of
    /// `key` with a bucket resource named `bucket`.
    async fn call(&self, bucket: String, key: String, value: Option<Bytes>) -> Result<(), String> {
        let mut store = (self.make_store)();
        let failed = |e: wasmtime::Error| {
            let why = format!("the component's watcher failed: {e:#}");
            warn!(component = &*self.component_id, key = %key, "{why}");
            why
        };
        let bucket = store
            .data_mut()
            .table()
            .push(Bucket::named(bucket))
            .map_err(|e| failed(e.into()))?;
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(failed)?;
        let watcher = instance.wasi_keyvalue_watcher();
        match value {
            Some(value) => watcher.call_on_set(&mut store, bucket, &key, &value).await,
            None => watcher.call_on_delete(&mut store, bucket, &key).await,
        }
        .map_err(failed)
    }
}

impl<C: Send + 'static> Watcher<C> for ComponentWatcher {
    async fn on_set(&self, _: C, bucket: String, key: String, value: Bytes) -> Result<(), String> {
        self.call(bucket, key, Some(value)).await
    }

    async fn on_delete(&self, _: C, bucket: String, key: String) -> Result<(), String> {
        self.call(bucket, key, None).await
    }
}
