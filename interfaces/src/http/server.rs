//! The serving side of `wrpc:http/incoming-handler@0.1.0` (what a host runs for a component
//! exporting `wasi:http/incoming-handler`) and of `wrpc:http/outgoing-handler@0.1.0` (what an
//! http-client provider runs).
//!
//! A server implements [`Handler`], which sees only the `http` crate's types (see
//! [`plain`](super::plain)), and [`serve`] runs it over wRPC. [`serve`] decodes each call's
//! request as the generated code would, except for its async parts: the body is read in
//! bounded pieces ([`ByteStreamDecoder`]) and the fields of pending trailers only once whole
//! ([`Whole`]); the request head is checked against its shape before anything decodes it
//! ([`param_checks`]), since its headers are a list of tuples the generated decoder would size
//! from a forged length prefix. A response whose body is complete when the handler answers
//! goes back in one message (see [`Reply`]); any other streams as the caller takes it.

use std::pin::Pin;
use std::time::Duration;

use anyhow::Context as _;
use bytes::{BufMut as _, Bytes, BytesMut};
use futures::{FutureExt as _, TryStreamExt as _};
use tokio_util::codec::Decoder;
use trellis_wrpc_nats::wire_shape::{ParamChecks, Shape, Whole, WireShape as _};
use trellis_wrpc_nats::wrpc_transport::{
    ByteStreamDecoder, Decode, Deferred, DeferredFn, Encode, FieldSlot, ServeExt as _,
    fields_deferred,
};
use trellis_wrpc_nats::{CallPacer, Incoming, Outgoing};
use wrpc_transport::Serve;

use super::bindings::wrpc::http::types::RequestOptions as WireOptions;
use super::plain::{self, Body, INLINE_MAX};
use super::{
    ErrorCode as WireErrorCode, FUNC, Fields, INSTANCE, Method, OUTGOING_INSTANCE, Request,
    Response, Scheme,
};
use crate::{Invocations, ServeError};

/// What serves HTTP requests (a host running a component), for calls with context `C` (over
/// the lattice: the transport's `ServeContext`, or a provider's `CallContext`).
///
/// The request's URI has its scheme and authority when the caller gave an authority; the
/// caller's scheme, when it gave one, is also in the request's extensions (an
/// `http::uri::Scheme`). An `Err` is the interface's `error-code`, which the caller gets
/// instead of a response.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::{BodyExt as _, Full};
/// use trellis_interfaces::http::{Body, ErrorCode, server::Handler};
///
/// /// Answers every request with its own path.
/// #[derive(Clone)]
/// struct Echo;
///
/// impl<C: Send + 'static> Handler<C> for Echo {
///     async fn handle(&self, _: C, request: http::Request<Body>) -> Result<http::Response<Body>, ErrorCode> {
///         let path = Bytes::copy_from_slice(request.uri().path().as_bytes());
///         Ok(http::Response::new(Full::new(path).map_err(|never| match never {}).boxed_unsync()))
///     }
/// }
/// ```
pub trait Handler<C: Send + 'static>: Clone + Send + Sync + 'static {
    /// Answers `request`.
    fn handle(
        &self,
        cx: C,
        request: ::http::Request<Body>,
    ) -> impl Future<Output = Result<::http::Response<Body>, WireErrorCode>> + Send;
}

/// What serves outgoing HTTP requests (an http-client provider), for calls with context `C`.
///
/// The request is as [`Handler`] sees it; its URI has the scheme and authority the caller
/// gave. An `Err` is the interface's `error-code`.
pub trait OutgoingHandler<C: Send + 'static>: Clone + Send + Sync + 'static {
    /// Sends `request` and answers its response, within the caller's `options`.
    fn handle(
        &self,
        cx: C,
        request: ::http::Request<Body>,
        options: RequestOptions,
    ) -> impl Future<Output = Result<::http::Response<Body>, WireErrorCode>> + Send;
}

/// The timeouts a caller asks of an outgoing request (unset: the handler's own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// To establish the connection.
    pub connect_timeout: Option<Duration>,
    /// From sending the request to the first byte of the response.
    pub first_byte_timeout: Option<Duration>,
    /// Between two pieces of the response body.
    pub between_bytes_timeout: Option<Duration>,
}

