//! The vendored WIT in `wit/` resolves and `wit-bindgen-wrpc` generates working bindings for
//! every provider world: this test fails to compile if a package is missing, mis-versioned or
//! unparseable.

// wit-bindgen-wrpc 0.11 parses with wit-parser 0.220, which only resolves the WASI 0.2.6 tree
// when its @unstable features are enabled (nothing here uses them).
mod keyvalue {
    wit_bindgen_wrpc::generate!({ path: "../wit", world: "trellis:lattice/keyvalue@0.1.0", generate_all, features: ["clocks-timezone", "cli-exit-with-code", "informational-outbound-responses", "network-error-code"] });
}
mod blobstore {
    wit_bindgen_wrpc::generate!({ path: "../wit", world: "trellis:lattice/blobstore@0.1.0", generate_all, features: ["clocks-timezone", "cli-exit-with-code", "informational-outbound-responses", "network-error-code"] });
}
mod messaging {
    wit_bindgen_wrpc::generate!({ path: "../wit", world: "trellis:lattice/messaging@0.1.0", generate_all, features: ["clocks-timezone", "cli-exit-with-code", "informational-outbound-responses", "network-error-code"] });
}
mod http_server {
    wit_bindgen_wrpc::generate!({ path: "../wit", world: "trellis:lattice/http-server@0.1.0", generate_all, features: ["clocks-timezone", "cli-exit-with-code", "informational-outbound-responses", "network-error-code"] });
}

#[test]
fn wire_instances_have_the_1x_names() {
    // The generated serve functions name the wire instances a 1.x host invokes.
    let kv = include_str!("../../wit/deps/wrpc-keyvalue/store.wit");
    assert!(
        kv.contains("get: func(bucket: string, key: string)"),
        "bucket must be a plain string on the wire"
    );
    let _ = keyvalue::exports::wrpc::keyvalue::store::Error::NoSuchStore;
    let _ = messaging::wasmcloud::messaging::handler::handle_message::<wrpc_transport_nats::Client>;
    let _ = http_server::wrpc::http::incoming_handler::handle::<wrpc_transport_nats::Client>;
    #[allow(unused_imports)]
    use blobstore::exports::wrpc::blobstore0_2_0::blobstore::Handler as _;
}
