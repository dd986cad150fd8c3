//! Configuration: the provider's own (routing mode, listener defaults and limits) and each
//! link's (where its route is, and how requests over it are handled). Parsed once per put;
//! a bad value fails the link with the key and the reason (never the value).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::Method;
use trellis_sdk::config::{ConfigValueError, ConfigValues};

/// How long the component may take to send its response head.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to send a request's headers (slowloris).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections may finish their requests when a listener closes (at
/// shutdown the provider's shutdown deadline, 10 s by default, also bounds it).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections per listener; more wait in the kernel's backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Bytes of request line and headers a connection may buffer (HTTP/1: larger is 431).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 << 10;

fn bad(key: &str, message: impl Into<String>) -> ConfigValueError {
    ConfigValueError::new(key, message)
}

/// Which link keys choose a route (1.x `routing_mode`; Trellis accepts address, path and
/// host together in any mode, the mode only says which are required).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoutingMode {
    /// A listener per address; `path` and `host` optional.
    Address,
    /// Every link must give a `path` prefix.
    Path,
    /// Every link must give a `host`.
    Host,
}

/// The provider's own config.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Which keys links must set.
    pub mode: RoutingMode,
    /// The address of links that give none.
    pub default_address: SocketAddr,
    /// Slowloris guard.
    pub header_read_timeout: Duration,
    /// Graceful drain bound.
    pub drain_timeout: Duration,
    /// Connections per listener.
    pub max_connections: usize,
    /// Header section bound.
    pub max_header_bytes: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            mode: RoutingMode::Address,
            // Where a link listens when neither it nor the provider config says.
            default_address: SocketAddr::from(([127, 0, 0, 1], 8000)),
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

fn address(key: &str, value: &str) -> Result<SocketAddr, ConfigValueError> {
    value.parse().map_err(|_| {
        bad(
            key,
            "not an IP:PORT address such as 127.0.0.1:8000 or [::1]:8000",
        )
    })
}

impl ServerSettings {
    /// Parses the provider config (keys case-insensitive).
    pub fn parse(config: &HashMap<String, String>) -> Result<Self, ConfigValueError> {
        let v = ConfigValues::new(config);
        let d = Self::default();
        let mode = match v
            .get("routing_mode")
            .map(|m| m.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("address") => RoutingMode::Address,
            Some("path") => RoutingMode::Path,
            Some("host") => RoutingMode::Host,
            Some(_) => return Err(bad("routing_mode", "must be address, path or host")),
        };
        // 1.x named the shared address of path mode `listen_address`; either key works.
        let default_address = match v.get("default_address").or_else(|| v.get("listen_address")) {
            Some(a) => address("default_address", &a)?,
            None => d.default_address,
        };
        Ok(Self {
            mode,
            default_address,
            header_read_timeout: v.millis("header_read_timeout_ms", d.header_read_timeout)?,
            drain_timeout: v.millis("drain_timeout_ms", d.drain_timeout)?,
            max_connections: v.number_in("max_connections", 1..=1_000_000, d.max_connections)?,
            max_header_bytes: v.number_in(
                "max_header_bytes",
                8192..=(16 << 20),
                d.max_header_bytes,
            )?,
        })
    }
}

/// TLS files of a listener.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Cross-origin rules of a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorsSettings {
    /// Allowed origins; `*` allows any.
    pub allowed_origins: Vec<String>,
    /// Allowed request headers (lower case).
    pub allowed_headers: Vec<String>,
    /// Allowed methods.
    pub allowed_methods: Vec<String>,
    /// Response headers scripts may read.
    pub exposed_headers: Vec<String>,
    /// How long a preflight answer may be cached.
    pub max_age_secs: u64,
}

/// A link's route and handling.
#[derive(Clone, Debug)]
pub struct LinkSettings {
    /// The listener.
    pub address: SocketAddr,
    /// Path prefix (normalised: leading `/`, no trailing `/` but for the root).
    pub path: String,
    /// Host name to match (lower case, no port), if routing by host.
    pub host: Option<String>,
    /// TLS, if the listener serves HTTPS.
    pub tls: Option<TlsFiles>,
    /// Time for the component's response head (then 504).
    pub timeout: Duration,
    /// Largest request body (then 413); `None`: no limit (bodies stream, memory stays bounded).
    pub max_content_len: Option<u64>,
    /// Only `GET` and `HEAD` (others 405).
    pub readonly: bool,
    /// `cache-control` added to responses that carry none.
    pub cache_control: Option<http::HeaderValue>,
    /// CORS, when `cors_allowed_origins` is set.
    pub cors: Option<CorsSettings>,
}

/// Normalises a path prefix: `api/` → `/api`, `/` stays `/`.
pub fn normalise_prefix(raw: &str) -> Result<String, ConfigValueError> {
    let trimmed = raw.trim().trim_end_matches('/');
    if trimmed.contains(['?', '#', ' ']) {
        return Err(bad("path", "a path prefix has no query, fragment or space"));
    }
    Ok(if trimmed.is_empty() {
        "/".to_string()
    } else if trimmed.starts_with('/') {
        trimmed.to_string()
    } else {
        format!("/{trimmed}")
    })
}

