//! Generated: the `wasmcloud:messaging/{consumer,handler}@0.2.0` bindings, both directions
//! (`exports::…` to serve, `wasmcloud::…` to call). Hand logic is in the parent module.

#![allow(missing_docs, clippy::all)]

crate::wire_bindings!("trellis:lattice/messaging@0.1.0");
