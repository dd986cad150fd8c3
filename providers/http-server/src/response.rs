//! The provider's own responses: the body type every response has, and the short ones it
//! answers itself (errors, CORS preflights). Shared by the request handling and CORS, so
//! neither depends on the other.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};

/// Error type of response bodies.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;
/// A response body: a short message or a stream from the lattice.
pub type Body = UnsyncBoxBody<Bytes, BodyError>;

/// A short plain-text response.
pub fn message(status: StatusCode, text: impl Into<String>) -> Response<Body> {
    let mut text = text.into();
    text.push('\n');
    let mut response = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A response with no body.
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(
        http_body_util::Empty::new()
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
}
