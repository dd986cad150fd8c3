//! Which target each component's imports go to: the links of the lattice store, followed
//! live.
//!
//! The view is read on every routed call, so it is an in-memory copy behind a read lock,
//! refreshed whenever the store's data bucket changes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt as _;
use tracing::{debug, warn};
use trellis_sdk::store::{LatticeStore, StoredLink};

/// The links of the lattice, by source id.
#[derive(Clone, Debug, Default)]
pub struct LinkView {
    by_source: Arc<RwLock<HashMap<String, Vec<StoredLink>>>>,
    /// Checks the sources of calls into this host's components against the keys the
    /// lattice records for them.
    proofs: Arc<trellis_sdk::source_proof::ProofChecker>,
    /// Every id the lattice store knows: specifications and link ends.
    known: Arc<RwLock<std::collections::HashSet<String>>>,
}

/// Splits `ns:pkg/iface@version` into its parts.
pub(crate) fn split_instance(instance: &str) -> Option<(&str, &str, &str)> {
    let (pkg, rest) = instance.split_once('/')?;
    let iface = rest.split('@').next().unwrap_or(rest);
    let (ns, pkg) = pkg.split_once(':')?;
    Some((ns, pkg, iface))
}

impl LinkView {
    /// The target linked from `source` for wire instance `instance` under `link_name`.
    ///
    /// Links name the interface components import (`wasi:keyvalue/store`); the host calls
    /// its wire form (`wrpc:keyvalue/store`), so a `wrpc:` instance also matches a `wasi:`
    /// link of the same package and interface, as in 1.x.
    pub fn target(&self, source: &str, instance: &str, link_name: &str) -> Option<String> {
        let (ns, pkg, iface) = split_instance(instance)?;
        let by_source = self.by_source.read().unwrap_or_else(|p| p.into_inner());
        let links = by_source.get(source)?;
        let find = |ns: &str| {
            links.iter().find_map(|l| {
                (l.name == link_name
                    && l.wit_namespace == ns
                    && l.wit_package == pkg
                    && l.interfaces.iter().any(|i| i == iface))
                .then(|| l.target.clone())
            })
        };
        find(ns).or_else(|| (ns == "wrpc").then(|| find("wasi")).flatten())
    }

    /// Replaces the view with what the store holds now.
    pub async fn reload(&self, store: &LatticeStore) -> Result<(), trellis_sdk::store::StoreError> {
        let mut by_source: HashMap<String, Vec<StoredLink>> = HashMap::new();
        let mut keys = HashMap::new();
        let mut known = std::collections::HashSet::new();
        for (id, spec) in store.specs().await? {
            known.insert(id.clone());
            for l in &spec.links {
                known.insert(l.target.clone());
            }
            if !spec.source_keys.is_empty() {
                keys.insert(id, spec.source_keys);
            }
            for link in spec.links {
                by_source
                    .entry(link.source_id.clone())
                    .or_default()
                    .push(link);
            }
        }
        *self.by_source.write().unwrap_or_else(|p| p.into_inner()) = by_source;
        *self.known.write().unwrap_or_else(|p| p.into_inner()) = known;
        self.proofs.set_keys(keys);
        Ok(())
    }

    /// Whether the lattice store knows `id` (it has a specification or is a link's end).
    pub fn knows(&self, id: &str) -> bool {
        self.known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
    }

    /// The checker of source proofs the view keeps up to date.
    pub fn proofs(&self) -> &Arc<trellis_sdk::source_proof::ProofChecker> {
        &self.proofs
    }

    /// Keeps the view in step with the store until the task is dropped; re-syncs after any
    /// watch failure.
    pub async fn follow(self, store: LatticeStore) {
        loop {
            let watch = match store.watch().await {
                Ok(w) => w,
                Err(err) => {
                    warn!(%err, "cannot watch the lattice store");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let mut watch = Box::pin(watch);
            if let Err(err) = self.reload(&store).await {
                warn!(%err, "cannot read links");
            }
            while let Some(change) = watch.next().await {
                if change.is_err() {
                    break;
                }
                if let Err(err) = self.reload(&store).await {
                    warn!(%err, "cannot read links");
                }
            }
            debug!("lattice store watch ended; re-syncing");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
