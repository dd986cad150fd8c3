//! A component's `wasi:http/incoming-handler` export served on the lattice as the wire
//! instance wasmCloud 1.x uses, `wrpc:http/incoming-handler@0.1.0` (the codec is
//! `trellis_interfaces::http::server`), so an http-server provider of either generation can
//! call it. (`wasi:http/types` is answered locally; outgoing requests are denied by the
//! store's hooks, see `state.rs`: a component reaches the world only through its links.)
//!
//! Bodies stream both ways with bounded memory: the request body flows from the wRPC stream
//! into the component as it reads, and the response body from the component's output stream
//! into the wRPC stream as the caller takes it.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{FutureExt as _, Stream, StreamExt as _};
use http_body::Frame;
use http_body_util::{BodyExt as _, StreamBody};
use tokio::sync::oneshot;
use tracing::warn;
use trellis_wrpc_nats::ServeContext;
use wasmtime::Store;
use wasmtime_wasi_http::p2::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::state::HostState;

use trellis_interfaces::http::server::{Handler, Reply};
use trellis_interfaces::http::{self as wire, Fields, Request, Response};

/// The export prefix of the interface this module serves.
pub(crate) const INCOMING_HANDLER: &str = "wasi:http/incoming-handler@0.2";

/// How long the host waits for request trailers once the request body has ended.
const TRAILERS_WAIT: Duration = Duration::from_secs(5);

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
/// finish: a response complete by then goes out in one message (see [`Reply`]).
const INLINE_WAIT: Duration = Duration::from_millis(2);
/// The largest body sent inline; longer ones stream.
const INLINE_MAX: usize = 256 << 10;

