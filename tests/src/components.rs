//! wRPC bindings of the test components' own interfaces (`tests/components/wit`), generated
//! once for every suite: calling a component's `echo` (or `compat`) export, serving or calling
//! `trellis-test:greeter/greet` (what the echo component imports), and the SDK example's
//! counter.
//!
//! Serve one interface with its `serve_interface` (e.g.
//! `exports::trellis_test::greeter::greet::serve_interface`): the world holds both directions
//! of several interfaces.

#![allow(missing_docs, clippy::all)]

wit_bindgen_wrpc::generate!({
    wrpc_transport_path: "::trellis_wrpc_nats::wrpc_transport",
    path: "components/wit",
    inline: "
        package trellis-test:suites@0.1.0;
        world suites {
            import trellis-test:components/echo@0.1.0;
            export trellis-test:components/echo@0.1.0;
            import trellis-test:components/compat@0.1.0;
            import trellis-test:components/picker@0.1.0;
            import trellis-test:greeter/greet@0.1.0;
            export trellis-test:greeter/greet@0.1.0;
        }
    ",
    generate_all,
    features: ["clocks-timezone", "cli-exit-with-code", "informational-outbound-responses", "network-error-code"],
});

/// The SDK example provider's interface (`sdk/examples/counter_provider.rs`).
pub mod counter {
    wit_bindgen_wrpc::generate!({
        wrpc_transport_path: "::trellis_wrpc_nats::wrpc_transport",
        inline: "
            package trellis-example:counter@0.1.0;
            interface counter { increment: func(by: u64) -> u64; }
            world caller { import counter; }
        ",
    });
}
