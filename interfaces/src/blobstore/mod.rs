//! `wasi:blobstore` on the wire: `wrpc:blobstore/blobstore@0.2.0`, what wasmCloud 1.x hosts
//! send for `wasi:blobstore@0.2.0-draft`.

pub mod bindings;
