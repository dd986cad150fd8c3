//! `wasmcloud:bus`, which wasmCloud 1.x components import to pick the link their calls use:
//! `lattice@1.0.0` and `lattice@2.0.x` (`set-link-name`), and `error@2.0.x` with the
//! `wrpc:rpc/error` it builds on.
//!
//! `set-link-name(name, interfaces)` makes the component's calls of those interfaces use the
//! link named `name` for the rest of the invocation (each invocation has its own store and
//! starts on `default`); the choice itself is kept by the invocation's
//! [`LinkRouter`](crate::router::LinkRouter). `@2.0.x` first checks that every interface has a
//! link of that name and otherwise fails, changing nothing; `@1.0.0` has no error to give and
//! ignores such a call, as 1.x does. An interface is named by namespace, package and
//! interface without a version (`wasi`, `keyvalue`, `store`).

use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime_wasi::p2::IoError;

use crate::state::HostState;

mod bindings {
    wasmtime::component::bindgen!({
        inline: "
            package trellis:host-bus;
            world host-bus {
                import wasmcloud:bus/lattice@1.0.0;
                import wasmcloud:bus/lattice@2.0.1;
                import wasmcloud:bus/error@2.0.1;
            }
        ",
        path: ["../wit/deps/io", "../wit/deps/rpc", "../wit/deps/bus-1.0.0", "../wit/deps/bus"],
        imports: { default: trappable },
        with: {
            "wasi:io/error": wasmtime_wasi::p2::bindings::io::error,
            "wasmcloud:bus/lattice@1.0.0.call-target-interface": super::CallTargetInterface,
            "wasmcloud:bus/lattice@2.0.1.call-target-interface": super::CallTargetInterface,
            "wasmcloud:bus/error.error": super::CallFailure,
            "wrpc:rpc/error.error": super::CallFailure,
        },
    });
}

use bindings::wasmcloud::bus1_0_0::lattice as lattice_v1;
use bindings::wasmcloud::bus2_0_1::{error as bus_error, lattice as lattice_v2};
use bindings::wrpc::rpc::error as rpc_error;

/// An interface named in `set-link-name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallTargetInterface {
    /// `wasi`, `wasmcloud`, …
    pub namespace: String,
    /// `keyvalue`, `blobstore`, …
    pub package: String,
    /// `store`, `atomics`, …
    pub interface: String,
}

/// A failed call over the lattice as a component holds it (`wasmcloud:bus/error.error` and
/// `wrpc:rpc/error.error`): its description.
#[derive(Debug)]
pub struct CallFailure(String);

impl HostState {
    /// Takes the interfaces out of the table, in order.
    fn take_interfaces(
        &mut self,
        interfaces: Vec<Resource<CallTargetInterface>>,
    ) -> wasmtime::Result<Vec<CallTargetInterface>> {
        interfaces
            .into_iter()
            .map(|i| Ok(self.table().delete(i)?))
            .collect()
    }

    fn new_target(
        &mut self,
        namespace: String,
        package: String,
        interface: String,
    ) -> wasmtime::Result<Resource<CallTargetInterface>> {
        let target = CallTargetInterface {
            namespace,
            package,
            interface,
        };
        Ok(self.table().push(target)?)
    }
}

/// The `call-target-interface` resource of both bus versions (the same resource, generated
/// twice).
macro_rules! call_target_methods {
    () => {
        fn new(
            &mut self,
            namespace: String,
            package: String,
            interface: String,
        ) -> wasmtime::Result<Resource<CallTargetInterface>> {
            self.new_target(namespace, package, interface)
        }

        fn drop(&mut self, rep: Resource<CallTargetInterface>) -> wasmtime::Result<()> {
            self.table().delete(rep)?;
            Ok(())
        }
    };
}

impl lattice_v1::HostCallTargetInterface for HostState {
    call_target_methods!();
}

impl lattice_v1::Host for HostState {
    fn set_link_name(
        &mut self,
        name: String,
        interfaces: Vec<Resource<CallTargetInterface>>,
    ) -> wasmtime::Result<()> {
        let interfaces = self.take_interfaces(interfaces)?;
        // 1.0.0 has no error to answer: a name without links is ignored, as in 1.x.
        if let Err(why) = self.router().set_link_name(&name, &interfaces) {
            tracing::debug!(component = %self.local.component_id, "set-link-name ignored: {why}");
        }
        Ok(())
    }
}

impl lattice_v2::HostCallTargetInterface for HostState {
    call_target_methods!();
}

impl lattice_v2::Host for HostState {
    fn set_link_name(
        &mut self,
        name: String,
        interfaces: Vec<Resource<CallTargetInterface>>,
    ) -> wasmtime::Result<Result<(), String>> {
        let interfaces = self.take_interfaces(interfaces)?;
        Ok(self.router().set_link_name(&name, &interfaces))
    }
}

impl HostState {
    /// The description of a wasi:io error, which it consumes.
    fn take_io_error(&mut self, error: Resource<IoError>) -> wasmtime::Result<String> {
        let error = self.table().delete(error)?;
        Ok(format!("{error:?}"))
    }

    fn push_failure(&mut self, why: String) -> wasmtime::Result<Resource<CallFailure>> {
        Ok(self.table().push(CallFailure(why))?)
    }

    fn failure_text(&mut self, failure: &Resource<CallFailure>) -> wasmtime::Result<String> {
        Ok(self.table().get(failure)?.0.clone())
    }
}

/// The methods `wrpc:rpc/error.error` and `wasmcloud:bus/error.error` share (the same
/// resource shape in two packages), implemented once for both traits.
macro_rules! call_failure_methods {
    () => {
        fn from_io_error(
            &mut self,
            error: Resource<IoError>,
        ) -> wasmtime::Result<Result<Resource<CallFailure>, Resource<IoError>>> {
            let why = self.take_io_error(error)?;
            Ok(Ok(self.push_failure(why)?))
        }

        fn to_debug_string(&mut self, failure: Resource<CallFailure>) -> wasmtime::Result<String> {
            self.failure_text(&failure)
        }

        fn drop(&mut self, rep: Resource<CallFailure>) -> wasmtime::Result<()> {
            self.table().delete(rep)?;
            Ok(())
        }
    };
}

impl rpc_error::HostError for HostState {
    call_failure_methods!();
}

impl rpc_error::Host for HostState {}

impl bus_error::HostError for HostState {
    fn from_rpc_error(
        &mut self,
        error: Resource<CallFailure>,
    ) -> wasmtime::Result<Resource<CallFailure>> {
        // The same description, now owned by the bus's error.
        let CallFailure(why) = self.table().delete(error)?;
        self.push_failure(why)
    }

    call_failure_methods!();
}

impl bus_error::Host for HostState {}

/// Adds `wasmcloud:bus` (both versions) and `wrpc:rpc/error` to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    fn get(s: &mut HostState) -> &mut HostState {
        s
    }
    lattice_v1::add_to_linker::<HostState, HasSelf<HostState>>(linker, get)?;
    lattice_v2::add_to_linker::<HostState, HasSelf<HostState>>(linker, get)?;
    rpc_error::add_to_linker::<HostState, HasSelf<HostState>>(linker, get)?;
    bus_error::add_to_linker::<HostState, HasSelf<HostState>>(linker, get)?;
    Ok(())
}
