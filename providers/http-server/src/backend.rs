//! The backend of this provider is HTTP itself: a listening socket and its connections —
//! accept (bounded), TLS, HTTP/1.1 with keep-alive (HTTP/2 when TLS negotiates it),
//! slow-client guards, and a graceful close.
//!
//! Plain connections speak HTTP/1.1 only: telling HTTP/2 prior knowledge apart means reading
//! the first bytes without hyper's header timeout, which a silent client could hold open for
//! ever. Over TLS, ALPN decides and the handshake itself has a deadline.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types};
use tracing::{debug, info, warn};

use crate::handlers::{self, ListenerContext};
use crate::settings::{ServerSettings, TlsFiles};

/// Why a listener cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The address cannot be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS files are unusable.
    #[error("TLS for {addr}: {message}")]
    Tls {
        /// The address.
        addr: SocketAddr,
        /// What is wrong (file and reason).
        message: String,
    },
}

/// A running listener.
pub struct Listener {
    /// Where it listens (the bound address, port resolved).
    pub local_addr: SocketAddr,
    /// Its TLS files, if HTTPS.
    pub tls: Option<TlsFiles>,
    /// What its connections share (the routes among it).
    pub context: Arc<ListenerContext>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

fn tls_config(addr: SocketAddr, files: &TlsFiles) -> Result<TlsAcceptor, ListenError> {
    use pki_types::pem::PemObject as _;
    let tls_err = |message: String| ListenError::Tls { addr, message };
    let certs: Vec<pki_types::CertificateDer<'static>> =
        pki_types::CertificateDer::pem_file_iter(&files.cert)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| tls_err(format!("certificate file {}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(tls_err(format!(
            "certificate file {} holds no certificate",
            files.cert.display()
        )));
    }
    let key = pki_types::PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| tls_err(format!("key file {}: {e}", files.key.display())))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_err(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| tls_err(format!("certificate and key do not fit: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl Listener {
    /// Binds `addr` and starts accepting; requests go by `context`'s routes.
    pub async fn bind(
        addr: SocketAddr,
        tls: Option<TlsFiles>,
        settings: &ServerSettings,
        context: Arc<ListenerContext>,
    ) -> Result<Self, ListenError> {
        let acceptor = tls.as_ref().map(|t| tls_config(addr, t)).transpose()?;
        let socket = TcpListener::bind(addr)
            .await
            .map_err(|source| ListenError::Bind { addr, source })?;
        let local_addr = socket
            .local_addr()
            .map_err(|source| ListenError::Bind { addr, source })?;
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(
            socket,
            acceptor,
            settings.clone(),
            Arc::clone(&context),
            stop_rx,
        ));
        info!(%local_addr, https = tls.is_some(), "listening");
        Ok(Self {
            local_addr,
            tls,
            context,
            stop,
            task,
        })
    }

    /// Stops accepting at once (the port is free again) and lets open connections finish
    /// their requests within the drain timeout. The returned task ends when all are closed.
    pub fn close(self) -> JoinHandle<()> {
        self.stop.send_replace(true);
        self.task
    }
}

async fn accept_loop(
    socket: TcpListener,
    tls: Option<TlsAcceptor>,
    settings: ServerSettings,
    context: Arc<ListenerContext>,
    mut stop: watch::Receiver<bool>,
) {
    let local = socket.local_addr().ok();
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let settings = Arc::new(settings);
    loop {
        // Past the connection limit, stop accepting: clients wait in the kernel's backlog.
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let settings = Arc::clone(&settings);
        let context = Arc::clone(&context);
        tokio::spawn(async move {
            serve_connection(stream, peer, tls, &settings, context, watcher).await;
            drop(permit);
        });
    }
    // Free the port now; open connections finish their current requests.
    drop(socket);
    let open = graceful.count();
    if open > 0 {
        debug!(?local, open, "draining connections");
    }
    if tokio::time::timeout(settings.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(?local, deadline = ?settings.drain_timeout, "connections still open after the drain timeout; closing them");
    }
    info!(?local, "listener closed");
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    settings: &ServerSettings,
    context: Arc<ListenerContext>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let service = service_fn(move |req| handlers::serve(Arc::clone(&context), req));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_header_size(settings.max_header_bytes)
        .keep_alive(true);
    let result = match tls {
        None => watcher
            .watch(http1.serve_connection(TokioIo::new(stream), service))
            .await
            .map_err(|e| e.to_string()),
        Some(acceptor) => {
            let tls =
                match tokio::time::timeout(settings.header_read_timeout, acceptor.accept(stream))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            if h2 {
                let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                http2
                    .timer(TokioTimer::new())
                    .max_header_list_size(
                        u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX),
                    )
                    .keep_alive_interval(Some(std::time::Duration::from_secs(30)));
                watcher
                    .watch(http2.serve_connection(TokioIo::new(tls), service))
                    .await
                    .map_err(|e| e.to_string())
            } else {
                watcher
                    .watch(http1.serve_connection(TokioIo::new(tls), service))
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    };
    if let Err(e) = result {
        // Clients hanging up, timing out or sending garbage: theirs, not ours.
        debug!(%peer, error = %e, "connection ended with an error");
    }
}
