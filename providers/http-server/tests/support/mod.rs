//! Set-up shared by the http-server tests: a host running the `web` test component, the
//! provider binary as a process, links written to the lattice store, and a small HTTP/1.1
//! client on hyper.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use tokio::net::TcpStream;
use trellis_conformance::lattice::ProviderProcess;
use trellis_host::engine::Limits;
use trellis_host::{Host, HostOptions, read_component};
use trellis_sdk::admin::ping_links;
use trellis_sdk::link::{LinkState, LinkStatus};
use trellis_sdk::store::StoredLink;
use trellis_sdk::subjects::LatticeSubjects;
use trellis_tests as common;

pub const WEB_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/components/prebuilt/web.wasm"
);

pub const PROVIDER: &str = "http-server";

/// A request body for the tests' client.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The provider process and a host on its lattice.
pub struct Lattice {
    pub provider: ProviderProcess,
    pub host: Host,
}

/// Starts the provider (with `args`) and a host whose instances may run `deadline`.
pub async fn lattice(args: &[&str], deadline: Duration) -> Lattice {
    // The host's logs, at RUST_LOG's level (warnings by default).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let provider = ProviderProcess::start_with(PROVIDER, PROVIDER, args).await;
    let host = Host::new(
        common::nats().await,
        HostOptions {
            lattice: provider.lattice.clone(),
            nats_url: common::nats_url(),
            limits: Limits {
                execution_deadline: deadline,
                ..Limits::default()
            },
            ..HostOptions::default()
        },
    )
    .await
    .expect("host did not start");
    Lattice { provider, host }
}

impl Lattice {
    /// Runs the `web` component as `id`, answering `x-served-by: id`.
    pub async fn web(&self, id: &str) {
        let cfg = format!("{id}-cfg");
        self.host
            .admin()
            .put_config(&cfg, &HashMap::from([("name".to_string(), id.to_string())]))
            .await
            .expect("put config");
        let component = self
            .host
            .start_component(id, read_component(WEB_WASM).expect("web.wasm"), &[cfg])
            .await
            .expect("start web");
        // Keep it running for the test's life.
        std::mem::forget(component);
    }

    /// Links the provider to component `target` as link `name` with source config `config`.
    pub async fn link(&self, name: &str, target: &str, config: &[(&str, String)]) {
        let cfg_name = format!("http-{name}");
        let config: HashMap<String, String> = config
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        self.provider
            .store
            .put_config(&cfg_name, &config)
            .await
            .expect("put config");
        self.provider
            .store
            .put_link(
                StoredLink::new(PROVIDER, target, "wasi", "http", ["incoming-handler"])
                    .named(name)
                    .with_source_config([cfg_name]),
            )
            .await
            .expect("put link");
    }

    /// Deletes link `name`.
    pub async fn unlink(&self, name: &str) {
        let removed = self
            .provider
            .store
            .delete_link(PROVIDER, name, "wasi", "http")
            .await
            .expect("delete link");
        assert_eq!(removed, 1, "link {name} was not there");
    }

    /// The provider's links, by link name, from link ping.
    pub async fn ping(&self) -> HashMap<String, LinkStatus> {
        let subjects = LatticeSubjects::new(&self.provider.lattice).expect("lattice");
        let replies = ping_links(
            &common::nats().await,
            &subjects,
            Some(PROVIDER),
            Duration::from_millis(500),
        )
        .await
        .expect("ping");
        replies
            .into_iter()
            .flat_map(|r| r.links)
            .map(|s| (s.link.name.clone(), s))
            .collect()
    }

    /// Waits until link `name` is reported, then returns its state.
    pub async fn link_state(&self, name: &str) -> LinkState {
        for _ in 0..100 {
            if let Some(s) = self.ping().await.remove(name) {
                return s.state;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("link {name} never showed up in link ping");
    }
}

/// A loopback address with a port free right now.
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

pub fn empty() -> Body {
    Empty::new().boxed_unsync()
}

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).boxed_unsync()
}

/// A body streamed from `chunks`.
pub fn streamed(chunks: impl Stream<Item = Bytes> + Send + 'static) -> Body {
    StreamBody::new(chunks.map(|c| Ok(Frame::data(c)))).boxed_unsync()
}

/// One HTTP/1.1 connection.
pub struct Conn {
    send: hyper::client::conn::http1::SendRequest<Body>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        let (send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(std::io::Error::other)?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { send, task })
    }

    pub async fn send(&mut self, req: Request<Body>) -> hyper::Result<Response<Incoming>> {
        self.send.ready().await?;
        self.send.send_request(req).await
    }
}

/// `method path` to `addr` with `headers` (a `host` header is added unless given).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        b = b.header("host", addr.to_string());
    }
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(body).expect("request")
}

/// Sends one request on a new connection.
pub async fn send(addr: SocketAddr, req: Request<Body>) -> Response<Incoming> {
    let mut conn = Conn::open(addr).await.expect("connect");
    conn.send(req).await.expect("request failed")
}

/// GET `path` with `headers`.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response<Incoming> {
    send(addr, request(addr, "GET", path, headers, empty())).await
}

/// The whole body.
pub async fn text(response: Response<Incoming>) -> String {
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The first value of `name`.
pub fn header(response: &Response<Incoming>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Waits until a GET of `path` on `addr` is answered by `component` (`x-served-by`).
pub async fn wait_served(addr: SocketAddr, path: &str, host: Option<&str>, component: &str) {
    let mut last = String::new();
    for _ in 0..200 {
        let headers: Vec<(&str, &str)> = host.map(|h| ("host", h)).into_iter().collect();
        if let Ok(mut conn) = Conn::open(addr).await
            && let Ok(res) = conn
                .send(request(addr, "GET", path, &headers, empty()))
                .await
        {
            let by = header(&res, "x-served-by");
            if by.as_deref() == Some(component) {
                return;
            }
            last = format!("status {} served by {by:?}", res.status());
        } else {
            last = "connection failed".into();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} on {addr} was never served by {component}: {last}");
}

pub fn fnv1a(h: u64, data: &[u8]) -> u64 {
    data.iter()
        .fold(h, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// A runtime with large thread stacks: the futures of streaming interfaces are large in
/// unoptimised builds.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(16 << 20)
        .enable_all()
        .build()
        .expect("runtime")
}
