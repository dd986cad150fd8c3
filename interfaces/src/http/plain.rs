//! The plain side of serving HTTP: the wire's request as an `http::Request<Body>` for a
//! [`Handler`](super::server::Handler), and the handler's `http::Response<Body>` back as the
//! wire's result.
//!
//! A handler sees only the `http` crate's types and a [`Body`] of `Bytes` frames, so the
//! same handler can be called over the lattice or in the caller's own process.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{FutureExt as _, StreamExt as _};
use http_body::Frame;
use http_body_util::{BodyExt as _, StreamBody};
use tokio::sync::oneshot;
use tracing::warn;

use super::{ErrorCode, Fields, Request, Response};

/// A request or response body: its data in `Bytes` frames, then its trailers if any. A
/// failed body ends with the interface's [`ErrorCode`].
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, ErrorCode>;

/// How long a request's trailers are awaited once its body has ended.
const TRAILERS_WAIT: Duration = Duration::from_secs(5);

/// The largest body a reply carries inline; longer ones stream.
pub(super) const INLINE_MAX: usize = 256 << 10;

/// The wire's request as an `http` request.
///
/// The URI carries scheme and authority when the wire gives an authority (an `http` URI
/// cannot have a scheme without one); the wire's scheme, when it gives one, is also in the
/// request's extensions as an `http::uri::Scheme`, for handlers that need it either way.
pub(super) fn request_from_wire(request: Request) -> Result<::http::Request<Body>, ErrorCode> {
    let Request {
        body,
        trailers,
        method,
        path_with_query,
        scheme,
        authority,
        headers,
    } = request;
    let method = super::method_from_wire(method)?;
    let scheme = match scheme {
        None => None,
        Some(super::Scheme::Http) => Some(::http::uri::Scheme::HTTP),
        Some(super::Scheme::Https) => Some(::http::uri::Scheme::HTTPS),
        Some(super::Scheme::Other(s)) => {
            Some(s.parse().map_err(|_| ErrorCode::HttpRequestUriInvalid)?)
        }
    };
    let mut uri = ::http::Uri::builder().path_and_query(path_with_query.as_deref().unwrap_or("/"));
    if let Some(authority) = authority.as_deref() {
        let uri_scheme = scheme.clone().unwrap_or(::http::uri::Scheme::HTTP);
        uri = uri.scheme(uri_scheme).authority(authority);
    }
    let uri = uri.build().map_err(|_| ErrorCode::HttpRequestUriInvalid)?;
    let headers = super::to_header_map(headers)
        .map_err(|e| ErrorCode::InternalError(Some(format!("invalid request header: {e}"))))?;

    // The body's frames: its data, then its trailers if the caller sends any.
    let trailers = futures::stream::once(async move {
        match tokio::time::timeout(TRAILERS_WAIT, trailers).await {
            Ok(Some(fields)) => match super::to_header_map(fields) {
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
    let mut request = ::http::Request::new(StreamBody::new(frames).boxed_unsync());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    if let Some(scheme) = scheme {
        request.extensions_mut().insert(scheme);
    }
    Ok(request)
}

/// What could be read from a response body without waiting.
#[derive(Default)]
pub(super) struct Taken {
    pub(super) data: BytesMut,
    pub(super) trailers: Option<Fields>,
    /// The body ended: `data` and `trailers` are all of it.
    pub(super) complete: bool,
    /// The body failed after `data`.
    failed: bool,
}

/// Reads the frames `body` has ready, up to about [`INLINE_MAX`] bytes: most handlers have
/// written their whole body by the time they answer.
pub(super) fn take_ready(body: &mut Body) -> Taken {
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
                        taken.trailers = Some(super::from_header_map(&map));
                    }
                }
            },
            Some(Some(Err(code))) => {
                warn!(error = ?code, "response body failed; ending it early");
                taken.failed = true;
                break;
            }
            // Not complete after all: the rest streams.
            None => break,
        }
    }
    taken
}