impl Handler for IncomingHandler {
    async fn handle(&self, cx: ServeContext, request: Request) -> anyhow::Result<Reply> {
        let (scheme, request) = match into_hyper(request) {
            Ok(r) => r,
            Err(code) => return Ok(Reply::Streamed(Err(code))),
        };
        let mut store = (self.make_store)();
        let (tx, rx) = oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(scheme, request)?;
        let out = store.data_mut().http().new_response_outparam(tx)?;
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
                let (parts, mut body) = response.into_parts();
                // Most components finish right after setting the response: then the whole
                // body is buffered already and the response can go inline.
                let finished = match tokio::time::timeout(INLINE_WAIT, &mut task).await {
                    Ok(outcome) => {
                        component_done(&self.component_id, outcome);
                        true
                    }
                    Err(_) => {
                        let component = Arc::clone(&self.component_id);
                        tokio::spawn(async move { component_done(&component, task.await) });
                        false
                    }
                };
                let mut taken = Taken::default();
                if finished {
                    taken = take_ready(&mut body);
                    if taken.complete && !taken.data.is_empty() {
                        let headers = wire::from_header_map(&parts.headers);
                        let trailers = taken.trailers.take();
                        let status = parts.status.as_u16();
                        return Ok(Reply::inline(status, headers, &taken.data, trailers)?);
                    }
                }
                let mut response = from_hyper(parts, taken, body, &self.component_id);
                // Produce the body only as fast as the caller takes it.
                response.body = Box::pin(cx.pacer.pace(response.body));
                Ok(Reply::Streamed(Ok(response)))
            }
            Ok(Err(code)) => Ok(Reply::Streamed(Err(error_to_wire(code)))),
            Err(_) => {
                let why = match task.await {
                    Ok(Ok(())) => "the component returned without setting a response".to_string(),
                    Ok(Err(e)) => format!("the component failed: {e:#}"),
                    Err(e) => format!("the handler task failed: {e}"),
                };
                warn!(component = &*self.component_id, "{why}");
                let code = wire::ErrorCode::InternalError(Some(why));
                Ok(Reply::Streamed(Err(code)))
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

/// What could be read from a response body without waiting.
#[derive(Default)]
struct Taken {
    data: BytesMut,
    trailers: Option<Fields>,
    /// The body ended: `data` and `trailers` are all of it.
    complete: bool,
    /// The body failed after `data`.
    failed: bool,
}

/// Reads the frames a finished component left in its body, up to about [`INLINE_MAX`] bytes.
fn take_ready(body: &mut HyperOutgoingBody) -> Taken {
    let mut taken = Taken::default();
    while taken.data.len() <= INLINE_MAX {
        match body.frame().now_or_never() {
            Some(None) => {
                taken.complete = true;
                break;
            }
            Some(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => taken.data.extend_from_slice(&data),
                Err(frame) => {
                    if let Ok(map) = frame.into_trailers() {
                        taken.trailers = Some(wire::from_header_map(&map));
                    }
                }
            },
            Some(Some(Err(_))) => {
                taken.failed = true;
                break;
            }
            // Not complete after all: the rest streams.
            None => break,
        }
    }
    taken
}

type RequestBody = StreamBody<Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, ErrorCode>> + Send>>>;

/// The wire request as the hyper request wasmtime-wasi-http takes.
fn into_hyper(request: Request) -> Result<(Scheme, hyper::Request<RequestBody>), wire::ErrorCode> {
    let Request {
        body,
        trailers,
        method,
        path_with_query,
        scheme,
        authority,
        headers,
    } = request;
    let method = wire::method_from_wire(method)?;
    let (scheme, uri_scheme) = match scheme {
        None | Some(wire::Scheme::Http) => (Scheme::Http, http::uri::Scheme::HTTP),
        Some(wire::Scheme::Https) => (Scheme::Https, http::uri::Scheme::HTTPS),
        Some(wire::Scheme::Other(s)) => {
            let parsed = s
                .parse()
                .map_err(|_| wire::ErrorCode::HttpRequestUriInvalid)?;
            (Scheme::Other(s), parsed)
        }
    };
    let mut uri = http::Uri::builder().path_and_query(path_with_query.as_deref().unwrap_or("/"));
    if let Some(authority) = authority.as_deref() {
        uri = uri.scheme(uri_scheme).authority(authority);
    }
    let uri = uri
        .build()
        .map_err(|_| wire::ErrorCode::HttpRequestUriInvalid)?;
    let headers = wire::to_header_map(headers).map_err(|e| {
        wire::ErrorCode::InternalError(Some(format!("invalid request header: {e}")))
    })?;

    // The body's frames: its data, then its trailers if the caller sends any.
    let trailers = futures::stream::once(async move {
        match tokio::time::timeout(TRAILERS_WAIT, trailers).await {
            Ok(Some(fields)) => match wire::to_header_map(fields) {
                Ok(map) => Some(Ok(Frame::trailers(map))),
                Err(e) => Some(Err(ErrorCode::InternalError(Some(format!(
                    "invalid request trailer: {e}"
                ))))),
            },
            Ok(None) | Err(_) => None,
        }
    })
    .filter_map(futures::future::ready);
    let frames = body
        .filter(|b| futures::future::ready(!b.is_empty()))
        .map(|b| Ok(Frame::data(b)))
        .chain(trailers);
    let mut request = hyper::Request::new(StreamBody::new(
        Box::pin(frames) as Pin<Box<dyn Stream<Item = _> + Send>>
    ));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok((scheme, request))
}

/// The component's response as the wire response, its body pulled as the caller reads it
/// (after what [`take_ready`] took already).
fn from_hyper(
    parts: http::response::Parts,
    taken: Taken,
    body: HyperOutgoingBody,
    component: &Arc<str>,
) -> Response {
    let (trailers_tx, trailers_rx) = oneshot::channel::<Fields>();
    // Trailers taken already are known; a failed body ends after what was taken.
    let trailers_tx = match taken.trailers {
        Some(fields) => {
            let _ = trailers_tx.send(fields);
            None
        }
        None => Some(trailers_tx),
    };
    if taken.failed {
        warn!(
            component = &**component,
            "response body failed; ending it early"
        );
    }
    let rest = (!taken.complete && !taken.failed).then_some((body, trailers_tx));
    let component = Arc::clone(component);
    let rest = futures::stream::unfold(rest, move |state| {
        let component = Arc::clone(&component);
        async move {
            let (mut body, mut trailers_tx) = state?;
            loop {
                match body.frame().await {
                    None => return None,
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) if data.is_empty() => continue,
                        Ok(data) => return Some((data, Some((body, trailers_tx)))),
                        Err(frame) => {
                            if let (Ok(map), Some(tx)) = (frame.into_trailers(), trailers_tx.take())
                            {
                                let _ = tx.send(wire::from_header_map(&map));
                            }
                        }
                    },
                    Some(Err(code)) => {
                        // The wire body has no error channel: the caller sees it end early
                        // (and no trailers).
                        warn!(
                            component = &*component,
                            error = ?code,
                            "response body failed; ending it early"
                        );
                        return None;
                    }
                }
            }
        }
    });
    let first = (!taken.data.is_empty()).then(|| taken.data.freeze());
    Response {
        body: Box::pin(futures::stream::iter(first).chain(rest)),
        trailers: Box::pin(async move { trailers_rx.await.ok() }),
        status: parts.status.as_u16(),
        headers: wire::from_header_map(&parts.headers),
    }
}