impl RequestOptions {
    fn from_wire(options: Option<WireOptions>) -> Self {
        let Some(o) = options else {
            return Self::default();
        };
        Self {
            connect_timeout: o.connect_timeout.map(Duration::from_nanos),
            first_byte_timeout: o.first_byte_timeout.map(Duration::from_nanos),
            between_bytes_timeout: o.between_bytes_timeout.map(Duration::from_nanos),
        }
    }

    /// The options as the wire's (durations in nanoseconds).
    pub fn to_wire(self) -> WireOptions {
        let nanos =
            |d: Option<Duration>| d.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        WireOptions {
            connect_timeout: nanos(self.connect_timeout),
            first_byte_timeout: nanos(self.first_byte_timeout),
            between_bytes_timeout: nanos(self.between_bytes_timeout),
        }
    }
}

/// The parameter checks of `handle`: its request, against [`params_shape`].
pub fn param_checks() -> ParamChecks {
    ParamChecks::new().shape(INSTANCE, FUNC, params_shape())
}

/// The parameter checks of the outgoing handler's `handle`: its request and options, against
/// [`outgoing_params_shape`].
pub fn outgoing_param_checks() -> ParamChecks {
    ParamChecks::new().shape(OUTGOING_INSTANCE, FUNC, outgoing_params_shape())
}

/// Serves `handler` as the wire's `handle`, one future per accepted call.
///
/// This is what `wit-bindgen-wrpc` would generate, except that the results are a [`Reply`],
/// so a response that is already complete travels whole in the result message. The server
/// hands a call on only once its request head is all here (see `trellis_wrpc_nats::Server`), so decoding the
/// calls one after another holds none of them up.
///
/// Give the server [`param_checks`] first (`with_param_checks`): the request's headers are a
/// list of tuples, which the generated decoder would size from a forged length prefix.
pub async fn serve<S, H>(server: &S, handler: H) -> Result<Invocations, ServeError>
where
    S: Serve<Incoming = Incoming, Outgoing = Outgoing>,
    S::Context: CallPacer + Send + 'static,
    H: Handler<S::Context>,
{
    // The request's async parts, as the bindings declare them: the body stream (field 0) and
    // the trailers future (field 1) of parameter 0.
    let paths: [Box<[Option<usize>]>; 2] =
        [Box::from([Some(0), Some(0)]), Box::from([Some(0), Some(1)])];
    let calls = server
        .serve_values::<(WireRequest,), (Reply,)>(INSTANCE, FUNC, paths)
        .await
        .map_err(|error| ServeError {
            interface: INSTANCE,
            error,
        })?;
    let invocations = calls.map_ok(move |(cx, (WireRequest(request),), body_io, send)| {
        let handler = handler.clone();
        let respond = move |cx, request| async move { handler.handle(cx, request).await };
        Box::pin(serve_call(cx, request, body_io, send, respond))
            as Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>
    });
    Ok(vec![(INSTANCE, FUNC, Box::pin(invocations))])
}

/// Serves `handler` as the outgoing handler's `handle` (`wrpc:http/outgoing-handler@0.1.0`),
/// one future per accepted call, as [`serve`] does for the incoming handler. Give the server
/// [`outgoing_param_checks`] first.
pub async fn serve_outgoing<S, H>(server: &S, handler: H) -> Result<Invocations, ServeError>
where
    S: Serve<Incoming = Incoming, Outgoing = Outgoing>,
    S::Context: CallPacer + Send + 'static,
    H: OutgoingHandler<S::Context>,
{
    let paths: [Box<[Option<usize>]>; 2] =
        [Box::from([Some(0), Some(0)]), Box::from([Some(0), Some(1)])];
    let calls = server
        .serve_values::<(WireRequest, Option<WireOptions>), (Reply,)>(
            OUTGOING_INSTANCE,
            FUNC,
            paths,
        )
        .await
        .map_err(|error| ServeError {
            interface: OUTGOING_INSTANCE,
            error,
        })?;
    let invocations = calls.map_ok(
        move |(cx, (WireRequest(request), options), body_io, send)| {
            let handler = handler.clone();
            let options = RequestOptions::from_wire(options);
            let respond =
                move |cx, request| async move { handler.handle(cx, request, options).await };
            Box::pin(serve_call(cx, request, body_io, send, respond))
                as Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>
        },
    );
    Ok(vec![(OUTGOING_INSTANCE, FUNC, Box::pin(invocations))])
}

/// The decoder the generated code uses for `T` on our transport.
type Dec<T> = <T as Decode<Incoming>>::Decoder;

