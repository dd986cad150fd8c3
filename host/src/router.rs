//! Routing a component's imports over the lattice by link.
//!
//! Every import the host does not answer itself is polyfilled with a wRPC call; the
//! [`LinkRouter`] picks the target from the component's links (interface + link name) and
//! sends the 1.x headers (`source-id`, `link-name`), and the proof that this host speaks for
//! the component when it has a key (see `trellis_sdk::source_proof`). An import with no link fails the call
//! with an error naming the interface and the link name.
//!
//! The link name is `default` unless the invocation chose another for the interface
//! (`wasmcloud:bus/lattice.set-link-name`): each invocation's router has its own choices
//! ([`LinkRouter::for_invocation`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use trellis_sdk::source_proof::ProofSigner;
use trellis_sdk::subjects::{
    LINK_NAME_HEADER, LatticeSubjects, SOURCE_ID_HEADER, SOURCE_PROOF_HEADER,
};
use trellis_wrpc_nats::{Connection, Incoming, Outgoing};
use wrpc_transport::Invoke;

use crate::bus::CallTargetInterface;
use crate::in_process::LocalProviders;
use crate::links::LinkView;

/// Why an import could not be routed.
#[derive(Debug, thiserror::Error)]
#[error("component {component} has no link named {link_name:?} for {instance}")]
pub struct NoLink {
    /// The calling component.
    pub component: String,
    /// The imported instance.
    pub instance: String,
    /// The link name looked up.
    pub link_name: String,
}

/// The [`Invoke`] behind one component's polyfilled imports.
#[derive(Clone, Debug)]
pub struct LinkRouter {
    component_id: Arc<str>,
    link_name: Arc<str>,
    links: LinkView,
    conn: Connection,
    subjects: LatticeSubjects,
    timeout: Duration,
    /// The link names this invocation chose, by interface (`wasi:keyvalue/store`).
    chosen: Arc<Mutex<HashMap<String, Arc<str>>>>,
    /// Signs the proof that this host speaks for the component (when it has a key).
    signer: Option<Arc<ProofSigner>>,
    /// The targets this invocation picked (`trellis:routing/target`), by interface
    /// (`ns:pkg/iface`).
    targets: Arc<Mutex<HashMap<String, Arc<str>>>>,
    /// The providers running in this host's process (called directly, not over NATS).
    local: LocalProviders,
}

impl LinkRouter {
    pub(crate) fn new(
        component_id: Arc<str>,
        links: LinkView,
        conn: Connection,
        subjects: LatticeSubjects,
        timeout: Duration,
        signer: Option<Arc<ProofSigner>>,
        local: LocalProviders,
    ) -> Self {
        Self {
            component_id,
            link_name: Arc::from(trellis_sdk::link::DEFAULT_LINK_NAME),
            links,
            conn,
            subjects,
            timeout,
            chosen: Arc::default(),
            signer,
            targets: Arc::default(),
            local,
        }
    }

    /// The same router for a new invocation: every interface on the default link name.
    pub(crate) fn for_invocation(&self) -> Self {
        Self {
            chosen: Arc::default(),
            targets: Arc::default(),
            ..self.clone()
        }
    }

    /// Sends this invocation's calls of `interfaces` (`ns:pkg/iface`) to `target`.
    pub(crate) fn set_target(&self, target: &str, interfaces: Vec<String>) {
        let target: Arc<str> = Arc::from(target);
        let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        for i in interfaces {
            targets.insert(i, Arc::clone(&target));
        }
    }

    /// The target this invocation picked for wire instance `instance`, if any (a `wrpc:`
    /// instance also matches the `wasi:` interface of the same package, as links do).
    fn picked_target(&self, instance: &str) -> Option<String> {
        let (ns, pkg, iface) = crate::links::split_instance(instance)?;
        let targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        targets
            .get(&format!("{ns}:{pkg}/{iface}"))
            .or_else(|| {
                (ns == "wrpc")
                    .then(|| targets.get(&format!("wasi:{pkg}/{iface}")))
                    .flatten()
            })
            .map(|t| t.to_string())
    }

    /// Whether the lattice store knows `target` (a component, provider or external service).
    pub(crate) fn knows(&self, target: &str) -> bool {
        self.links.knows(target)
    }

    /// Whether `target` is served now: some host runs it as a component, or it answers a
    /// health request as a provider or external service, within `wait`.
    pub(crate) async fn answers(&self, target: &str, wait: Duration) -> bool {
        let nats = self.conn.nats();
        let health = async {
            let request = nats.request(self.subjects.health(target), "".into());
            matches!(tokio::time::timeout(wait, request).await, Ok(Ok(_)))
        };
        let hosts = async {
            trellis_sdk::admin::ping_hosts(nats, &self.subjects, wait)
                .await
                .unwrap_or_default()
                .iter()
                .any(|h| h.components.iter().any(|c| c.id == target))
        };
        let (health, hosts) = tokio::join!(health, hosts);
        health || hosts
    }

