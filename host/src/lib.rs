//! The Trellis host: runs WebAssembly components on the lattice.
//!
//! A [`Host`] compiles a component once (cached on disk by wasmtime), instantiates it per
//! invocation from a pooling allocator, answers WASI basics locally (clocks, random, stdio to
//! the host log; no files, no network) plus `wasi:config/store` from the component's named
//! config and `wasi:logging`, routes every other import over wRPC to the target linked for
//! (interface, link name), and serves the component's exports on `{lattice}.{component_id}`
//! in a queue group, so several hosts share the load. Memory, execution time and concurrent
//! instances are limited per [`engine::Limits`].
//!
//! It also starts providers as child processes with 1.x host data and supervises them
//! ([`supervisor`]).
//!
//! Not yet here (issue #3 continues): mapping resource-style `wasi:keyvalue` and
//! `wasi:blobstore` imports to their wire interfaces, and serving `wasi:http`.
//!
//! Links and named config are written through [`lattice::LatticeAdmin`], which validates
//! them (conflicting links, missing config, config still in use).

pub mod engine;
mod host;
mod keyvalue;
pub mod lattice;
pub mod links;
mod local;
pub mod router;
mod state;
pub mod supervisor;

pub use host::{Host, HostError, HostOptions, RunningComponent, read_component};
