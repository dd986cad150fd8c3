//! A component's `wasi:http/incoming-handler` export served on the lattice as the wire
//! instance wasmCloud 1.x uses, `wrpc:http/incoming-handler@0.1.0` (the codec is
//! `trellis_interfaces::http::server`), so an http-server provider of either generation can
//! call it. (`wasi:http/types` is answered locally; outgoing requests go through the
//! component's links, see `outgoing.rs`.)
//!
//! Bodies stream both ways with bounded memory: the request body flows from the wRPC stream
//! into the component as it reads, and the response body from the component's output stream
//! into the wRPC stream as the caller takes it.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use tokio::sync::oneshot;
use tracing::warn;
use wasmtime::Store;
use wasmtime_wasi_http::p2::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{self as wasi_types, ErrorCode, Scheme};

use crate::state::HostState;

use trellis_interfaces::http::server::Handler;
use trellis_interfaces::http::{self as wire, Body};

/// The export prefix of the interface this module serves.
pub(crate) const INCOMING_HANDLER: &str = "wasi:http/incoming-handler@0.2";

/// Makes a fresh store for one invocation.
pub(crate) type MakeStore = Arc<dyn Fn() -> Store<HostState> + Send + Sync>;

/// Serves one component's incoming handler.
#[derive(Clone)]
pub(crate) struct IncomingHandler {
    pub(crate) component_id: Arc<str>,
    pub(crate) pre: ProxyPre<HostState>,
    pub(crate) make_store: MakeStore,
}

/// How long the host waits, once a component has set its response, for the component to
/// finish: a response whose body is complete by then goes out in one message.
const INLINE_WAIT: Duration = Duration::from_millis(2);

impl<C: Send + 'static> Handler<C> for IncomingHandler {
    async fn handle(
        &self,
        _: C,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, wire::ErrorCode> {
        let internal = |what: &str, e: wasmtime::Error| {
            wire::ErrorCode::InternalError(Some(format!("{what}: {e:#}")))
        };
        let scheme = match request.extensions().get::<http::uri::Scheme>() {
            None => Scheme::Http,
            Some(s) if *s == http::uri::Scheme::HTTP => Scheme::Http,
            Some(s) if *s == http::uri::Scheme::HTTPS => Scheme::Https,
            Some(s) => Scheme::Other(s.as_str().to_string()),
        };
        let request = request.map(|body| body.map_err(error_from_wire));
        let mut store = (self.make_store)();
        let (tx, rx) = oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(scheme, request)
            .map_err(|e| internal("failed to take the request", e))?;
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(tx)
            .map_err(|e| internal("failed to make the response", e))?;
        let pre = self.pre.clone();
        // The component runs on its own task: after it hands over the response head it keeps
        // writing the body while the caller reads it.
        let mut task = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        });
        match rx.await {
            Ok(Ok(response)) => {
                // Most components finish right after setting the response: waiting for that
                // lets the whole body go in one message.
                match tokio::time::timeout(INLINE_WAIT, &mut task).await {
                    Ok(outcome) => component_done(&self.component_id, outcome),
                    Err(_) => {
                        let component = Arc::clone(&self.component_id);
                        tokio::spawn(async move { component_done(&component, task.await) });
                    }
                }
                let component = Arc::clone(&self.component_id);
                Ok(response.map(move |body| {
                    body.map_err(move |code| {
                        warn!(component = &*component, error = ?code, "response body failed");
                        error_to_wire(code)
                    })
                    .boxed_unsync()
                }))
            }
            Ok(Err(code)) => Err(error_to_wire(code)),
            Err(_) => {
                let why = match task.await {
                    Ok(Ok(())) => "the component returned without setting a response".to_string(),
                    Ok(Err(e)) => format!("the component failed: {e:#}"),
                    Err(e) => format!("the handler task failed: {e}"),
                };
                warn!(component = &*self.component_id, "{why}");
                Err(wire::ErrorCode::InternalError(Some(why)))
            }
        }
    }
}

/// Logs how a component's handler ended after it had set its response.
fn component_done(component: &str, outcome: Result<wasmtime::Result<()>, tokio::task::JoinError>) {
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(
            component,
            error = %format!("{e:#}"),
            "component failed after sending its response head"
        ),
        Err(e) => warn!(component, error = %e, "handler task failed"),
    }
}

