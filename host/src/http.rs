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

use anyhow::Context as _;
use bytes::{BufMut as _, Bytes, BytesMut};
use futures::{FutureExt as _, Stream, StreamExt as _, TryStreamExt as _};
use http_body::Frame;
use http_body_util::{BodyExt as _, StreamBody};
use tokio::sync::oneshot;
use tokio_util::codec::Decoder;
use tracing::warn;
use trellis_wrpc_nats::wire_shape::{ParamChecks, Shape, Whole, WireShape as _};
use trellis_wrpc_nats::wrpc_transport::{ByteStreamDecoder, Decode, FieldSlot, fields_deferred};
use trellis_wrpc_nats::{Incoming, Outgoing, ServeContext, Server};
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::types::{HostFutureIncomingResponse, OutgoingRequestConfig};
use wasmtime_wasi_http::p2::{HttpResult, WasiHttpHooks, WasiHttpView as _};
use wrpc_transport::{Deferred, DeferredFn, Encode, ServeExt as _};

use crate::state::HostState;

use trellis_interfaces::http::bindings as wire;

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

/// The wire instance and function the incoming handler is served as.
const WIRE_INSTANCE: &str = "wrpc:http/incoming-handler@0.1.0";
const WIRE_FUNC: &str = "handle";

/// How long the host waits, once a component has set its response, for the component to
/// finish: a response complete by then goes out in one message (see [`Reply`]).
const INLINE_WAIT: Duration = Duration::from_millis(2);
/// The largest body sent inline; longer ones stream.
const INLINE_MAX: usize = 256 << 10;

/// Serves the component's handler as the wire's `handle`, one future per accepted call.
///
/// This is what `wit-bindgen-wrpc` would generate, except that the results are a [`Reply`],
/// so a response that is already complete travels whole in the result message. The server
/// hands a call on only once its request head is all here (see [`Server`]), so decoding the
/// calls one after another holds none of them up.
pub(crate) async fn serve(
    server: &Server,
    handler: IncomingHandler,
) -> anyhow::Result<Vec<(&'static str, &'static str, Invocations)>> {
    // The request's async parts, as the bindings declare them: the body stream (field 0) and
    // the trailers future (field 1) of parameter 0.
    let paths: [Box<[Option<usize>]>; 2] =
        [Box::from([Some(0), Some(0)]), Box::from([Some(0), Some(1)])];
    // The request's headers are a list of tuples, for which wrpc-transport's decoder reserves
    // room as the length prefix says before reading any: a forged prefix would abort the
    // host. The parameters are checked against their shape first.
    let checks = ParamChecks::new().shape(WIRE_INSTANCE, WIRE_FUNC, params_shape());
    let calls = server
        .clone()
        .with_param_checks(checks)
        .serve_values::<(WireRequest,), (Reply,)>(WIRE_INSTANCE, WIRE_FUNC, paths)
        .await
        .with_context(|| format!("failed to serve `{WIRE_INSTANCE}.{WIRE_FUNC}`"))?;
    let invocations = calls.map_ok(move |(cx, (WireRequest(request),), body_io, send)| {
        Box::pin(serve_call(handler.clone(), cx, request, body_io, send))
            as Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>
    });
    Ok(vec![(WIRE_INSTANCE, WIRE_FUNC, Box::pin(invocations))])
}

/// The decoder the generated code uses for `T` on our transport.
type Dec<T> = <T as Decode<Incoming>>::Decoder;

/// The request as the bindings type it, decoded as they would except for its async parts:
/// the body is read in bounded pieces ([`ByteStreamDecoder`]), and the fields of pending
/// trailers only once whole ([`Whole`]: they come on a nested stream the parameter check
/// does not see, and the generated decoder reserves room for as many as their count says).
struct WireRequest(w::Request);

impl Decode<Incoming> for WireRequest {
    type Decoder = WireRequestDecoder;
    type ListDecoder = wrpc_transport::ListDecoder<WireRequestDecoder, Incoming>;
}

type CheckedTrailers = Pin<Box<dyn std::future::Future<Output = Option<Whole<w::Fields>>> + Send>>;

