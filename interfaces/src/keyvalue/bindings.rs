//! Generated: the `wrpc:keyvalue/{store,atomics,batch}@0.2.0-draft` bindings, both
//! directions (`exports::…` to serve, `wrpc::…` to call). Hand logic is in the parent module.

#![allow(missing_docs, clippy::all)]

crate::wire_bindings!("trellis:lattice/keyvalue@0.1.0");