/// Maps between two generations of the same `error-code` variant: `$from` to `$to`, the
/// payload records converted field by field.
macro_rules! convert_error_code {
    ($code:expr, $from:ident => $to:ident) => {{
        use $from as from;
        use $to as to;
        let field = |p: from::FieldSizePayload| to::FieldSizePayload {
            field_name: p.field_name,
            field_size: p.field_size,
        };
        convert_error_code!(@cases $code; from; to; field;
            units: DnsTimeout, DestinationNotFound, DestinationUnavailable,
                DestinationIpProhibited, DestinationIpUnroutable, ConnectionRefused,
                ConnectionTerminated, ConnectionTimeout, ConnectionReadTimeout,
                ConnectionWriteTimeout, ConnectionLimitReached, TlsProtocolError,
                TlsCertificateError, HttpRequestDenied, HttpRequestLengthRequired,
                HttpRequestMethodInvalid, HttpRequestUriInvalid, HttpRequestUriTooLong,
                HttpResponseIncomplete, HttpResponseTimeout, HttpUpgradeFailed,
                HttpProtocolError, LoopDetected, ConfigurationError;
            values: HttpRequestBodySize, HttpRequestHeaderSectionSize,
                HttpRequestTrailerSectionSize, HttpResponseHeaderSectionSize,
                HttpResponseBodySize, HttpResponseTrailerSectionSize,
                HttpResponseTransferCoding, HttpResponseContentCoding, InternalError;
            fields: HttpRequestTrailerSize, HttpResponseHeaderSize, HttpResponseTrailerSize;
            optional_fields: HttpRequestHeaderSize)
    }};
    (@cases $code:expr; $from:ident; $to:ident; $field:ident;
        units: $($u:ident),*; values: $($v:ident),*; fields: $($f:ident),*;
        optional_fields: $($o:ident),*) => {
        match $code {
            $($from::ErrorCode::$u => $to::ErrorCode::$u,)*
            $($from::ErrorCode::$v(x) => $to::ErrorCode::$v(x),)*
            $($from::ErrorCode::$f(p) => $to::ErrorCode::$f($field(p)),)*
            $($from::ErrorCode::$o(p) => $to::ErrorCode::$o(p.map($field)),)*
            $from::ErrorCode::DnsError(p) => $to::ErrorCode::DnsError($to::DnsErrorPayload {
                rcode: p.rcode,
                info_code: p.info_code,
            }),
            $from::ErrorCode::TlsAlertReceived(p) => {
                $to::ErrorCode::TlsAlertReceived($to::TlsAlertReceivedPayload {
                    alert_id: p.alert_id,
                    alert_message: p.alert_message,
                })
            }
        }
    };
}

/// wasmtime's `error-code` as the wire's (the same WIT variant, generated twice).
pub(crate) fn error_to_wire(code: ErrorCode) -> wire::ErrorCode {
    convert_error_code!(code, wasi_types => wire)
}

/// The wire's `error-code` as wasmtime's.
pub(crate) fn error_from_wire(code: wire::ErrorCode) -> ErrorCode {
    convert_error_code!(code, wire => wasi_types)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind of payload survives the trip wire → wasmtime → wire.
    #[test]
    fn error_codes_round_trip() {
        let codes = [
            wire::ErrorCode::ConnectionRefused,
            wire::ErrorCode::InternalError(Some("boom".into())),
            wire::ErrorCode::HttpResponseBodySize(Some(7)),
            wire::ErrorCode::HttpResponseHeaderSize(wire::FieldSizePayload {
                field_name: Some("x-a".into()),
                field_size: Some(3),
            }),
            wire::ErrorCode::HttpRequestHeaderSize(None),
            wire::ErrorCode::DnsError(wire::DnsErrorPayload {
                rcode: Some("NXDOMAIN".into()),
                info_code: Some(3),
            }),
            wire::ErrorCode::TlsAlertReceived(wire::TlsAlertReceivedPayload {
                alert_id: Some(40),
                alert_message: None,
            }),
        ];
        for code in codes {
            let back = error_to_wire(error_from_wire(code.clone()));
            assert_eq!(format!("{back:?}"), format!("{code:?}"));
        }
    }
}
