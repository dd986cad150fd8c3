//! `trellis-interfaces`: one module per wire interface Trellis speaks — [`keyvalue`],
//! [`blobstore`], [`http`], [`messaging`].
//!
//! Each module is the only place that generates its interface's wRPC bindings (serving and
//! calling), checks its parameters before they are decoded (`param_checks`), decodes what
//! needs decoding by hand and converts its errors. On top of those it offers what providers
//! and hosts use:
//! - a **handler trait** a provider implements without touching bindings: keyvalue's,
//!   blobstore's and messaging's carry only plain Rust types (streams as `Stream`s of
//!   `Bytes`), so a host can bind the same trait in process; HTTP's takes the wire request
//!   record (its body already a plain stream) and answers a pre-encodable `Reply`;
//! - **`serve`**: keyvalue, blobstore and messaging over any [`wrpc_transport::Serve`] (the
//!   provider SDK's server, or a bare [`trellis_wrpc_nats::Server`]); HTTP over
//!   [`trellis_wrpc_nats::Server`], whose pacer it uses;
//! - a typed **client**: keyvalue and messaging over any [`wrpc_transport::Invoke`],
//!   blobstore and HTTP over clients of this transport (their streamed results are decoded
//!   by hand);
//! - the wire instance names as constants.
//!
//! The generated bindings live in each module's `bindings` submodule, apart from the hand
//! logic; they are public for code that needs a wire type itself, but a provider or host
//! should not need them.

#![warn(missing_docs)]

pub mod blobstore;
pub mod http;
pub mod keyvalue;
pub mod messaging;

mod error;

pub use error::{CallError, ServeError, SplitCall};

/// What serving an interface yields: for each function, its instance and name and the stream
/// of its invocations, as `trellis_sdk::runtime::ProviderHandle::serve` (or any loop that
/// drives `wrpc_transport` invocations) takes them.
pub type Invocations = Vec<(
    &'static str,
    &'static str,
    std::pin::Pin<
        Box<
            dyn futures::Stream<
                    Item = anyhow::Result<
                        std::pin::Pin<
                            Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>,
                        >,
                    >,
                > + Send,
        >,
    >,
)>;

/// Generates the wRPC bindings of one world of `wit/trellis.wit`, against the leaner
/// `trellis_wrpc_nats::wrpc_transport`.
///
/// `wit-bindgen-wrpc` 0.11 parses with `wit-parser` 0.220, which resolves the WASI 0.2.6 tree
/// only with these `@unstable` features on (nothing here uses them); this is the one place
/// that says so.
macro_rules! wire_bindings {
    ($world:literal) => {
        wit_bindgen_wrpc::generate!({
            wrpc_transport_path: "::trellis_wrpc_nats::wrpc_transport",
            path: "../wit",
            world: $world,
            generate_all,
            features: ["clocks-timezone", "cli-exit-with-code", "informational-outbound-responses", "network-error-code"],
        });
    };
}
pub(crate) use wire_bindings;
