//! Outgoing HTTP from a component: `wasi:http/outgoing-handler` in the host, carried as
//! `wrpc:http/outgoing-handler@0.1.0` to the http-client provider binary, which sends it to a
//! real HTTP server on loopback. Requests and responses pass exactly (bodies streamed both
//! ways); the link's allowed hosts and timeouts hold; a component without the link, a host
//! not allowed, a refused connection and a slow server each give the component the WASI
//! error code, never a trap.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use trellis_conformance::lattice::ProviderProcess;
use trellis_host::{Host, read_component};
use trellis_sdk::store::StoredLink;
use trellis_tests as common;
use trellis_tests::components::trellis_test::components::compat;
use trellis_wrpc_nats::Client;

const COMPAT_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../components/prebuilt/compat.wasm"
);

/// A server answering `/hello`, `/echo` (method, length and body back), `/big/N` (N bytes)
/// and `/slow` (its head after 3 s).
async fn server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let service = hyper::service::service_fn(answer);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    addr
}

async fn answer(
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_string();
    let method = request.method().to_string();
    let host = request
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = request.into_body().collect().await.map(|b| b.to_bytes());
    let body = body.unwrap_or_default();
    let response = |status: u16, body: Bytes| {
        hyper::Response::builder()
            .status(status)
            .header("x-method", method.as_str())
            .header("x-host", host.as_str())
            .header("x-length", body.len().to_string())
            .body(Full::new(body))
            .unwrap()
    };
    Ok(match path.as_str() {
        "/hello" => response(200, Bytes::from("hello from the server")),
        "/echo" => response(201, body),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            response(200, Bytes::from("late"))
        }
        p if p.starts_with("/big/") => {
            let n: usize = p[5..].parse().unwrap_or(0);
            response(
                200,
                (0..n).map(|i| (i % 251) as u8).collect::<Vec<_>>().into(),
            )
        }
        _ => response(404, Bytes::new()),
    })
}

struct Setup {
    _provider: ProviderProcess,
    _host: Host,
    _components: Vec<trellis_host::RunningComponent>,
    /// The linked component.
    linked: Client,
    /// The same component without a link for outgoing HTTP.
    unlinked: Client,
}

/// The component, linked to the provider with `allowed` as its allowed hosts, and an
/// unlinked copy.
async fn setup(server: SocketAddr, allowed: &[SocketAddr]) -> Setup {
    let lattice = common::unique_lattice("httpc");
    let provider = ProviderProcess::start_in("http-client", "http-client", &lattice, &[]).await;
    let link_cfg: HashMap<String, String> = [
        (
            "allowed_hosts",
            allowed
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
        ("first_byte_timeout_ms", "1000".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    provider
        .store
        .put_config("to-http", &link_cfg)
        .await
        .unwrap();
    let host = support::host(&lattice).await;
    let link = StoredLink::new(
        "linked",
        "http-client",
        "wasi",
        "http",
        ["outgoing-handler"],
    )
    .with_target_config(["to-http"]);
    host.admin().put_link(link).await.unwrap();
    let mut components = Vec::new();
    for id in ["linked", "unlinked"] {
        let wasm = read_component(COMPAT_WASM).unwrap();
        components.push(host.start_component(id, wasm, &[]).await.unwrap());
    }
    let linked = support::caller(&lattice, "linked").await;
    let url = format!("http://{server}/hello");
    let empty = Bytes::new();
    common::eventually(|| compat::http_request(&linked, None, "GET", &url, &empty))
        .await
        .unwrap()
        .expect("the link is served");
    Setup {
        _provider: provider,
        _host: host,
        _components: components,
        unlinked: support::caller(&lattice, "unlinked").await,
        linked,
    }
}

/// A GET through the component that must succeed: status, headers, body.
async fn get(c: &Client, url: &str) -> (u16, Vec<(String, String)>, Bytes) {
    compat::http_request(c, None, "GET", url, &Bytes::new())
        .await
        .expect("the component answers")
        .expect("a response")
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_reach_allowed_hosts_through_the_http_client_provider() {
    let addr = server().await;
    let s = setup(addr, &[addr]).await;
    let c = &s.linked;

    let (status, headers, body) = get(c, &format!("http://{addr}/hello")).await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"hello from the server");
    assert_eq!(header(&headers, "x-method"), Some("GET"));
    assert_eq!(header(&headers, "x-host"), Some(&*addr.to_string()));

    // 3 MiB up and 2 MiB down through host, lattice and provider (sizes that debug builds
    // move well within the host's 10 s execution deadline).
    let upload: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 253) as u8).collect();
    let (status, headers, body) = compat::http_request(
        c,
        None,
        "PUT",
        &format!("http://{addr}/echo"),
        &Bytes::from(upload.clone()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(status, 201);
    assert_eq!(header(&headers, "x-method"), Some("PUT"));
    assert_eq!(
        header(&headers, "x-length"),
        Some(&*upload.len().to_string())
    );
    assert!(body[..] == upload[..], "the echoed body differs");
    let n = 2 << 20;
    let (_, _, body) = get(c, &format!("http://{addr}/big/{n}")).await;
    assert_eq!(body.len(), n);
    assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_refused_slow_and_unlinked_requests_are_wasi_errors() {
    let addr = server().await;
    // A port nobody listens on (allowed, so that the request gets as far as connecting).
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let s = setup(addr, &[addr, closed]).await;
    let c = &s.linked;
    let expect_err = async |client: &Client, url: String| {
        compat::http_request(client, None, "GET", &url, &Bytes::new())
            .await
            .expect("the component answers (no trap)")
            .expect_err("an error code")
    };
    // The same server by another name is not on the link's list.
    let err = expect_err(c, format!("http://localhost:{}/hello", addr.port())).await;
    assert_eq!(err, "ErrorCode::HttpRequestDenied");
    let err = expect_err(c, format!("http://{closed}/hello")).await;
    assert_eq!(err, "ErrorCode::ConnectionRefused");
    // The server answers after 3 s; the link allows 1 s to the first byte.
    let err = expect_err(c, format!("http://{addr}/slow")).await;
    assert_eq!(err, "ErrorCode::HttpResponseTimeout");
    // No link for outgoing HTTP: denied, as a WASI error.
    let err = expect_err(&s.unlinked, format!("http://{addr}/hello")).await;
    assert_eq!(err, "ErrorCode::HttpRequestDenied");
    // The component serves on.
    let (status, _, _) = get(c, &format!("http://{addr}/hello")).await;
    assert_eq!(status, 200);
}
