//! Generated: the `wrpc:keyvalue/watcher@0.2.0-draft` bindings, both directions
//! (`exports::…` to serve, `wrpc::…` to call). Hand logic is in `watcher`.

#![allow(missing_docs, clippy::all)]

crate::wire_bindings!("trellis:lattice/keyvalue-watch@0.1.0");
