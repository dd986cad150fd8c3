//! HTTP for components: `wasi:http/types` answered locally (outgoing requests denied: a
//! component reaches the world only through its links), and a component's
//! `wasi:http/incoming-handler` export served on the lattice as the wire instance wasmCloud
//! 1.x uses, `wrpc:http/incoming-handler@0.1.0`, so an http-server provider of either
//! generation can call it.
//!
//! Bodies stream both ways with bounded memory: the request body flows from the wRPC stream
//! into the component as it reads, and the response body from the component's output stream
//! into the wRPC stream as the caller takes it.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use http_body::Frame;
use http_body_util::{BodyExt as _, StreamBody};
use tokio::sync::oneshot;
use tracing::warn;
use trellis_sdk::transport::ServeContext;
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::types::{HostFutureIncomingResponse, OutgoingRequestConfig};
use wasmtime_wasi_http::p2::{HttpResult, WasiHttpHooks, WasiHttpView as _};

use crate::state::HostState;

mod wire {
    // wit-bindgen-wrpc 0.11 parses with wit-parser 0.220, which resolves the WASI 0.2.6 tree
    // only with these @unstable features on (nothing here uses them).
    wit_bindgen_wrpc::generate!({
        path: "../wit",
        world: "trellis:lattice/http-component@0.1.0",
        generate_all,
        features: ["clocks-timezone", "cli-exit-with-code", "informational-outbound-responses", "network-error-code"],
    });
}

use wire::exports::wrpc::http::incoming_handler as handler;
use wire::wasi::http0_2_0::types as wt;
use wire::wrpc::http::types as w;

/// The export prefix of the interface this module serves.
pub(crate) const INCOMING_HANDLER: &str = "wasi:http/incoming-handler@0.2";

/// How long the host waits for request trailers once the request body has ended.
const TRAILERS_WAIT: Duration = Duration::from_secs(5);

/// Outgoing HTTP from components is denied: there is no ambient network.
pub(crate) struct DenyOutgoing;

impl WasiHttpHooks for DenyOutgoing {
    fn send_request(
        &mut self,
        _request: hyper::Request<HyperOutgoingBody>,
        _config: OutgoingRequestConfig,
    ) -> HttpResult<HostFutureIncomingResponse> {
        Err(ErrorCode::HttpRequestDenied.into())
    }
}

/// Makes a fresh store for one invocation.
pub(crate) type MakeStore = Arc<dyn Fn() -> Store<HostState> + Send + Sync>;

/// Serves one component's incoming handler.
#[derive(Clone)]
pub(crate) struct IncomingHandler {
    pub(crate) component_id: Arc<str>,
    pub(crate) pre: ProxyPre<HostState>,
    pub(crate) make_store: MakeStore,
}

/// One wire function's accepted invocations, each a future that runs the call.
pub(crate) type Invocations = Pin<
    Box<
        dyn Stream<
                Item = anyhow::Result<
                    Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>,
                >,
            > + Send,
    >,
>;

/// The serving streams of the wire incoming handler, as the generated code returns them.
pub(crate) async fn serve<S>(
    server: &S,
    handler: IncomingHandler,
) -> anyhow::Result<Vec<(&'static str, &'static str, Invocations)>>
where
    S: wrpc_transport::Serve<Context = ServeContext>,
{
    wire::serve(server, handler).await
}

impl handler::Handler<ServeContext> for IncomingHandler {
    async fn handle(
        &self,
        cx: ServeContext,
        request: w::Request,
    ) -> anyhow::Result<Result<w::Response, wt::ErrorCode>> {
        let (scheme, request) = match into_hyper(request) {
            Ok(r) => r,
            Err(code) => return Ok(Err(code)),
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
        let task = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        });
        match rx.await {
            Ok(Ok(response)) => {
                let component = Arc::clone(&self.component_id);
                tokio::spawn(async move {
                    match task.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => warn!(
                            component = &*component,
                            error = %format!("{e:#}"),
                            "component failed after sending its response head"
                        ),
                        Err(e) => warn!(component = &*component, error = %e, "handler task failed"),
                    }
                });
                let mut response = from_hyper(response, &self.component_id);
                // Produce the body only as fast as the caller takes it.
                response.body = Box::pin(cx.pacer.pace(response.body));
                Ok(Ok(response))
            }
            Ok(Err(code)) => Ok(Err(error_to_wire(code))),
            Err(_) => {
                let why = match task.await {
                    Ok(Ok(())) => "the component returned without setting a response".to_string(),
                    Ok(Err(e)) => format!("the component failed: {e:#}"),
                    Err(e) => format!("the handler task failed: {e}"),
                };
                warn!(component = &*self.component_id, "{why}");
                Ok(Err(wt::ErrorCode::InternalError(Some(why))))
            }
        }
    }
}

type RequestBody = StreamBody<Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, ErrorCode>> + Send>>>;

