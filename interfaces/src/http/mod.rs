//! HTTP on the wire: `wrpc:http/incoming-handler@0.1.0`, what an http-server provider calls
//! and what a host serves for a component exporting `wasi:http/incoming-handler`.

pub mod bindings;
