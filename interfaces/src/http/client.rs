//! The calling side of `wrpc:http/incoming-handler@0.1.0` (what an http-server provider
//! runs): the request as it goes on the wire, the call that sends it, and the response as it
//! comes back.
//!
//! The wire request's body is a stream and its trailers a future. The generated encoder
//! sends both as *pending*, and each pending value costs messages of its own after the
//! invocation (its value, then a close). A request without a body (most GETs) has no
//! trailers either, which wRPC can say inline: a *ready* future carries its value in the
//! invocation. Only the empty body stays pending (wRPC has no inline form for an empty
//! stream), ended by one byte. Every wRPC decoder reads both forms.
//!
//! The response is decoded as the generated code would, except for two things. Its body is
//! read with [`ByteStreamDecoder`], so a client that downloads slowly makes the
//! caller hold a few pieces of the body beyond the flow window, not up to 128 of the
//! sender's chunks. Its header and trailer fields (lists of tuples, for which the generated
//! decoder reserves room as the length prefix says) are decoded only once all their bytes are
//! here ([`Whole`]), so a forged count cannot abort the caller.

use std::future::Future;
use std::pin::Pin;

use bytes::{BufMut as _, BytesMut};
use tokio::io::AsyncWriteExt as _;
use tokio_util::codec::{Decoder, Encoder};
use trellis_wrpc_nats::wire_shape::Whole;
use trellis_wrpc_nats::wrpc_transport::{
    ByteStream, ByteStreamDecoder, Decode, Deferred, DeferredFn, Encode, FieldSlot, Index as _,
    Invoke, InvokeExt as _, fields_deferred,
};
use trellis_wrpc_nats::{Incoming, Outgoing};

use super::bindings::wrpc::http::types::RequestOptions as WireOptions;
use super::{ErrorCode, FUNC, Fields, INSTANCE, Method, Request, Scheme};

/// The encoder the generated code uses for `T` on our transport.
type Enc<T> = <T as Encode<Outgoing>>::Encoder;

/// The decoder the generated code uses for `T` on our transport.
type Dec<T> = <T as Decode<Incoming>>::Decoder;

/// What the handler answers, and the call's I/O still under way (the request body going
/// out, the response body coming in).
pub type Answer = (
    Result<WireResponse, ErrorCode>,
    Option<Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>>,
);

/// Calls `handle` with `request` over `client` (context `cx`), a client of this transport.
pub async fn handle<I: Invoke<Outgoing = Outgoing, Incoming = Incoming>>(
    client: &I,
    cx: I::Context,
    request: WireRequest,
) -> anyhow::Result<Answer> {
    // The response's async parts, as the bindings declare them: the body stream (field 0)
    // and the trailers future (field 1) of result 0.
    let paths: [&[Option<usize>]; 2] = [&[Some(0), Some(0)], &[Some(0), Some(1)]];
    let ((result,), io) = client
        .invoke_values::<_, (WireRequest,), (Result<WireResponse, ErrorCode>,)>(
            cx,
            INSTANCE,
            FUNC,
            (request,),
            paths,
        )
        .await?;
    Ok((result, io.map(|io| Box::pin(io) as _)))
}

/// Calls the outgoing handler's `handle` (`wrpc:http/outgoing-handler@0.1.0`, what an
/// http-client provider serves) with `request` and `options` over `client`.
pub async fn handle_outgoing<I: Invoke<Outgoing = Outgoing, Incoming = Incoming>>(
    client: &I,
    cx: I::Context,
    request: WireRequest,
    options: super::server::RequestOptions,
) -> anyhow::Result<Answer> {
    let paths: [&[Option<usize>]; 2] = [&[Some(0), Some(0)], &[Some(0), Some(1)]];
    let ((result,), io) = client
        .invoke_values::<_, (WireRequest, Option<WireOptions>), (Result<WireResponse, ErrorCode>,)>(
            cx,
            super::OUTGOING_INSTANCE,
            FUNC,
            (request, Some(options.to_wire())),
            paths,
        )
        .await?;
    Ok((result, io.map(|io| Box::pin(io) as _)))
}