/// wasmtime's `error-code` as the wire's (the same WIT variant, generated twice).
fn error_to_wire(code: ErrorCode) -> wire::ErrorCode {
    let field = |p: wasmtime_wasi_http::p2::bindings::http::types::FieldSizePayload| {
        wire::FieldSizePayload {
            field_name: p.field_name,
            field_size: p.field_size,
        }
    };
    macro_rules! same {
        ($code:expr; units: $($u:ident),*; values: $($v:ident),*; fields: $($f:ident),*; optional_fields: $($o:ident),*; $($rest:tt)*) => {
            match $code {
                $(ErrorCode::$u => wire::ErrorCode::$u,)*
                $(ErrorCode::$v(x) => wire::ErrorCode::$v(x),)*
                $(ErrorCode::$f(p) => wire::ErrorCode::$f(field(p)),)*
                $(ErrorCode::$o(p) => wire::ErrorCode::$o(p.map(field)),)*
                $($rest)*
            }
        };
    }
    same!(code;
        units: DnsTimeout, DestinationNotFound, DestinationUnavailable, DestinationIpProhibited,
            DestinationIpUnroutable, ConnectionRefused, ConnectionTerminated, ConnectionTimeout,
            ConnectionReadTimeout, ConnectionWriteTimeout, ConnectionLimitReached,
            TlsProtocolError, TlsCertificateError, HttpRequestDenied, HttpRequestLengthRequired,
            HttpRequestMethodInvalid, HttpRequestUriInvalid, HttpRequestUriTooLong,
            HttpResponseIncomplete, HttpResponseTimeout, HttpUpgradeFailed, HttpProtocolError,
            LoopDetected, ConfigurationError;
        values: HttpRequestBodySize, HttpRequestHeaderSectionSize, HttpRequestTrailerSectionSize,
            HttpResponseHeaderSectionSize, HttpResponseBodySize, HttpResponseTrailerSectionSize,
            HttpResponseTransferCoding, HttpResponseContentCoding, InternalError;
        fields: HttpRequestTrailerSize, HttpResponseHeaderSize, HttpResponseTrailerSize;
        optional_fields: HttpRequestHeaderSize;
        ErrorCode::DnsError(p) => wire::ErrorCode::DnsError(wire::DnsErrorPayload {
            rcode: p.rcode,
            info_code: p.info_code,
        }),
        ErrorCode::TlsAlertReceived(p) => wire::ErrorCode::TlsAlertReceived(wire::TlsAlertReceivedPayload {
            alert_id: p.alert_id,
            alert_message: p.alert_message,
        }),
    )
}