/// Decodes a [`WireRequest`]: the record's fields in order, each kept once complete, since
/// the bytes may come in several reads.
#[derive(Default)]
struct WireRequestDecoder {
    body: Slot<ByteStreamDecoder<Incoming>>,
    trailers: Slot<Dec<CheckedTrailers>>,
    method: Slot<Dec<wt::Method>>,
    path: Slot<Dec<Option<String>>>,
    scheme: Slot<Dec<Option<wt::Scheme>>>,
    authority: Slot<Dec<Option<String>>>,
    headers: Slot<Dec<w::Fields>>,
}

/// A request field being decoded.
type Slot<D> = FieldSlot<D, Incoming>;

impl Decoder for WireRequestDecoder {
    type Item = WireRequest;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> std::io::Result<Option<WireRequest>> {
        let complete = self.body.decode(src)?
            && self.trailers.decode(src)?
            && self.method.decode(src)?
            && self.path.decode(src)?
            && self.scheme.decode(src)?
            && self.authority.decode(src)?
            && self.headers.decode(src)?;
        if !complete {
            return Ok(None);
        }
        let fields = (
            self.body.take(),
            self.trailers.take(),
            self.method.take(),
            self.path.take(),
            self.scheme.take(),
            self.authority.take(),
            self.headers.take(),
        );
        let (
            Some(body),
            Some(trailers),
            Some(method),
            Some(path_with_query),
            Some(scheme),
            Some(authority),
            Some(headers),
        ) = fields
        else {
            return Err(std::io::Error::other(
                "a decoded request field went missing",
            ));
        };
        Ok(Some(WireRequest(w::Request {
            body,
            trailers: Box::pin(trailers.map(|t| t.map(|Whole(fields)| fields))),
            method,
            path_with_query,
            scheme,
            authority,
            headers,
        })))
    }
}

impl Deferred<wrpc_transport::Incoming<Incoming>> for WireRequestDecoder {
    fn take_deferred(&mut self) -> Option<DeferredFn<wrpc_transport::Incoming<Incoming>>> {
        fields_deferred([
            (0, self.body.take_deferred()),
            (1, self.trailers.take_deferred()),
        ])
    }
}

/// The wire shape of `handle`'s parameters: one `wrpc:http/types.request`.
fn params_shape() -> Shape {
    let fields = Vec::<(String, Vec<Bytes>)>::shape();
    let text = String::shape();
    // `method`: nine cases without payload, then `other(string)`; `scheme`: two, then
    // `other(string)`.
    let mut method = vec![None; 9];
    method.push(Some(text.clone()));
    let scheme = Shape::Variant(vec![None, None, Some(text)]);
    Shape::Seq(vec![Shape::Seq(vec![
        Shape::Bytes,                                                     // body: stream<u8>
        Shape::Future(Box::new(Shape::Option(Box::new(fields.clone())))), // trailers
        Shape::Variant(method),
        Option::<String>::shape(), // path-with-query
        Shape::Option(Box::new(scheme)),
        Option::<String>::shape(), // authority
        fields,                    // headers
    ])])
}

/// Serves one accepted call: runs the component on its request, sends the reply, and
/// finishes receiving the request body.
async fn serve_call<Io, SendReply, Sent>(
    handler: IncomingHandler,
    cx: ServeContext,
    request: w::Request,
    body_io: Option<Io>,
    send: SendReply,
) -> anyhow::Result<()>
where
    Io: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
    SendReply: FnOnce((Reply,)) -> Sent,
    Sent: std::future::Future<Output = anyhow::Result<()>>,
{
    // The request body arrives while the component runs.
    let body_io = body_io.map(tokio::spawn);
    let sent = match handler.handle(cx, request).await {
        Ok(reply) => send((reply,)).await.context("failed to send the response"),
        Err(err) => Err(err.context("failed to serve the request")),
    };
    match (sent, body_io) {
        (Ok(()), Some(io)) => io
            .await
            .context("the request body task failed")?
            .context("failed to receive the request body"),
        (Ok(()), None) => Ok(()),
        (Err(err), io) => {
            if let Some(io) = io {
                io.abort();
            }
            Err(err)
        }
    }
}

/// The encoder the generated code uses for `T` on our transport.
type Enc<T> = <T as Encode<Outgoing>>::Encoder;