/// The wire request as the hyper request wasmtime-wasi-http takes.
fn into_hyper(request: w::Request) -> Result<(Scheme, hyper::Request<RequestBody>), wt::ErrorCode> {
    let w::Request {
        body,
        trailers,
        method,
        path_with_query,
        scheme,
        authority,
        headers,
    } = request;
    let method = match method {
        wt::Method::Get => http::Method::GET,
        wt::Method::Head => http::Method::HEAD,
        wt::Method::Post => http::Method::POST,
        wt::Method::Put => http::Method::PUT,
        wt::Method::Delete => http::Method::DELETE,
        wt::Method::Connect => http::Method::CONNECT,
        wt::Method::Options => http::Method::OPTIONS,
        wt::Method::Trace => http::Method::TRACE,
        wt::Method::Patch => http::Method::PATCH,
        wt::Method::Other(m) => http::Method::from_bytes(m.as_bytes())
            .map_err(|_| wt::ErrorCode::HttpRequestMethodInvalid)?,
    };
    let (scheme, uri_scheme) = match scheme {
        None | Some(wt::Scheme::Http) => (Scheme::Http, http::uri::Scheme::HTTP),
        Some(wt::Scheme::Https) => (Scheme::Https, http::uri::Scheme::HTTPS),
        Some(wt::Scheme::Other(s)) => {
            let parsed = s
                .parse()
                .map_err(|_| wt::ErrorCode::HttpRequestUriInvalid)?;
            (Scheme::Other(s), parsed)
        }
    };
    let mut uri = http::Uri::builder().path_and_query(path_with_query.as_deref().unwrap_or("/"));
    if let Some(authority) = authority.as_deref() {
        uri = uri.scheme(uri_scheme).authority(authority);
    }
    let uri = uri
        .build()
        .map_err(|_| wt::ErrorCode::HttpRequestUriInvalid)?;
    let headers = to_header_map(headers)
        .map_err(|e| wt::ErrorCode::InternalError(Some(format!("invalid request header: {e}"))))?;

    // The body's frames: its data, then its trailers if the caller sends any.
    let trailers = futures::stream::once(async move {
        match tokio::time::timeout(TRAILERS_WAIT, trailers).await {
            Ok(Some(fields)) => match to_header_map(fields) {
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

/// The component's response as the wire response, its body pulled as the caller reads it.
fn from_hyper(response: hyper::Response<HyperOutgoingBody>, component: &Arc<str>) -> w::Response {
    let (parts, body) = response.into_parts();
    let (trailers_tx, trailers_rx) = oneshot::channel::<w::Fields>();
    let component = Arc::clone(component);
    let data = futures::stream::unfold(Some((body, Some(trailers_tx))), move |state| {
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
                                let _ = tx.send(from_header_map(&map));
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
    w::Response {
        body: Box::pin(data),
        trailers: Box::pin(async move { trailers_rx.await.ok() }),
        status: parts.status.as_u16(),
        headers: from_header_map(&parts.headers),
    }
}

/// Wire fields (name, values) as a header map, order of values kept.
fn to_header_map(fields: w::Fields) -> Result<http::HeaderMap, String> {
    let mut map = http::HeaderMap::new();
    for (name, values) in fields {
        let header = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("bad name {name:?}"))?;
        for value in values {
            let value = http::HeaderValue::from_maybe_shared(value)
                .map_err(|_| format!("bad value of {name:?}"))?;
            map.append(header.clone(), value);
        }
    }
    Ok(map)
}

/// A header map as wire fields: one entry per name, its values in order.
fn from_header_map(map: &http::HeaderMap) -> w::Fields {
    map.keys()
        .map(|name| {
            let values = map
                .get_all(name)
                .iter()
                .map(|v| Bytes::copy_from_slice(v.as_bytes()))
                .collect();
            (name.as_str().to_string(), values)
        })
        .collect()
}

/// wasmtime's `error-code` as the wire's (the same WIT variant, generated twice).
fn error_to_wire(code: ErrorCode) -> wt::ErrorCode {
    let field =
        |p: wasmtime_wasi_http::p2::bindings::http::types::FieldSizePayload| wt::FieldSizePayload {
            field_name: p.field_name,
            field_size: p.field_size,
        };
    macro_rules! same {
        ($code:expr; units: $($u:ident),*; values: $($v:ident),*; fields: $($f:ident),*; optional_fields: $($o:ident),*; $($rest:tt)*) => {
            match $code {
                $(ErrorCode::$u => wt::ErrorCode::$u,)*
                $(ErrorCode::$v(x) => wt::ErrorCode::$v(x),)*
                $(ErrorCode::$f(p) => wt::ErrorCode::$f(field(p)),)*
                $(ErrorCode::$o(p) => wt::ErrorCode::$o(p.map(field)),)*
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
        ErrorCode::DnsError(p) => wt::ErrorCode::DnsError(wt::DnsErrorPayload {
            rcode: p.rcode,
            info_code: p.info_code,
        }),
        ErrorCode::TlsAlertReceived(p) => wt::ErrorCode::TlsAlertReceived(wt::TlsAlertReceivedPayload {
            alert_id: p.alert_id,
            alert_message: p.alert_message,
        }),
    )
}