/// Sends `request` to the outgoing handler `client` reaches and answers its response, both
/// as `http` types: what a host runs for a component's `wasi:http/outgoing-handler`.
///
/// The call's I/O (the request body going out, the response body coming in) runs on a task
/// of its own while the response is read; its failure ends the response body early.
pub async fn send_outgoing<I: Invoke<Outgoing = Outgoing, Incoming = Incoming>>(
    client: &I,
    cx: I::Context,
    request: ::http::Request<super::Body>,
    options: super::server::RequestOptions,
) -> Result<::http::Response<super::Body>, crate::CallError<ErrorCode>> {
    let request = super::plain::request_to_wire(request);
    let (result, io) = handle_outgoing(client, cx, request, options)
        .await
        .map_err(crate::CallError::Transport)?;
    if let Some(io) = io {
        tokio::spawn(async move {
            if let Err(err) = io.await {
                tracing::debug!(error = %format!("{err:#}"), "outgoing request I/O ended early");
            }
        });
    }
    let response = result.map_err(crate::CallError::Interface)?;
    super::plain::response_from_wire(response).map_err(crate::CallError::Interface)
}

/// The request parameter.
pub enum WireRequest {
    /// Body and trailers as they come.
    Streamed(Request),
    /// The client sent no body (and so no trailers): the trailers go inline, the body ends at
    /// once. `body` and `trailers` of the request are not used.
    Bodyless(Request),
}

/// Encodes a [`WireRequest`].
#[derive(Default)]
pub struct WireRequestEncoder {
    streamed: Enc<Request>,
    deferred: Option<DeferredFn<Outgoing>>,
}

impl Encoder<WireRequest> for WireRequestEncoder {
    type Error = std::io::Error;

    fn encode(&mut self, item: WireRequest, dst: &mut BytesMut) -> std::io::Result<()> {
        let r = match item {
            WireRequest::Streamed(r) => return self.streamed.encode(r, dst),
            WireRequest::Bodyless(r) => r,
        };
        dst.put_u8(0); // body: a pending stream<u8> …
        dst.put_u8(1); // trailers: a ready future …
        dst.put_u8(0); // … of `none`
        Enc::<Method>::default().encode(r.method, dst)?;
        Enc::<Option<String>>::default().encode(r.path_with_query, dst)?;
        Enc::<Option<Scheme>>::default().encode(r.scheme, dst)?;
        Enc::<Option<String>>::default().encode(r.authority, dst)?;
        Enc::<Fields>::default().encode(r.headers, dst)?;
        // … which ends at once: its end marker on the body's stream (field 0).
        self.deferred = Some(Box::new(|w: Outgoing, mut path: Vec<usize>| {
            Box::pin(async move {
                path.push(0);
                let mut body = w.index(&path).map_err(std::io::Error::other)?;
                body.write_all(&[0]).await
            })
        }));
        Ok(())
    }
}

impl Deferred<Outgoing> for WireRequestEncoder {
    fn take_deferred(&mut self) -> Option<DeferredFn<Outgoing>> {
        self.deferred
            .take()
            .or_else(|| self.streamed.take_deferred())
    }
}

impl Encode<Outgoing> for WireRequest {
    type Encoder = WireRequestEncoder;
}

/// The response's trailers.
pub type Trailers = Pin<Box<dyn Future<Output = Option<Whole<Fields>>> + Send>>;

/// The handler's response: `wrpc:http/types.response` with its body read in bounded pieces.
pub struct WireResponse {
    /// The body, read in bounded pieces.
    pub body: ByteStream,
    /// The trailers, decoded only once whole.
    pub trailers: Trailers,
    /// The status code.
    pub status: u16,
    /// The header fields.
    pub headers: Fields,
}