/// A handler's result as it goes on the wire.
///
/// The wire response's body is a stream and its trailers a future. The generated encoder
/// always sends them as *pending*: each then costs messages of its own after the result (a
/// chunk, an end marker, a close). wRPC also encodes them *ready*, inline in the result: a
/// non-empty byte stream as its bytes, a future as its value. Every wRPC decoder reads both
/// forms, so a response that is complete when it is sent (most are) goes as one message.
pub(crate) enum Reply {
    /// The encoded result, body and trailers inline.
    Inline(Bytes),
    /// The result, its body streamed as the caller reads it.
    Streamed(Result<w::Response, wt::ErrorCode>),
}

impl Reply {
    /// `Ok(response)` encoded with its complete, non-empty body and its trailers inline.
    fn inline(
        status: u16,
        headers: w::Fields,
        body: &[u8],
        trailers: Option<w::Fields>,
    ) -> std::io::Result<Self> {
        use tokio_util::codec::Encoder as _;
        let mut dst = BytesMut::with_capacity(body.len() + 256);
        dst.put_u8(0); // result::ok
        let len = u32::try_from(body.len()).map_err(std::io::Error::other)?;
        Enc::<u32>::default().encode(len, &mut dst)?; // a ready stream<u8>: its bytes
        dst.put_slice(body);
        dst.put_u8(1); // a ready future<option<fields>>: its value
        Enc::<Option<w::Fields>>::default().encode(trailers, &mut dst)?;
        Enc::<u16>::default().encode(status, &mut dst)?;
        Enc::<w::Fields>::default().encode(headers, &mut dst)?;
        Ok(Self::Inline(dst.freeze()))
    }
}

/// Encodes a [`Reply`]: inline bytes as they are, the rest as the generated code does.
#[derive(Default)]
pub(crate) struct ReplyEncoder(Enc<Result<w::Response, wt::ErrorCode>>);

impl tokio_util::codec::Encoder<Reply> for ReplyEncoder {
    type Error = std::io::Error;

    fn encode(&mut self, item: Reply, dst: &mut BytesMut) -> std::io::Result<()> {
        match item {
            Reply::Inline(bytes) => {
                dst.extend_from_slice(&bytes);
                Ok(())
            }
            Reply::Streamed(result) => self.0.encode(result, dst),
        }
    }
}

impl Deferred<Outgoing> for ReplyEncoder {
    fn take_deferred(&mut self) -> Option<DeferredFn<Outgoing>> {
        self.0.take_deferred()
    }
}

impl Encode<Outgoing> for Reply {
    type Encoder = ReplyEncoder;
}

