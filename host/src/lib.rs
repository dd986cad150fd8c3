//! The Trellis host: runs WebAssembly components on the lattice and supervises providers.
//!
//! **Not implemented yet** (issue #3). This crate exists so the workspace has its final
//! shape; it exports nothing and nothing depends on it. The host will share the protocol types
//! (subjects, links, host data, the wRPC transport) from `trellis-sdk`.