impl Decode<Incoming> for WireResponse {
    type Decoder = WireResponseDecoder;
    type ListDecoder = wrpc_transport::ListDecoder<WireResponseDecoder, Incoming>;
}

/// Decodes a [`WireResponse`]: the record's fields in order, each kept once complete, since
/// the bytes may come in several reads.
#[derive(Default)]
pub struct WireResponseDecoder {
    body: Slot<ByteStreamDecoder<Incoming>>,
    trailers: Slot<Dec<Trailers>>,
    status: Slot<Dec<u16>>,
    headers: Slot<Dec<Whole<Fields>>>,
}

/// A response field being decoded.
type Slot<D> = FieldSlot<D, Incoming>;

impl Decoder for WireResponseDecoder {
    type Item = WireResponse;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> std::io::Result<Option<WireResponse>> {
        let complete = self.body.decode(src)?
            && self.trailers.decode(src)?
            && self.status.decode(src)?
            && self.headers.decode(src)?;
        if !complete {
            return Ok(None);
        }
        match (
            self.body.take(),
            self.trailers.take(),
            self.status.take(),
            self.headers.take(),
        ) {
            (Some(body), Some(trailers), Some(status), Some(Whole(headers))) => {
                Ok(Some(WireResponse {
                    body,
                    trailers,
                    status,
                    headers,
                }))
            }
            _ => Err(std::io::Error::other(
                "a decoded response field went missing",
            )),
        }
    }
}