impl IncomingHandler {
    async fn handle(&self, cx: ServeContext, request: w::Request) -> anyhow::Result<Reply> {
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
                        let headers = from_header_map(&parts.headers);
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
                let code = wt::ErrorCode::InternalError(Some(why));
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
    trailers: Option<w::Fields>,
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
                        taken.trailers = Some(from_header_map(&map));
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

/// The component's response as the wire response, its body pulled as the caller reads it
/// (after what [`take_ready`] took already).
fn from_hyper(
    parts: http::response::Parts,
    taken: Taken,
    body: HyperOutgoingBody,
    component: &Arc<str>,
) -> w::Response {
    let (trailers_tx, trailers_rx) = oneshot::channel::<w::Fields>();
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
    let first = (!taken.data.is_empty()).then(|| taken.data.freeze());
    w::Response {
        body: Box::pin(futures::stream::iter(first).chain(rest)),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> w::Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), vec![Bytes::from(v.to_string())]))
            .collect()
    }

    /// An inline reply decodes, with the generated (and 1.x) decoder, into a response whose
    /// body and trailers are ready and nothing follows on nested streams.
    #[tokio::test]
    async fn inline_reply_decodes_ready_with_the_wire_decoder() {
        let headers = fields(&[("content-type", "text/plain"), ("x-a", "1")]);
        let trailers = fields(&[("x-checksum", "abc")]);
        let body = vec![7u8; 70_000];
        for trailers in [None, Some(trailers)] {
            let Reply::Inline(bytes) =
                Reply::inline(201, headers.clone(), &body, trailers.clone()).expect("encodes")
            else {
                panic!("not inline");
            };
            let mut src = BytesMut::from(&bytes[..]);
            let mut dec = Dec::<(Result<w::Response, wt::ErrorCode>,)>::default();
            let (result,) = dec.decode(&mut src).expect("decodes").expect("complete");
            assert!(src.is_empty(), "{} bytes left over", src.len());
            assert!(dec.take_deferred().is_none(), "nothing may be pending");
            let response = result.expect("ok");
            assert_eq!(response.status, 201);
            assert_eq!(response.headers, headers);
            let got: Vec<Bytes> = response.body.collect().await;
            assert_eq!(got.concat(), body);
            assert_eq!(response.trailers.await, trailers);
        }
    }

    /// Every request the generated encoder writes fits the checked shape exactly, whatever
    /// its method and scheme; a forged header count does not.
    #[test]
    fn encoded_requests_fit_the_checked_shape() {
        use tokio_util::codec::Encoder as _;
        use trellis_wrpc_nats::wire_shape::{ShapeError, check};
        let methods = [
            wt::Method::Get,
            wt::Method::Patch,
            wt::Method::Other("PROPFIND".into()),
        ];
        let schemes = [
            None,
            Some(wt::Scheme::Https),
            Some(wt::Scheme::Other("x".into())),
        ];
        for (method, scheme) in methods.into_iter().zip(schemes) {
            let request = w::Request {
                body: Box::pin(futures::stream::iter([Bytes::from("body")])),
                trailers: Box::pin(async { None }),
                method,
                path_with_query: Some("/a?b".into()),
                scheme,
                authority: None,
                headers: fields(&[("x-a", "1"), ("x-b", "2")]),
            };
            let mut dst = BytesMut::new();
            Enc::<(w::Request,)>::default()
                .encode((request,), &mut dst)
                .expect("encodes");
            assert_eq!(check(&params_shape(), &dst), Ok(dst.len()));
            // The same request claiming 2^32 - 1 headers.
            let at = dst.len() - encoded_len(&fields(&[("x-a", "1"), ("x-b", "2")]));
            dst.truncate(at);
            dst.extend_from_slice(b"\xff\xff\xff\xff\x0f");
            assert!(matches!(
                check(&params_shape(), &dst),
                Err(ShapeError::TooLong {
                    declared: 4_294_967_295,
                    ..
                })
            ));
        }
    }

    /// What the generated encoder writes, the request decoder reads back, from any split.
    #[test]
    fn requests_decode_as_encoded_from_any_split() {
        use tokio_util::codec::Encoder as _;
        let request = w::Request {
            body: Box::pin(futures::stream::iter([Bytes::from("body")])),
            trailers: Box::pin(async { None }),
            method: wt::Method::Other("PROPFIND".into()),
            path_with_query: Some("/a?b".into()),
            scheme: Some(wt::Scheme::Https),
            authority: Some("example.com".into()),
            headers: fields(&[("x-a", "1")]),
        };
        let mut wire = BytesMut::new();
        Enc::<(w::Request,)>::default()
            .encode((request,), &mut wire)
            .expect("encodes");
        let mut dec = Dec::<(WireRequest,)>::default();
        let mut src = BytesMut::new();
        let mut got = None;
        for b in wire.iter() {
            assert!(got.is_none(), "decoded before the last byte");
            src.extend_from_slice(&[*b]);
            got = dec.decode(&mut src).expect("decodes");
        }
        let (WireRequest(got),) = got.expect("complete");
        assert!(matches!(got.method, wt::Method::Other(ref m) if m == "PROPFIND"));
        assert_eq!(got.path_with_query.as_deref(), Some("/a?b"));
        assert!(matches!(got.scheme, Some(wt::Scheme::Https)));
        assert_eq!(got.authority.as_deref(), Some("example.com"));
        assert_eq!(got.headers, fields(&[("x-a", "1")]));
        assert!(dec.take_deferred().is_some(), "body and trailers follow");
    }

    fn encoded_len(fields: &w::Fields) -> usize {
        use tokio_util::codec::Encoder as _;
        let mut dst = BytesMut::new();
        Enc::<w::Fields>::default()
            .encode(fields.clone(), &mut dst)
            .expect("encodes");
        dst.len()
    }
}
