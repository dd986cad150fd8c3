//! The request as it goes on the wire, and the call that sends it.
//!
//! The wire request's body is a stream and its trailers a future. The generated encoder
//! sends both as *pending*, and each pending value costs messages of its own after the
//! invocation (its value, then a close). A request without a body (most GETs) has no
//! trailers either, which wRPC can say inline: a *ready* future carries its value in the
//! invocation. Only the empty body stays pending (wRPC has no inline form for an empty
//! stream), ended by one byte. Every wRPC decoder reads both forms.

use bytes::{BufMut as _, BytesMut};
use tokio::io::AsyncWriteExt as _;
use tokio_util::codec::Encoder;
use trellis_sdk::runtime::LinkedClient;
use trellis_sdk::transport::Outgoing;
use wrpc_transport::{Deferred, DeferredFn, Encode, Index as _, InvokeExt as _};

use crate::bindings::wasi::http0_2_0::types as wt;
use crate::bindings::wrpc::http::types as w;

/// The wire instance and function of the incoming handler.
const INSTANCE: &str = "wrpc:http/incoming-handler@0.1.0";
const FUNC: &str = "handle";

/// The encoder the generated code uses for `T` on our transport.
type Enc<T> = <T as Encode<Outgoing>>::Encoder;

/// What the handler answers, and the transfer of the request body still under way.
pub type Answer = (
    Result<w::Response, wt::ErrorCode>,
    Option<std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>>,
);

/// Calls the linked component's `handle` with `request`.
pub async fn handle(client: &LinkedClient, request: WireRequest) -> anyhow::Result<Answer> {
    // The response's async parts, as the bindings declare them: the body stream (field 0)
    // and the trailers future (field 1) of result 0.
    let paths: [&[Option<usize>]; 2] = [&[Some(0), Some(0)], &[Some(0), Some(1)]];
    let ((result,), io) = client
        .invoke_values::<_, (WireRequest,), (Result<w::Response, wt::ErrorCode>,)>(
            (),
            INSTANCE,
            FUNC,
            (request,),
            paths,
        )
        .await?;
    Ok((result, io.map(|io| Box::pin(io) as _)))
}

/// The request parameter.
pub enum WireRequest {
    /// Body and trailers as they come.
    Streamed(w::Request),
    /// The client sent no body (and so no trailers): the trailers go inline, the body ends at
    /// once. `body` and `trailers` of the request are not used.
    Bodyless(w::Request),
}

/// Encodes a [`WireRequest`].
#[derive(Default)]
pub struct WireRequestEncoder {
    streamed: Enc<w::Request>,
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
        Enc::<wt::Method>::default().encode(r.method, dst)?;
        Enc::<Option<String>>::default().encode(r.path_with_query, dst)?;
        Enc::<Option<wt::Scheme>>::default().encode(r.scheme, dst)?;
        Enc::<Option<String>>::default().encode(r.authority, dst)?;
        Enc::<w::Fields>::default().encode(r.headers, dst)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::FutureExt as _;

    /// Reads what the encoder wrote back with the generated decoder (for tests).
    fn decode(bytes: &[u8]) -> anyhow::Result<(w::Request, bool)> {
        use anyhow::Context as _;
        use tokio_util::codec::Decoder as _;
        use trellis_sdk::transport::Incoming;
        use wrpc_transport::Decode;
        let mut src = BytesMut::from(bytes);
        let mut dec = <(w::Request,) as Decode<Incoming>>::Decoder::default();
        let (request,) = dec.decode(&mut src)?.context("incomplete")?;
        anyhow::ensure!(src.is_empty(), "{} bytes left over", src.len());
        Ok((request, dec.take_deferred().is_some()))
    }

    fn request() -> w::Request {
        w::Request {
            body: Box::pin(futures::stream::empty()),
            trailers: Box::pin(async { None }),
            method: wt::Method::Other("PROPFIND".into()),
            path_with_query: Some("/a/b?c=d".into()),
            scheme: Some(wt::Scheme::Https),
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
}