/// The request as the bindings type it, decoded as they would except for its async parts:
/// the body is read in bounded pieces ([`ByteStreamDecoder`]), and the fields of pending
/// trailers only once whole ([`Whole`]: they come on a nested stream the parameter check
/// does not see, and the generated decoder reserves room for as many as their count says).
struct WireRequest(Request);

impl Decode<Incoming> for WireRequest {
    type Decoder = WireRequestDecoder;
    type ListDecoder = wrpc_transport::ListDecoder<WireRequestDecoder, Incoming>;
}

type CheckedTrailers = Pin<Box<dyn Future<Output = Option<Whole<Fields>>> + Send>>;

/// Decodes a [`WireRequest`]: the record's fields in order, each kept once complete, since
/// the bytes may come in several reads.
#[derive(Default)]
struct WireRequestDecoder {
    body: Slot<ByteStreamDecoder<Incoming>>,
    trailers: Slot<Dec<CheckedTrailers>>,
    method: Slot<Dec<Method>>,
    path: Slot<Dec<Option<String>>>,
    scheme: Slot<Dec<Option<Scheme>>>,
    authority: Slot<Dec<Option<String>>>,
    headers: Slot<Dec<Fields>>,
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
        Ok(Some(WireRequest(Request {
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

/// The wire shape of the outgoing handler's parameters: a request, then its options.
pub fn outgoing_params_shape() -> Shape {
    let options = Option::<(Option<u64>, Option<u64>, Option<u64>)>::shape();
    Shape::Seq(vec![request_shape(), options])
}

/// The wire shape of `handle`'s parameters: one `wrpc:http/types.request`.
pub fn params_shape() -> Shape {
    Shape::Seq(vec![request_shape()])
}

/// The wire shape of a `wrpc:http/types.request`.
fn request_shape() -> Shape {
    let fields = Vec::<(String, Vec<Bytes>)>::shape();
    let text = String::shape();
    // `method`: nine cases without payload, then `other(string)`; `scheme`: two, then
    // `other(string)`.
    let mut method = vec![None; 9];
    method.push(Some(text.clone()));
    let scheme = Shape::Variant(vec![None, None, Some(text)]);
    Shape::Seq(vec![
        Shape::Bytes,                                                     // body: stream<u8>
        Shape::Future(Box::new(Shape::Option(Box::new(fields.clone())))), // trailers
        Shape::Variant(method),
        Option::<String>::shape(), // path-with-query
        Shape::Option(Box::new(scheme)),
        Option::<String>::shape(), // authority
        fields,                    // headers
    ])
}

/// Serves one accepted call: answers its request with `respond`, sends the reply, and
/// finishes receiving the request body.
async fn serve_call<C, Respond, Responded, Io, SendReply, Sent>(
    cx: C,
    request: Request,
    body_io: Option<Io>,
    send: SendReply,
    respond: Respond,
) -> anyhow::Result<()>
where
    C: CallPacer,
    Respond: FnOnce(C, ::http::Request<Body>) -> Responded,
    Responded: Future<Output = Result<::http::Response<Body>, WireErrorCode>>,
    Io: Future<Output = std::io::Result<()>> + Send + 'static,
    SendReply: FnOnce((Reply,)) -> Sent,
    Sent: Future<Output = anyhow::Result<()>>,
{
    // The request body arrives while the handler runs.
    let body_io = body_io.map(tokio::spawn);
    let pacer = cx.pacer().clone();
    let reply = match plain::request_from_wire(request) {
        Ok(request) => match respond(cx, request).await {
            Ok(response) => Reply::of(response, |body| Box::pin(pacer.pace(body)))
                .context("failed to encode the response")?,
            Err(code) => Reply::Streamed(Err(code)),
        },
        Err(code) => Reply::Streamed(Err(code)),
    };
    let sent = send((reply,)).await.context("failed to send the response");
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

/// A wire response's body, as the bindings type it.
type WireBody = Pin<Box<dyn futures::Stream<Item = Bytes> + Send>>;

/// The encoder the generated code uses for `T` on our transport.
type Enc<T> = <T as Encode<Outgoing>>::Encoder;

/// A handler's result as it goes on the wire.
///
/// The wire response's body is a stream and its trailers a future. The generated encoder
/// always sends them as *pending*: each then costs messages of its own after the result (a
/// chunk, an end marker, a close). wRPC also encodes them *ready*, inline in the result: a
/// non-empty byte stream as its bytes, a future as its value. Every wRPC decoder reads both
/// forms, so a response that is complete when it is sent (most are) goes as one message.
enum Reply {
    /// The encoded result, body and trailers inline.
    Inline(Bytes),
    /// The result, its body streamed as the caller reads it.
    Streamed(Result<Response, WireErrorCode>),
}

impl Reply {
    /// A handler's response: inline when its body is complete already, non-empty and at
    /// most [`INLINE_MAX`] bytes; otherwise streamed, the rest of its body through `pace`.
    fn of(
        response: ::http::Response<Body>,
        pace: impl FnOnce(WireBody) -> WireBody,
    ) -> std::io::Result<Self> {
        let (parts, mut body) = response.into_parts();
        let mut taken = plain::take_ready(&mut body);
        if taken.complete && !taken.data.is_empty() && taken.data.len() <= INLINE_MAX {
            let headers = super::from_header_map(&parts.headers);
            let trailers = taken.trailers.take();
            return Self::inline(parts.status.as_u16(), headers, &taken.data, trailers);
        }
        let mut response = plain::response_to_wire(parts, taken, body);
        response.body = pace(response.body);
        Ok(Self::Streamed(Ok(response)))
    }

    /// `Ok(response)` encoded with its complete, non-empty body and its trailers inline.
    fn inline(
        status: u16,
        headers: Fields,
        body: &[u8],
        trailers: Option<Fields>,
    ) -> std::io::Result<Self> {
        use tokio_util::codec::Encoder as _;
        let mut dst = BytesMut::with_capacity(body.len() + 256);
        dst.put_u8(0); // result::ok
        let len = u32::try_from(body.len()).map_err(std::io::Error::other)?;
        Enc::<u32>::default().encode(len, &mut dst)?; // a ready stream<u8>: its bytes
        dst.put_slice(body);
        dst.put_u8(1); // a ready future<option<fields>>: its value
        Enc::<Option<Fields>>::default().encode(trailers, &mut dst)?;
        Enc::<u16>::default().encode(status, &mut dst)?;
        Enc::<Fields>::default().encode(headers, &mut dst)?;
        Ok(Self::Inline(dst.freeze()))
    }
}

/// Encodes a [`Reply`]: inline bytes as they are, the rest as the generated code does.
#[derive(Default)]
struct ReplyEncoder(Enc<Result<Response, WireErrorCode>>);

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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
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
            let mut dec = Dec::<(Result<Response, WireErrorCode>,)>::default();
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
        let methods = [Method::Get, Method::Patch, Method::Other("PROPFIND".into())];
        let schemes = [None, Some(Scheme::Https), Some(Scheme::Other("x".into()))];
        for (method, scheme) in methods.into_iter().zip(schemes) {
            let request = Request {
                body: Box::pin(futures::stream::iter([Bytes::from("body")])),
                trailers: Box::pin(async { None }),
                method,
                path_with_query: Some("/a?b".into()),
                scheme,
                authority: None,
                headers: fields(&[("x-a", "1"), ("x-b", "2")]),
            };
            let mut dst = BytesMut::new();
            Enc::<(Request,)>::default()
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
        let request = Request {
            body: Box::pin(futures::stream::iter([Bytes::from("body")])),
            trailers: Box::pin(async { None }),
            method: Method::Other("PROPFIND".into()),
            path_with_query: Some("/a?b".into()),
            scheme: Some(Scheme::Https),
            authority: Some("example.com".into()),
            headers: fields(&[("x-a", "1")]),
        };
        let mut wire = BytesMut::new();
        Enc::<(Request,)>::default()
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
        assert!(matches!(got.method, Method::Other(ref m) if m == "PROPFIND"));
        assert_eq!(got.path_with_query.as_deref(), Some("/a?b"));
        assert!(matches!(got.scheme, Some(Scheme::Https)));
        assert_eq!(got.authority.as_deref(), Some("example.com"));
        assert_eq!(got.headers, fields(&[("x-a", "1")]));
        assert!(dec.take_deferred().is_some(), "body and trailers follow");
    }

    fn encoded_len(fields: &Fields) -> usize {
        use tokio_util::codec::Encoder as _;
        let mut dst = BytesMut::new();
        Enc::<Fields>::default()
            .encode(fields.clone(), &mut dst)
            .expect("encodes");
        dst.len()
    }
}
