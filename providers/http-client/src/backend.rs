//! The HTTP client behind every link: hyper with pooled connections, HTTP/1.1 and HTTP/2,
//! rustls with the system's roots. Links share pools; one pool per connect timeout (hyper's
//! connector holds it), so a link's timeout is its own.
//!
//! Also what bounds a response in time: [`BetweenBytes`] fails a body that pauses longer
//! than its timeout, so a stalled server cannot hold a component forever.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use trellis_interfaces::http::ErrorCode;

/// A request body as the client sends it.
pub type OutgoingBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BodyError>;

/// A request body that failed on the caller's side (its wire stream ended with an error).
#[derive(Debug, thiserror::Error)]
#[error("the request body failed: {0}")]
pub struct BodyError(pub String);

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// rustls refused the TLS configuration.
    #[error("cannot configure TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// A pooled client.
pub type PooledClient = Client<HttpsConnector<HttpConnector>, OutgoingBody>;

/// The pooled clients, by connect timeout.
#[derive(Clone)]
pub struct Backend {
    tls: Arc<rustls::ClientConfig>,
    clients: Arc<Mutex<HashMap<Duration, PooledClient>>>,
}

impl Backend {
    /// A backend trusting the system's roots (those it can read).
    pub fn new() -> Result<Self, BackendError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for err in &native.errors {
            // Plain HTTP still works; HTTPS to a server these roots cannot verify fails with
            // `tls-certificate-error`, which names the cause to the component.
            tracing::warn!(error = %err, "cannot read some of the system's root certificates");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(added, ignored, "loaded the system's root certificates");
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            tls: Arc::new(tls),
            clients: Arc::default(),
        })
    }

    /// The pooled client whose connections are made within `connect_timeout`.
    pub fn client(&self, connect_timeout: Duration) -> PooledClient {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(connect_timeout)
            .or_insert_with(|| {
                let mut http = HttpConnector::new();
                http.enforce_http(false);
                http.set_connect_timeout(Some(connect_timeout));
                http.set_nodelay(true);
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config((*self.tls).clone())
                    .https_or_http()
                    .enable_all_versions()
                    .wrap_connector(http);
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(90))
                    .build(https)
            })
            .clone()
    }
}

/// What a failed request means for the component: the interface's error code.
pub fn error_code(err: &hyper_util::client::legacy::Error) -> ErrorCode {
    use std::error::Error as _;
    // The most specific cause first: an I/O error kind, a TLS error, a DNS failure.
    let mut cause = err.source();
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return ErrorCode::ConnectionRefused,
                std::io::ErrorKind::TimedOut => return ErrorCode::ConnectionTimeout,
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => {
                    return ErrorCode::ConnectionTerminated;
                }
                _ => {}
            }
            if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return tls_error(tls);
            }
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return tls_error(tls);
        }
        cause = e.source();
    }
    let text = format!("{err:#}");
    if err.is_connect() && text.contains("dns error") {
        return ErrorCode::DnsError(trellis_interfaces::http::DnsErrorPayload {
            rcode: None,
            info_code: None,
        });
    }
    if err.is_connect() {
        return ErrorCode::DestinationUnavailable;
    }
    ErrorCode::InternalError(Some(source_chain(err)))
}

fn tls_error(err: &rustls::Error) -> ErrorCode {
    match err {
        rustls::Error::InvalidCertificate(_) => ErrorCode::TlsCertificateError,
        rustls::Error::AlertReceived(alert) => {
            ErrorCode::TlsAlertReceived(trellis_interfaces::http::TlsAlertReceivedPayload {
                alert_id: None,
                alert_message: Some(format!("{alert:?}")),
            })
        }
        _ => ErrorCode::TlsProtocolError,
    }
}

/// `err` and its causes, for a message.
fn source_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

pin_project_lite::pin_project! {
    /// A response body that fails with `connection-read-timeout` when it pauses longer
    /// than its timeout between two frames.
    pub struct BetweenBytes<B> {
        #[pin]
        body: B,
        #[pin]
        pause: tokio::time::Sleep,
        timeout: Duration,
    }
}

impl<B> BetweenBytes<B> {
    /// `body`, allowed to pause at most `timeout`.
    pub fn new(body: B, timeout: Duration) -> Self {
        Self {
            body,
            pause: tokio::time::sleep(timeout),
            timeout,
        }
    }
}

impl<B: Body<Data = Bytes, Error = hyper::Error>> Body for BetweenBytes<B> {
    type Data = Bytes;
    type Error = ErrorCode;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ErrorCode>>> {
        let mut this = self.project();
        match this.body.poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + *this.timeout;
                this.pause.as_mut().reset(deadline);
                Poll::Ready(frame.map(|f| {
                    f.map_err(|e| {
                        tracing::debug!(error = %source_chain(&e), "response body failed");
                        ErrorCode::ConnectionTerminated
                    })
                }))
            }
            Poll::Pending => match this.pause.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(ErrorCode::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
