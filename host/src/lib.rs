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
//! Resource-style `wasi:keyvalue` and `wasi:blobstore` imports are carried as the string-keyed
//! wire interfaces 1.x uses (`wrpc:keyvalue/*@0.2.0-draft`, `wrpc:blobstore/blobstore@0.2.0`),
//! blob data streamed both ways with bounded memory.
//!
//! A component's `wasi:http/incoming-handler` export is served as the 1.x wire instance
//! `wrpc:http/incoming-handler@0.1.0` (bodies streamed both ways); `wasi:http/types` is
//! answered locally and outgoing HTTP requests are denied.
//!
//! The futures of streaming interfaces are large in unoptimised builds: run debug builds of
//! the host with tokio worker stacks of 8 MiB or more (`Builder::thread_stack_size`).
//!
//! Every host answers host ping (`wasmbus.ctl.v1.{lattice}.host.ping`) with its inventory:
//! components, providers and their state ([`trellis_sdk::admin::ping_hosts`]).
//!
//! Links and named config are written through [`lattice::LatticeAdmin`], which validates
//! them (conflicting links, missing config, config still in use).

pub mod blobstore;
mod bus;
mod component;
pub mod engine;
pub mod fetch;
mod host;
mod http;
pub mod imports;
pub mod in_process;
mod inventory;
mod keyvalue;
pub mod lattice;
pub mod link_secrets;
pub mod links;
mod local;
pub mod nats_auth;
mod outgoing;
pub mod router;
pub mod secret_store;
pub mod secrets;
mod shapes;
mod state;
pub mod supervisor;
mod target;
mod watcher;

pub use component::ComponentError;
pub use fetch::FetchError;
pub use fetch::{load_component, read_component};
pub use host::{Host, HostError, HostOptions, ProviderIdentity, RunningComponent};