    /// Makes this invocation's calls of `interfaces` use the link named `name`; fails,
    /// changing nothing, when one of them has no link of that name.
    pub(crate) fn set_link_name(
        &self,
        name: &str,
        interfaces: &[CallTargetInterface],
    ) -> Result<(), String> {
        let keys: Vec<String> = interfaces
            .iter()
            .map(|i| format!("{}:{}/{}", i.namespace, i.package, i.interface))
            .collect();
        if let Some(missing) = keys
            .iter()
            .find(|key| self.links.target(&self.component_id, key, name).is_none())
        {
            return Err(format!(
                "interface `{missing}` does not have a link named `{name}` from component {}",
                self.component_id
            ));
        }
        let mut chosen = self.chosen.lock().unwrap_or_else(|p| p.into_inner());
        let name: Arc<str> = Arc::from(name);
        for key in keys {
            if name == self.link_name {
                chosen.remove(&key);
            } else {
                chosen.insert(key, Arc::clone(&name));
            }
        }
        Ok(())
    }

    /// The link name this invocation's calls of wire instance `instance` use.
    fn link_name_for(&self, instance: &str) -> Arc<str> {
        let chosen = self.chosen.lock().unwrap_or_else(|p| p.into_inner());
        if chosen.is_empty() {
            return Arc::clone(&self.link_name);
        }
        let Some((ns, pkg, iface)) = crate::links::split_instance(instance) else {
            return Arc::clone(&self.link_name);
        };
        // The host calls `wasi:` interfaces by their `wrpc:` wire names.
        let found = chosen.get(&format!("{ns}:{pkg}/{iface}")).or_else(|| {
            (ns == "wrpc")
                .then(|| chosen.get(&format!("wasi:{pkg}/{iface}")))
                .flatten()
        });
        Arc::clone(found.unwrap_or(&self.link_name))
    }
}

impl LinkRouter {
    /// How long a call over a link may take.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The target and link name of this invocation's calls of wire instance `instance`.
    fn route(&self, instance: &str) -> Result<(String, Arc<str>), NoLink> {
        let link_name = self.link_name_for(instance);
        let picked = self.picked_target(instance);
        match picked.or_else(|| self.links.target(&self.component_id, instance, &link_name)) {
            Some(target) => Ok((target, link_name)),
            None => Err(NoLink {
                component: self.component_id.to_string(),
                instance: instance.to_string(),
                link_name: link_name.to_string(),
            }),
        }
    }

    /// The keyvalue handler and call context for wire instance `instance` when its target
    /// runs in this host's process; `Ok(None)` when the call goes over the lattice (the call
    /// then reports a missing link itself); the provider's refusal (no such link, a failed
    /// or purged one) otherwise.
    pub(crate) fn local_keyvalue(
        &self,
        instance: &str,
    ) -> Result<
        Option<(
            trellis_interfaces::keyvalue::SharedHandler<trellis_sdk::runtime::CallContext>,
            trellis_sdk::runtime::CallContext,
        )>,
        String,
    > {
        if self.local.is_empty() {
            return Ok(None);
        }
        let Ok((target, link_name)) = self.route(instance) else {
            return Ok(None);
        };
        let Some(local) = self.local.get(&target) else {
            return Ok(None);
        };
        let Some(handler) = local.keyvalue.clone() else {
            return Ok(None);
        };
        // The same proof a call over the lattice carries, checked the same way.
        let proof = self
            .signer
            .as_ref()
            .map(|s| s.proof(&self.component_id, &target));
        let cx =
            local
                .handle
                .admit_local(&self.component_id, &link_name, instance, proof.as_deref())?;
        Ok(Some((handler, cx)))
    }
}

impl Invoke for LinkRouter {
    type Context = ();
    type Outgoing = Outgoing;
    type Incoming = Incoming;

    async fn invoke<P>(
        &self,
        _cx: (),
        instance: &str,
        func: &str,
        params: Bytes,
        paths: impl AsRef<[P]> + Send,
    ) -> anyhow::Result<(Outgoing, Incoming)>
    where
        P: AsRef<[Option<usize>]> + Send + Sync,
    {
        let (target, link_name) = self.route(instance)?;
        let mut headers = HeaderMap::new();
        headers.insert(SOURCE_ID_HEADER, &*self.component_id);
        headers.insert(LINK_NAME_HEADER, &*link_name);
        if let Some(signer) = &self.signer {
            headers.insert(
                SOURCE_PROOF_HEADER,
                signer.proof(&self.component_id, &target).as_str(),
            );
        }
        self.conn
            .client(self.subjects.wrpc_prefix(&target))
            .with_timeout(self.timeout)
            .invoke(Some(headers), instance, func, params, paths)
            .await
    }
}