impl LinkSettings {
    /// Parses a link's source config under the provider's settings.
    pub fn parse(
        config: &HashMap<String, String>,
        server: &ServerSettings,
    ) -> Result<Self, ConfigValueError> {
        let v = ConfigValues::new(config);
        let address = match v.get("address") {
            Some(a) => address("address", &a)?,
            None => server.default_address,
        };
        let path = match v.get("path") {
            Some(p) => normalise_prefix(&p)?,
            None if server.mode == RoutingMode::Path => {
                return Err(bad("path", "required: the provider routes by path"));
            }
            None => "/".to_string(),
        };
        let host = match v.get("host") {
            Some(h) => {
                let h = h.to_ascii_lowercase();
                if h.contains(['/', ' ', ':']) {
                    return Err(bad("host", "a host name without scheme, port or path"));
                }
                Some(h)
            }
            None if server.mode == RoutingMode::Host => {
                return Err(bad("host", "required: the provider routes by host"));
            }
            None => None,
        };
        let tls = match (v.get("tls_cert_file"), v.get("tls_priv_key_file")) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.into(),
                key: key.into(),
            }),
            (None, None) => None,
            (Some(_), None) => return Err(bad("tls_priv_key_file", "required with tls_cert_file")),
            (None, Some(_)) => return Err(bad("tls_cert_file", "required with tls_priv_key_file")),
        };
        let cache_control = match v.get("cache_control") {
            Some(c) => Some(
                http::HeaderValue::from_str(&c)
                    .map_err(|_| bad("cache_control", "not a valid header value"))?,
            ),
            None => None,
        };
        Ok(Self {
            address,
            path,
            host,
            tls,
            timeout: v.millis("timeout_ms", DEFAULT_TIMEOUT)?,
            max_content_len: v.byte_size("max_content_len")?,
            readonly: v.flag("readonly_mode")?,
            cache_control,
            cors: cors(&v)?,
        })
    }
}

fn cors(v: &ConfigValues<'_>) -> Result<Option<CorsSettings>, ConfigValueError> {
    let origins = v.list("cors_allowed_origins")?;
    if origins.is_empty() {
        return Ok(None);
    }
    for o in &origins {
        if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
            return Err(bad(
                "cors_allowed_origins",
                "each origin is * or starts with http:// or https://",
            ));
        }
    }
    let mut headers = v.list("cors_allowed_headers")?;
    if headers.is_empty() {
        headers = [
            "accept",
            "accept-language",
            "content-type",
            "content-language",
        ]
        .map(String::from)
        .to_vec();
    }
    let mut methods = v.list("cors_allowed_methods")?;
    if methods.is_empty() {
        methods = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]
            .map(String::from)
            .to_vec();
    }
    for m in &methods {
        Method::from_bytes(m.as_bytes())
            .map_err(|_| bad("cors_allowed_methods", "not a list of HTTP methods"))?;
    }
    let max_age = v.number_in("cors_max_age_secs", 0..=86_400 * 7, 300)?;
    Ok(Some(CorsSettings {
        allowed_origins: origins,
        allowed_headers: headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
        allowed_methods: methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
        exposed_headers: v.list("cors_exposed_headers")?,
        max_age_secs: max_age as u64,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults() {
        let s = LinkSettings::parse(&map(&[]), &ServerSettings::default()).unwrap();
        assert_eq!(s.address.to_string(), "127.0.0.1:8000");
        assert_eq!(s.path, "/");
        assert_eq!(s.host, None);
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        assert!(s.cors.is_none() && s.tls.is_none() && !s.readonly);
    }

    #[test]
    fn routes_and_limits() {
        let server = ServerSettings::parse(&map(&[
            ("ROUTING_MODE", "path"),
            ("listen_address", "0.0.0.0:9000"),
        ]))
        .unwrap();
        assert_eq!(server.mode, RoutingMode::Path);
        let err = LinkSettings::parse(&map(&[]), &server).unwrap_err();
        assert_eq!(err.key, "path");
        let s = LinkSettings::parse(
            &map(&[
                ("path", "api/v1/"),
                ("Host", "Example.COM"),
                ("max_content_len", "10M"),
                ("timeout_ms", "250"),
            ]),
            &server,
        )
        .unwrap();
        assert_eq!(s.address.to_string(), "0.0.0.0:9000");
        assert_eq!(s.path, "/api/v1");
        assert_eq!(s.host.as_deref(), Some("example.com"));
        assert_eq!(s.max_content_len, Some(10 << 20));
        assert_eq!(s.timeout, Duration::from_millis(250));
    }

    #[test]
    fn bad_values_name_their_key() {
        let server = ServerSettings::default();
        for (pairs, key) in [
            (&[("address", "localhost")][..], "address"),
            (&[("tls_cert_file", "/c.pem")][..], "tls_priv_key_file"),
            (
                &[("cors_allowed_origins", "example.com")][..],
                "cors_allowed_origins",
            ),
            (&[("readonly_mode", "yes")][..], "readonly_mode"),
            (&[("host", "a.com:80")][..], "host"),
        ] {
            let err = LinkSettings::parse(&map(pairs), &server).unwrap_err();
            assert_eq!(err.key, key, "{pairs:?}");
        }
        assert_eq!(
            ServerSettings::parse(&map(&[("routing_mode", "dns")]))
                .unwrap_err()
                .key,
            "routing_mode"
        );
    }
}
