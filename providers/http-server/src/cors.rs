//! Cross-origin resource sharing for routes that enable it (`cors_allowed_origins`).
//!
//! Written here rather than taken from `tower-http` because the rules are per route, known
//! only after routing inside our own service; the logic is the small part of the Fetch
//! standard a server needs: answer preflights, and mark allowed responses.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::response::{Body, empty, message};
use crate::settings::CorsSettings;

fn origin_allowed(cors: &CorsSettings, origin: &str) -> bool {
    cors.allowed_origins
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
}

fn allow_origin_value(cors: &CorsSettings, origin: &HeaderValue) -> HeaderValue {
    if cors.allowed_origins.iter().any(|o| o == "*") {
        HeaderValue::from_static("*")
    } else {
        origin.clone()
    }
}

fn list(items: &[String]) -> Option<HeaderValue> {
    HeaderValue::from_str(&items.join(", ")).ok()
}

/// The answer to a preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`), or `None` for any other request.
pub fn preflight(cors: &CorsSettings, request: &Request<Incoming>) -> Option<Response<Body>> {
    if request.method() != Method::OPTIONS {
        return None;
    }
    let h = request.headers();
    let origin = h.get(header::ORIGIN)?;
    let wanted = h.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    let origin_ok = origin.to_str().is_ok_and(|o| origin_allowed(cors, o));
    let method_ok = wanted.to_str().is_ok_and(|m| {
        cors.allowed_methods
            .iter()
            .any(|a| a.eq_ignore_ascii_case(m))
    });
    let headers_ok = h
        .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .all(|n| cors.allowed_headers.contains(&n));
    if !(origin_ok && method_ok && headers_ok) {
        return Some(message(
            StatusCode::FORBIDDEN,
            "cross-origin request not allowed on this route",
        ));
    }
    let mut response = empty(StatusCode::NO_CONTENT);
    let out = response.headers_mut();
    out.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        allow_origin_value(cors, origin),
    );
    if let Some(v) = list(&cors.allowed_methods) {
        out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    if let Some(v) = list(&cors.allowed_headers) {
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    out.insert(header::ACCESS_CONTROL_MAX_AGE, cors.max_age_secs.into());
    out.append(header::VARY, HeaderValue::from_static("origin"));
    Some(response)
}

/// Marks a response to a cross-origin request from an allowed origin.
pub fn decorate(cors: &CorsSettings, origin: &HeaderValue, headers: &mut HeaderMap) {
    if !origin.to_str().is_ok_and(|o| origin_allowed(cors, o)) {
        return;
    }
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        allow_origin_value(cors, origin),
    );
    if !cors.exposed_headers.is_empty()
        && let Some(v) = list(&cors.exposed_headers)
    {
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
    }
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}
