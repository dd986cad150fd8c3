//! `trellis:routing/target@0.1.0`: a component picks, at runtime, the target its calls of
//! some interfaces go to — among the targets the lattice's policy allows it (the manifest's
//! `targets:` of the component), for the rest of the invocation.
//!
//! `set-target` answers a typed error naming the target: `not-allowed` (not in the
//! component's allow-list; checked first, so a component learns nothing of targets it may not
//! use), `not-answering` (the lattice store knows the id, but no host runs it as a component
//! and it answers no health request as a provider or external service), `no-such-target`
//! (neither known nor answering). On success the invocation's
//! [`LinkRouter`](crate::router::LinkRouter) sends those interfaces' calls to the target.
//! A provider target still serves only callers it has a link from (its own check); a
//! component target serves any caller that proves its source.

use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};

use crate::state::HostState;

mod bindings {
    wasmtime::component::bindgen!({
        inline: "
            package trellis:host-target;
            world host-target {
                import trellis:routing/target@0.1.0;
            }
        ",
        path: ["../wit/deps/trellis-routing"],
        imports: { default: async | trappable },
    });
}

use bindings::trellis::routing::target::{self, TargetError};

/// How long `set-target` waits for a target to answer.
const PROBE_WAIT: Duration = Duration::from_millis(300);

impl target::Host for HostState {
    async fn set_target(
        &mut self,
        target: String,
        interfaces: Vec<String>,
    ) -> wasmtime::Result<Result<(), TargetError>> {
        let component = self.local.component_id.clone();
        if !self.local.targets.contains(&target) {
            let allowed = if self.local.targets.is_empty() {
                "none".to_string()
            } else {
                self.local.targets.join(", ")
            };
            return Ok(Err(TargetError::NotAllowed(format!(
                "component {component} may not pick target {target} (its policy allows: {allowed})"
            ))));
        }
        let mut parsed = Vec::with_capacity(interfaces.len());
        for i in &interfaces {
            match crate::links::split_instance(i) {
                Some((ns, pkg, iface)) => parsed.push(format!("{ns}:{pkg}/{iface}")),
                None => {
                    return Ok(Err(TargetError::NoSuchTarget(format!(
                        "{i:?} is not an interface name (namespace:package/interface)"
                    ))));
                }
            }
        }
        let router = self.router().clone();
        if !router.answers(&target, PROBE_WAIT).await {
            return Ok(Err(if router.knows(&target) {
                TargetError::NotAnswering(format!(
                    "target {target} is known, but no host runs it and it answers no health request"
                ))
            } else {
                TargetError::NoSuchTarget(format!(
                    "the lattice knows no component, provider or external service {target}"
                ))
            }));
        }
        router.set_target(&target, parsed);
        Ok(Ok(()))
    }
}

/// Adds the interface to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    fn get(s: &mut HostState) -> &mut HostState {
        s
    }
    target::add_to_linker::<HostState, HasSelf<HostState>>(linker, get)
}
