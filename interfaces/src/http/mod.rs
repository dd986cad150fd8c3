//! HTTP on the wire, both handlers wasmCloud 1.x speaks:
//!
//! - `wrpc:http/incoming-handler@0.1.0`: what an http-server provider calls ([`client`]) and
//!   what a host serves for a component exporting `wasi:http/incoming-handler`
//!   ([`server::Handler`], served by [`server::serve`]);
//! - `wrpc:http/outgoing-handler@0.1.0`: what a host calls for a component's
//!   `wasi:http/outgoing-handler` ([`client::send_outgoing`]) and what an http-client
//!   provider serves ([`server::OutgoingHandler`], served by [`server::serve_outgoing`]).
//!
//! Handlers see only the `http` crate's types and a [`Body`] of `Bytes` frames; this module
//! converts them to and from the wire's fields, methods and schemes. Both sides decode by
//! hand what a hostile peer could make the generated decoders over-allocate for (header
//! lists, bodies).

pub mod bindings;
pub mod client;
mod plain;
pub mod server;

pub use plain::Body;

pub use bindings::wasi::http0_2_0::types::{
    DnsErrorPayload, ErrorCode, FieldSizePayload, Method, Scheme, TlsAlertReceivedPayload,
};
pub use bindings::wrpc::http::types::{Fields, Request, Response};

use bytes::Bytes;

/// The wire instance of the incoming handler.
pub const INSTANCE: &str = "wrpc:http/incoming-handler@0.1.0";
/// The wire instance of the outgoing handler.
pub const OUTGOING_INSTANCE: &str = "wrpc:http/outgoing-handler@0.1.0";
/// The one function of either.
pub const FUNC: &str = "handle";

/// A field of the wire that is not a valid HTTP header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// The name is not a header name.
    #[error("invalid header name {0:?}")]
    Name(String),
    /// A value of the named header is not a header value.
    #[error("invalid value of header {0:?}")]
    Value(String),
}

/// Wire fields (name, values) as a header map, the order of values kept; the first invalid
/// name or value fails it.
pub fn to_header_map(fields: Fields) -> Result<::http::HeaderMap, FieldError> {
    let mut map = ::http::HeaderMap::new();
    for (name, values) in fields {
        let header = ::http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| FieldError::Name(name.clone()))?;
        for value in values {
            let value = ::http::HeaderValue::from_maybe_shared(value)
                .map_err(|_| FieldError::Value(name.clone()))?;
            map.append(header.clone(), value);
        }
    }
    Ok(map)
}

/// Wire fields as a header map, leaving out what is not valid HTTP (for trailers, which
/// arrive after the status and so cannot fail the response any more).
pub fn to_header_map_lossy(fields: Fields) -> ::http::HeaderMap {
    let mut map = ::http::HeaderMap::new();
    for (name, values) in fields {
        let Ok(name) = ::http::HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        for value in values {
            if let Ok(value) = ::http::HeaderValue::from_maybe_shared(value) {
                map.append(name.clone(), value);
            }
        }
    }
    map
}

/// A header map as wire fields: one entry per name, its values in order.
pub fn from_header_map(map: &::http::HeaderMap) -> Fields {
    fields_where(map, |_| true)
}

/// The headers of `map` that `keep` keeps, as wire fields (one entry per name, values in
/// order).
pub fn fields_where(map: &::http::HeaderMap, keep: impl Fn(&::http::HeaderName) -> bool) -> Fields {
    map.keys()
        .filter(|name| keep(name))
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

/// An `http` method as the wire's.
pub fn method_to_wire(m: &::http::Method) -> Method {
    match *m {
        ::http::Method::GET => Method::Get,
        ::http::Method::HEAD => Method::Head,
        ::http::Method::POST => Method::Post,
        ::http::Method::PUT => Method::Put,
        ::http::Method::DELETE => Method::Delete,
        ::http::Method::CONNECT => Method::Connect,
        ::http::Method::OPTIONS => Method::Options,
        ::http::Method::TRACE => Method::Trace,
        ::http::Method::PATCH => Method::Patch,
        ref other => Method::Other(other.as_str().to_string()),
    }
}

/// The wire's method as an `http` one (`http-request-method-invalid` when it is not a
/// token).
pub fn method_from_wire(m: Method) -> Result<::http::Method, ErrorCode> {
    Ok(match m {
        Method::Get => ::http::Method::GET,
        Method::Head => ::http::Method::HEAD,
        Method::Post => ::http::Method::POST,
        Method::Put => ::http::Method::PUT,
        Method::Delete => ::http::Method::DELETE,
        Method::Connect => ::http::Method::CONNECT,
        Method::Options => ::http::Method::OPTIONS,
        Method::Trace => ::http::Method::TRACE,
        Method::Patch => ::http::Method::PATCH,
        Method::Other(m) => ::http::Method::from_bytes(m.as_bytes())
            .map_err(|_| ErrorCode::HttpRequestMethodInvalid)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_maps_round_trip_with_value_order() {
        let fields: Fields = vec![
            ("x-a".into(), vec![Bytes::from("1"), Bytes::from("2")]),
            ("content-type".into(), vec![Bytes::from("text/plain")]),
        ];
        let map = to_header_map(fields.clone()).expect("valid");
        assert_eq!(from_header_map(&map), fields);
        assert_eq!(
            fields_where(&map, |n| n.as_str() != "x-a"),
            fields[1..].to_vec()
        );
    }

    #[test]
    fn invalid_fields_are_named_or_left_out() {
        let bad_name: Fields = vec![("bad name".into(), vec![Bytes::from("v")])];
        assert_eq!(
            to_header_map(bad_name.clone()),
            Err(FieldError::Name("bad name".into()))
        );
        let bad_value: Fields = vec![
            ("x-ok".into(), vec![Bytes::from("v")]),
            ("x-bad".into(), vec![Bytes::from("a\nb")]),
        ];
        assert_eq!(
            to_header_map(bad_value.clone()),
            Err(FieldError::Value("x-bad".into()))
        );
        let lossy = to_header_map_lossy([bad_name, bad_value].concat());
        assert_eq!(lossy.len(), 1);
        assert_eq!(lossy["x-ok"], "v");
    }

    #[test]
    fn methods_round_trip() {
        for m in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
            "PROPFIND",
        ] {
            let m = ::http::Method::from_bytes(m.as_bytes()).expect("a method");
            assert_eq!(method_from_wire(method_to_wire(&m)).expect("valid"), m);
        }
        assert!(matches!(
            method_from_wire(Method::Other("not a token".into())),
            Err(ErrorCode::HttpRequestMethodInvalid)
        ));
    }
}
