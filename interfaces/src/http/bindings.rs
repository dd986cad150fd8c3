//! Generated: the `wrpc:http/{incoming,outgoing}-handler@0.1.0` bindings, both directions
//! (`exports::…` to serve, `wrpc::…` to call). Hand logic is in the parent module.

#![allow(missing_docs, clippy::all)]

crate::wire_bindings!("trellis:lattice/http@0.1.0");