/// A response as the wire's, its body pulled as the caller reads it (after what
/// [`take_ready`] took already).
pub(super) fn response_to_wire(
    parts: ::http::response::Parts,
    taken: Taken,
    body: Body,
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
    let rest = (!taken.complete && !taken.failed).then_some((body, trailers_tx));
    let rest = futures::stream::unfold(rest, |state| async move {
        let (mut body, mut trailers_tx) = state?;
        loop {
            match body.frame().await {
                None => return None,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => return Some((data, Some((body, trailers_tx)))),
                    Err(frame) => {
                        if let (Ok(map), Some(tx)) = (frame.into_trailers(), trailers_tx.take()) {
                            let _ = tx.send(super::from_header_map(&map));
                        }
                    }
                },
                Some(Err(code)) => {
                    // The wire body has no error channel: the caller sees it end early (and
                    // no trailers).
                    warn!(error = ?code, "response body failed; ending it early");
                    return None;
                }
            }
        }
    });
    let first = (!taken.data.is_empty()).then(|| taken.data.freeze());
    Response {
        body: Box::pin(futures::stream::iter(first).chain(rest)),
        trailers: Box::pin(async move { trailers_rx.await.ok() }),
        status: parts.status.as_u16(),
        headers: super::from_header_map(&parts.headers),
    }
}

/// An `http` request as the wire's, for calling a handler: a request whose body has ended
/// already goes [`Bodyless`](super::client::WireRequest::Bodyless) (its trailers inline).
pub(super) fn request_to_wire(request: ::http::Request<Body>) -> super::client::WireRequest {
    let (parts, body) = request.into_parts();
    let scheme = parts.uri.scheme().map(|s| {
        if *s == ::http::uri::Scheme::HTTP {
            super::Scheme::Http
        } else if *s == ::http::uri::Scheme::HTTPS {
            super::Scheme::Https
        } else {
            super::Scheme::Other(s.as_str().to_string())
        }
    });
    let bodyless = http_body::Body::is_end_stream(&body);
    let (trailers_tx, trailers_rx) = oneshot::channel::<Fields>();
    let frames =
        futures::stream::unfold((body, Some(trailers_tx)), |(mut body, mut tx)| async move {
            loop {
                match body.frame().await? {
                    Ok(frame) => match frame.into_data() {
                        Ok(data) if data.is_empty() => continue,
                        Ok(data) => return Some((data, (body, tx))),
                        Err(frame) => {
                            if let (Ok(map), Some(tx)) = (frame.into_trailers(), tx.take()) {
                                let _ = tx.send(super::from_header_map(&map));
                            }
                        }
                    },
                    Err(code) => {
                        // The wire body has no error channel: the handler sees it end early.
                        warn!(error = ?code, "request body failed; ending it early");
                        return None;
                    }
                }
            }
        });
    let request = Request {
        body: Box::pin(frames),
        trailers: Box::pin(async move { trailers_rx.await.ok() }),
        method: super::method_to_wire(&parts.method),
        path_with_query: parts.uri.path_and_query().map(|p| p.as_str().to_string()),
        scheme,
        authority: parts.uri.authority().map(|a| a.as_str().to_string()),
        headers: super::from_header_map(&parts.headers),
    };
    if bodyless {
        super::client::WireRequest::Bodyless(request)
    } else {
        super::client::WireRequest::Streamed(request)
    }
}

/// A handler's wire response as an `http` response; its body reads the wire's stream, then
/// its trailers. A status or header that is not valid HTTP is `http-protocol-error`.
pub(super) fn response_from_wire(
    response: super::client::WireResponse,
) -> Result<::http::Response<Body>, ErrorCode> {
    let super::client::WireResponse {
        body,
        trailers,
        status,
        headers,
    } = response;
    let status = ::http::StatusCode::from_u16(status).map_err(|_| ErrorCode::HttpProtocolError)?;
    let headers = super::to_header_map(headers).map_err(|_| ErrorCode::HttpProtocolError)?;
    let trailers = futures::stream::once(async move {
        match trailers.await {
            Some(trailer_fields) => {
                let map = super::to_header_map_lossy(trailer_fields.0);
                (!map.is_empty()).then(|| Ok(Frame::trailers(map)))
            }
            None => None,
        }
    })
    .filter_map(futures::future::ready);
    let frames = body.map(|b| Ok(Frame::data(b))).chain(trailers);
    let mut response = ::http::Response::new(StreamBody::new(frames).boxed_unsync());
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}