impl Deferred<wrpc_transport::Incoming<Incoming>> for WireResponseDecoder {
    fn take_deferred(&mut self) -> Option<DeferredFn<wrpc_transport::Incoming<Incoming>>> {
        fields_deferred([
            (0, self.body.take_deferred()),
            (1, self.trailers.take_deferred()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::FutureExt as _;

    /// Reads what the encoder wrote back with the generated decoder (for tests).
    fn decode(bytes: &[u8]) -> anyhow::Result<(Request, bool)> {
        use anyhow::Context as _;
        let mut src = BytesMut::from(bytes);
        let mut dec = <(Request,) as Decode<Incoming>>::Decoder::default();
        let (request,) = dec.decode(&mut src)?.context("incomplete")?;
        anyhow::ensure!(src.is_empty(), "{} bytes left over", src.len());
        Ok((request, dec.take_deferred().is_some()))
    }

    fn request() -> Request {
        Request {
            body: Box::pin(futures::stream::empty()),
            trailers: Box::pin(async { None }),
            method: Method::Other("PROPFIND".into()),
            path_with_query: Some("/a/b?c=d".into()),
            scheme: Some(Scheme::Https),
            authority: Some("example.com:8443".into()),
            headers: vec![("x-a".into(), vec![Bytes::from("1"), Bytes::from("2")])],
        }
    }

    /// A bodyless request decodes, with the generated decoder, into the same head with its
    /// trailers ready (`none`) and only its body pending.
    #[test]
    fn bodyless_request_has_ready_trailers_and_a_pending_body() {
        let mut enc = <(WireRequest,) as Encode<Outgoing>>::Encoder::default();
        let mut dst = BytesMut::new();
        enc.encode((WireRequest::Bodyless(request()),), &mut dst)
            .expect("encodes");
        assert!(enc.take_deferred().is_some(), "the body's end must follow");
        let (got, pending) = decode(&dst).expect("decodes");
        assert!(pending, "the body is pending");
        let want = request();
        assert_eq!(format!("{:?}", got.method), format!("{:?}", want.method));
        assert_eq!(got.path_with_query, want.path_with_query);
        assert_eq!(format!("{:?}", got.scheme), format!("{:?}", want.scheme));
        assert_eq!(got.authority, want.authority);
        assert_eq!(got.headers, want.headers);
        assert_eq!(
            got.trailers.now_or_never(),
            Some(None),
            "trailers are ready and none"
        );
    }

    /// A response as the host sends a complete one: `ok`, the body's bytes inline, trailers
    /// ready and `none`, status 200, one header.
    const READY_RESPONSE: &[u8] = b"\x00\x03abc\x01\x00\xc8\x01\x01\x01x\x01\x011";

    /// The response decodes the same whether its bytes come at once or a byte at a time
    /// (each read resumes where the last stopped).
    #[tokio::test]
    async fn a_ready_response_decodes_from_any_split() {
        use futures::StreamExt as _;
        for step in [READY_RESPONSE.len(), 1] {
            let mut dec =
                <(Result<WireResponse, ErrorCode>,) as Decode<Incoming>>::Decoder::default();
            let mut src = BytesMut::new();
            let mut got = None;
            for part in READY_RESPONSE.chunks(step) {
                assert!(got.is_none(), "decoded before the last byte");
                src.extend_from_slice(part);
                got = dec.decode(&mut src).expect("decodes");
            }
            let (Ok(response),) = got.expect("complete") else {
                panic!("not ok");
            };
            assert!(src.is_empty(), "bytes left over");
            assert!(dec.take_deferred().is_none(), "nothing is pending");
            assert_eq!(response.status, 200);
            assert_eq!(
                response.headers,
                vec![("x".to_string(), vec![Bytes::from("1")])]
            );
            assert_eq!(response.trailers.now_or_never(), Some(None));
            let body: Vec<Bytes> = response.body.collect().await;
            assert_eq!(body.concat(), b"abc");
        }
    }

    /// A streamed body and pending trailers leave both to be read on their nested streams.
    #[test]
    fn a_streamed_response_leaves_body_and_trailers_pending() {
        let mut dec = <(Result<WireResponse, ErrorCode>,) as Decode<Incoming>>::Decoder::default();
        let mut src = BytesMut::from(&b"\x00\x00\x00\xc8\x01\x00"[..]);
        let (Ok(response),) = dec.decode(&mut src).expect("decodes").expect("complete") else {
            panic!("not ok");
        };
        assert_eq!(response.status, 200);
        assert!(response.headers.is_empty());
        assert!(dec.take_deferred().is_some(), "body and trailers follow");
    }

    /// An error answer decodes as the generated code's `error-code`.
    #[test]
    fn an_error_answer_decodes_as_its_code() {
        let mut dec = <(Result<WireResponse, ErrorCode>,) as Decode<Incoming>>::Decoder::default();
        let mut src = BytesMut::new();
        Enc::<(Result<(), ErrorCode>,)>::default()
            .encode((Err::<(), _>(ErrorCode::HttpRequestDenied),), &mut src)
            .expect("encodes");
        let (got,) = dec.decode(&mut src).expect("decodes").expect("complete");
        assert!(matches!(got, Err(ErrorCode::HttpRequestDenied)));
    }

    /// A response claiming 2³² − 1 headers, or trailers claiming as many fields: the
    /// generated decoder would reserve some 200 GB for them and abort the provider. Here
    /// the decoder waits for bytes that never come, and the end of the results fails it.
    #[test]
    fn forged_field_counts_wait_for_bytes_and_fail_at_the_end() {
        let forged_headers = b"\x00\x03abc\x01\x00\xc8\x01\xff\xff\xff\xff\x0f\x01x";
        let forged_trailers = b"\x00\x03abc\x01\x01\xff\xff\xff\xff\x0f\x01x";
        for forged in [&forged_headers[..], &forged_trailers[..]] {
            let mut dec =
                <(Result<WireResponse, ErrorCode>,) as Decode<Incoming>>::Decoder::default();
            let mut src = BytesMut::from(forged);
            assert!(dec.decode(&mut src).expect("no error yet").is_none());
            assert!(dec.decode_eof(&mut src).is_err(), "incomplete at the end");
        }
    }
}
