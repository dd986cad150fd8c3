//! A component's `wasi:http/outgoing-handler`, routed over the lattice as the wire instance
//! wasmCloud 1.x sends, `wrpc:http/outgoing-handler@0.1.0`, to the provider linked for
//! `wasi:http/outgoing-handler` (an http-client provider) under the invocation's link name.
//!
//! There is no ambient network: a component without such a link gets the interface's
//! `http-request-denied`, and a failed call its reason as `internal-error`; neither traps
//! it. The request's timeouts travel with it as the wire's request options.

use http_body_util::BodyExt as _;
use trellis_interfaces::CallError;
use trellis_interfaces::http::client::send_outgoing;
use trellis_interfaces::http::server::RequestOptions;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::types::{
    HostFutureIncomingResponse, IncomingResponse, OutgoingRequestConfig,
};
use wasmtime_wasi_http::p2::{HttpResult, WasiHttpHooks};

use crate::http::{error_from_wire, error_to_wire};
use crate::router::{LinkRouter, NoLink};

/// Sends a component's outgoing requests through its links.
pub(crate) struct OutgoingHttp {
    router: LinkRouter,
}

impl OutgoingHttp {
    pub(crate) fn new(router: LinkRouter) -> Self {
        Self { router }
    }
}

impl WasiHttpHooks for OutgoingHttp {
    fn send_request(
        &mut self,
        request: hyper::Request<HyperOutgoingBody>,
        config: OutgoingRequestConfig,
    ) -> HttpResult<HostFutureIncomingResponse> {
        let router = self.router.clone();
        let handle =
            wasmtime_wasi::runtime::spawn(async move { Ok(send(router, request, config).await) });
        Ok(HostFutureIncomingResponse::pending(handle))
    }
}

/// One outgoing request, as the component will see its outcome.
async fn send(
    router: LinkRouter,
    request: hyper::Request<HyperOutgoingBody>,
    config: OutgoingRequestConfig,
) -> Result<IncomingResponse, ErrorCode> {
    let request = request.map(|body| body.map_err(error_to_wire).boxed_unsync());
    let options = RequestOptions {
        connect_timeout: Some(config.connect_timeout),
        first_byte_timeout: Some(config.first_byte_timeout),
        between_bytes_timeout: Some(config.between_bytes_timeout),
    };
    match send_outgoing(&router, (), request, options).await {
        Ok(response) => Ok(IncomingResponse {
            resp: response.map(|body| body.map_err(error_from_wire).boxed_unsync()),
            worker: None,
            between_bytes_timeout: config.between_bytes_timeout,
        }),
        Err(CallError::Interface(code)) => Err(error_from_wire(code)),
        Err(CallError::Transport(err)) if err.downcast_ref::<NoLink>().is_some() => {
            tracing::debug!(error = %err, "outgoing request without a link");
            Err(ErrorCode::HttpRequestDenied)
        }
        Err(CallError::Transport(err)) => Err(ErrorCode::InternalError(Some(format!(
            "the outgoing request failed: {err:#}"
        )))),
    }
}
