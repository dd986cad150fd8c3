//! Where component bytes come from: a file path, a `file://` URL, or an `http://` /
//! `https://` URL (system trust roots, a few redirects, a size cap, a timeout).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Largest component accepted from a URL.
pub const MAX_COMPONENT_BYTES: usize = 256 << 20;
/// Longest a download may take, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_REDIRECTS: usize = 5;

/// Why a component's bytes could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The file could not be read.
    #[error("cannot read component {reference}: {error}")]
    Read {
        /// The path or `file://` URL.
        reference: String,
        /// The OS's reason.
        error: std::io::Error,
    },
    /// The download failed.
    #[error("cannot download component {reference}: {reason}")]
    Download {
        /// The URL.
        reference: String,
        /// Why (connection, TLS, status, size, redirects).
        reason: String,
    },
    /// The download took longer than [`FETCH_TIMEOUT`].
    #[error("component {reference} was not downloaded within {FETCH_TIMEOUT:?}")]
    TimedOut {
        /// The URL.
        reference: String,
    },
    /// The reading task died.
    #[error("the task reading component {reference} failed: {error}")]
    Task {
        /// The path.
        reference: String,
        /// Why.
        error: tokio::task::JoinError,
    },
}

/// Reads a component from a file path or `file://` URL.
pub fn read_component(reference: &str) -> Result<Vec<u8>, FetchError> {
    let path = reference.strip_prefix("file://").unwrap_or(reference);
    std::fs::read(Path::new(path)).map_err(|error| FetchError::Read {
        reference: reference.to_string(),
        error,
    })
}

/// Loads a component from a file path, a `file://` URL or an `http(s)://` URL.
pub async fn load_component(reference: &str) -> Result<Vec<u8>, FetchError> {
    if !(reference.starts_with("http://") || reference.starts_with("https://")) {
        let owned = reference.to_string();
        return tokio::task::spawn_blocking(move || read_component(&owned))
            .await
            .map_err(|error| FetchError::Task {
                reference: reference.to_string(),
                error,
            })?;
    }
    tokio::time::timeout(FETCH_TIMEOUT, download(reference))
        .await
        .map_err(|_| FetchError::TimedOut {
            reference: reference.to_string(),
        })?
        .map_err(|reason| FetchError::Download {
            reference: reference.to_string(),
            reason,
        })
}

async fn download(reference: &str) -> Result<Vec<u8>, String> {
    let mut url: http::Uri = reference.parse().map_err(|e| format!("bad URL: {e}"))?;
    for _ in 0..=MAX_REDIRECTS {
        let response = get(&url).await?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| format!("{status} without a location"))?;
            url = resolve(&url, location)?;
            continue;
        }
        if !status.is_success() {
            return Err(format!("the server answered {status}"));
        }
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("download failed: {e}"))?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > MAX_COMPONENT_BYTES {
                    return Err(format!("larger than {MAX_COMPONENT_BYTES} bytes"));
                }
                bytes.extend_from_slice(&data);
            }
        }
        return Ok(bytes);
    }
    Err(format!("more than {MAX_REDIRECTS} redirects"))
}

/// A redirect target, absolute or relative to `base`.
fn resolve(base: &http::Uri, location: &str) -> Result<http::Uri, String> {
    let target: http::Uri = location
        .parse()
        .map_err(|e| format!("bad redirect {location:?}: {e}"))?;
    if target.scheme().is_some() {
        return Ok(target);
    }
    let mut parts = base.clone().into_parts();
    parts.path_and_query = target.path_and_query().cloned();
    http::Uri::from_parts(parts).map_err(|e| format!("bad redirect {location:?}: {e}"))
}

async fn get(url: &http::Uri) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let tls = match url.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("only http and https URLs can be fetched".into()),
    };
    let host = url.host().ok_or("the URL has no host")?.to_string();
    let port = url.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let request = hyper::Request::get(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(
            http::header::HOST,
            url.authority().map_or(host.as_str(), |a| a.as_str()),
        )
        .header(http::header::USER_AGENT, "trellis-host")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    if tls {
        let stream = tls_connector()?
            .connect(rustls_pki_name(&host)?, tcp)
            .await
            .map_err(|e| format!("TLS with {host} failed: {e}"))?;
        send(TokioIo::new(stream), request).await
    } else {
        send(TokioIo::new(tcp), request).await
    }
}

async fn send<I>(
    io: I,
    request: hyper::Request<Empty<bytes::Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "component download connection ended");
        }
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed: {e}"))
}

fn rustls_pki_name(
    host: &str,
) -> Result<tokio_rustls::rustls::pki_types::ServerName<'static>, String> {
    tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("bad TLS server name {host:?}: {e}"))
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        // A system certificate rustls cannot parse is skipped, like other TLS clients do.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err("no trusted root certificates found on this system".into());
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
