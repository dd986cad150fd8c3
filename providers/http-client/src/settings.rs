//! A link's configuration: which hosts its component may reach and the timeouts of its
//! requests. Parsed once per link put; a bad value fails the link with the reason.

use std::collections::HashMap;
use std::time::Duration;

use trellis_interfaces::http::server::RequestOptions;
use trellis_sdk::config::{ConfigValueError, ConfigValues};

/// Default time to establish a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time from sending a request to the first byte of its response.
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time between two pieces of a response body.
pub const DEFAULT_BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a link's configuration is unusable.
pub type ConfigError = ConfigValueError;

/// A host a link may reach: exact (`api.example.com`) or a subdomain wildcard
/// (`*.example.com`), on any port or on one (`api.example.com:8443`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Lowercase host, without the `*.` of a wildcard.
    host: String,
    /// Matches subdomains of `host` (not `host` itself).
    wildcard: bool,
    port: Option<u16>,
}

impl HostPattern {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.to_ascii_lowercase();
        let (host, port) = match text.rsplit_once(':') {
            // An IPv6 literal is bracketed: `[::1]:8080`.
            Some((host, port)) if !port.contains(']') => {
                let port = port.parse().map_err(|_| format!("{text:?}: bad port"))?;
                (host.to_string(), Some(port))
            }
            _ => (text.clone(), None),
        };
        let (host, wildcard) = match host.strip_prefix("*.") {
            Some(rest) => (rest.to_string(), true),
            None => (host, false),
        };
        if host.is_empty() || host.contains('*') || host.contains('/') {
            return Err(format!(
                "{text:?} is not a host (`example.com`, `*.example.com`, `example.com:8443`)"
            ));
        }
        Ok(Self {
            host,
            wildcard,
            port,
        })
    }

    /// Whether `host` (lowercase) on `port` matches.
    fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        if self.wildcard {
            host.strip_suffix(&self.host)
                .is_some_and(|prefix| prefix.ends_with('.') && prefix.len() > 1)
        } else {
            host == self.host
        }
    }
}

/// A link's settings.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// The hosts the component may reach; `None`: any (as wasmCloud 1.x's http-client).
    pub allowed_hosts: Option<Vec<HostPattern>>,
    /// The most each request may take to connect.
    pub connect_timeout: Duration,
    /// The most each request may wait for its response's first byte.
    pub first_byte_timeout: Duration,
    /// The most each response may pause between two pieces of its body.
    pub between_bytes_timeout: Duration,
}

/// The timeouts of one request: the caller's, capped by its link's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To connect.
    pub connect: Duration,
    /// To the response's first byte.
    pub first_byte: Duration,
    /// Between two pieces of the response body.
    pub between_bytes: Duration,
}

impl LinkSettings {
    /// Parses a link's config (keys are case-insensitive).
    pub fn parse(config: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let values = ConfigValues::new(config);
        let allowed_hosts = match values.get("allowed_hosts") {
            None => None,
            Some(_) => Some(
                values
                    .list("allowed_hosts")?
                    .iter()
                    .map(|h| HostPattern::parse(h))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|m| ConfigValueError::new("allowed_hosts", m))?,
            ),
        };
        Ok(Self {
            allowed_hosts,
            connect_timeout: values.millis("connect_timeout_ms", DEFAULT_CONNECT_TIMEOUT)?,
            first_byte_timeout: values
                .millis("first_byte_timeout_ms", DEFAULT_FIRST_BYTE_TIMEOUT)?,
            between_bytes_timeout: values
                .millis("between_bytes_timeout_ms", DEFAULT_BETWEEN_BYTES_TIMEOUT)?,
        })
    }

    /// Whether this link may reach `host` (any case) on `port`.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        match &self.allowed_hosts {
            None => true,
            Some(patterns) => patterns.iter().any(|p| p.matches(&host, port)),
        }
    }

    /// The timeouts of a request whose caller asked for `options`.
    pub fn timeouts(&self, options: RequestOptions) -> Timeouts {
        let cap = |asked: Option<Duration>, most: Duration| asked.map_or(most, |a| a.min(most));
        Timeouts {
            connect: cap(options.connect_timeout, self.connect_timeout),
            first_byte: cap(options.first_byte_timeout, self.first_byte_timeout),
            between_bytes: cap(options.between_bytes_timeout, self.between_bytes_timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<LinkSettings, ConfigError> {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LinkSettings::parse(&map)
    }

    #[test]
    fn hosts_are_matched_exactly_by_wildcard_and_by_port() {
        let s = settings(&[(
            "allowed_hosts",
            "api.example.com, *.svc.test, pinned.test:8443, [::1]:9000",
        )])
        .expect("valid");
        assert!(s.allows("API.example.com", 443));
        assert!(!s.allows("example.com", 443));
        assert!(!s.allows("evil-api.example.com", 443));
        assert!(s.allows("a.svc.test", 80));
        assert!(s.allows("a.b.svc.test", 80));
        assert!(
            !s.allows("svc.test", 80),
            "a wildcard is for subdomains only"
        );
        assert!(!s.allows("xsvc.test", 80));
        assert!(s.allows("pinned.test", 8443));
        assert!(!s.allows("pinned.test", 443));
        assert!(s.allows("[::1]", 9000));
        // Unset: any host, as 1.x; set but empty: none.
        assert!(settings(&[]).expect("valid").allows("anything.test", 1));
        assert!(
            !settings(&[("allowed_hosts", "[]")])
                .expect("valid")
                .allows("a.test", 1)
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        for (key, value) in [
            ("allowed_hosts", "*"),
            ("allowed_hosts", "a.test:http"),
            ("allowed_hosts", "http://a.test"),
            ("connect_timeout_ms", "0"),
            ("first_byte_timeout_ms", "soon"),
        ] {
            let err = settings(&[(key, value)]).expect_err(value).to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn the_callers_timeouts_are_capped_by_the_links() {
        let s = settings(&[("connect_timeout_ms", "1000")]).expect("valid");
        let t = s.timeouts(RequestOptions {
            connect_timeout: Some(Duration::from_secs(600)),
            first_byte_timeout: Some(Duration::from_millis(200)),
            between_bytes_timeout: None,
        });
        assert_eq!(t.connect, Duration::from_secs(1));
        assert_eq!(t.first_byte, Duration::from_millis(200));
        assert_eq!(t.between_bytes, DEFAULT_BETWEEN_BYTES_TIMEOUT);
    }
}
