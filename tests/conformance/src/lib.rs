//! Conformance suites: one set of behaviour checks per interface, run over the lattice
//! against every provider of it, so that whichever backend is linked behaves the same.
//!
//! A suite talks to a provider only through the wire interface, as a component linked to it
//! would. The per-provider test files (in `tests/`) start the real provider binary and its
//! real backend and hand the suite a client.

pub mod cpu;
pub mod keyvalue;
pub mod lattice;
pub mod messaging;
pub mod watch;
