//! The http-server provider binary in front of real components in a host, on a real
//! nats-server: requests and responses pass exactly, routes follow links (address, path
//! prefix, host), failures become the right status, bad clients are cut off without
//! disturbing anyone else, and shutdown drains.

mod support;

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::BodyExt as _;
use support::*;
use trellis_sdk::link::LinkState;
use trellis_tests as common;

fn addr_cfg(addr: std::net::SocketAddr) -> (&'static str, String) {
    ("address", addr.to_string())
}

#[test]
fn requests_routes_and_failures() {
    runtime().block_on(async { tokio::spawn(routes_and_failures()).await.unwrap() });
}

async fn routes_and_failures() {
    let l = lattice(&[], Duration::from_secs(10)).await;
    for id in ["web-a", "web-b", "web-c"] {
        l.web(id).await;
    }
    let addr = free_addr();
    l.link("a", "web-a", &[addr_cfg(addr)]).await;
    l.link("b", "web-b", &[addr_cfg(addr), ("path", "/b".into())])
        .await;
    l.link("c", "web-c", &[addr_cfg(addr), ("host", "c.test".into())])
        .await;
    l.link(
        "slow",
        "web-a",
        &[
            addr_cfg(addr),
            ("host", "slow.test".into()),
            ("timeout_ms", "300".into()),
        ],
    )
    .await;
    wait_served(addr, "/", None, "web-a").await;
    wait_served(addr, "/b", None, "web-b").await;
    wait_served(addr, "/", Some("c.test"), "web-c").await;
    for name in ["a", "b", "c", "slow"] {
        assert_eq!(l.link_state(name).await, LinkState::Active, "link {name}");
    }
    routes_and_round_trips(addr).await;
    failures(addr).await;
    let squatter = refused_links(&l, addr).await;
    deleted_links(&l, addr).await;
    drop(squatter);
}

/// Requests reach the route their path and host pick, and pass exactly both ways.
async fn routes_and_round_trips(addr: std::net::SocketAddr) {
    // GET round trip: status, headers and body as the component sent them.
    let res = get(addr, "/", &[]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "content-type").as_deref(), Some("text/plain"));
    assert_eq!(text(res).await, "hello from trellis\n");

    // Longest prefix at segment boundaries; the path reaches the component unchanged.
    let res = get(addr, "/b/some/thing", &[]).await;
    assert_eq!(header(&res, "x-served-by").as_deref(), Some("web-b"));
    assert_eq!(
        res.status(),
        404,
        "the component's own 404 for /b/some/thing"
    );
    let res = get(addr, "/bx", &[]).await;
    assert_eq!(header(&res, "x-served-by").as_deref(), Some("web-a"));

    // Host routing: case and port do not matter; unknown hosts fall back to host-less routes.
    let res = get(addr, "/", &[("host", "C.Test:1234")]).await;
    assert_eq!(header(&res, "x-served-by").as_deref(), Some("web-c"));
    let res = get(addr, "/", &[("host", "other.test")]).await;
    assert_eq!(header(&res, "x-served-by").as_deref(), Some("web-a"));

    // POST round trip with repeated headers, in order, and the request described exactly.
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 256) as u8).collect();
    let req = request(
        addr,
        "POST",
        "/echo?q=1&r=%20",
        &[
            ("x-multi", "one"),
            ("x-multi", "two"),
            ("content-type", "application/x-test"),
        ],
        full(payload.clone()),
    );
    let res = send(addr, req).await;
    assert_eq!(res.status(), 200);
    let multi: Vec<_> = res
        .headers()
        .get_all("x-multi")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(multi, ["one", "two"]);
    assert_eq!(header(&res, "x-method").as_deref(), Some("POST"));
    assert_eq!(header(&res, "x-path").as_deref(), Some("/echo?q=1&r=%20"));
    assert_eq!(
        header(&res, "x-authority").as_deref(),
        Some(&*addr.to_string())
    );
    assert_eq!(header(&res, "x-scheme").as_deref(), Some("http"));
    assert_eq!(
        header(&res, "content-type").as_deref(),
        Some("application/x-test")
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(body == payload, "echoed body differs");

    // Status and repeated response headers exactly.
    let res = get(addr, "/status/418", &[]).await;
    assert_eq!(res.status(), 418);
    let cookies: Vec<_> = res.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);

    // Keep-alive: many requests on one connection.
    let mut conn = Conn::open(addr).await.unwrap();
    for i in 0..20 {
        let res = conn
            .send(request(addr, "GET", "/", &[], empty()))
            .await
            .unwrap_or_else(|e| panic!("request {i} on a kept-alive connection: {e}"));
        assert_eq!(text(res).await, "hello from trellis\n");
    }
}

/// A component's failures become the right status; the listener keeps serving.
async fn failures(addr: std::net::SocketAddr) {
    // A component that traps is a 500 without its internals; the listener keeps serving.
    let res = get(addr, "/trap", &[]).await;
    assert_eq!(res.status(), 500);
    let msg = text(res).await;
    assert!(msg.contains("component web-a failed"), "{msg}");
    assert!(!msg.contains("panicked"), "trap details leaked: {msg}");
    let res = get(addr, "/", &[]).await;
    assert_eq!(res.status(), 200);

    // A component slower than the route's timeout is a 504.
    let started = Instant::now();
    let res = get(addr, "/sleep/3000", &[("host", "slow.test")]).await;
    assert_eq!(res.status(), 504);
    assert!(text(res).await.contains("did not answer within 300 ms"));
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// Links that cannot be served fail with the reason in link ping; answers the listener that
/// holds a port, to be kept until the end of the test.
async fn refused_links(l: &Lattice, addr: std::net::SocketAddr) -> std::net::TcpListener {
    // A second link claiming a taken route fails, with the holder named in link ping.
    l.link("dup", "web-c", &[addr_cfg(addr), ("path", "/b/".into())])
        .await;
    match l.link_state("dup").await {
        LinkState::Failed { error } => {
            assert!(error.contains("already taken"), "{error}");
            assert!(error.contains("web-b"), "{error}");
        }
        other => panic!("duplicate route accepted: {other:?}"),
    }
    let res = get(addr, "/b", &[]).await;
    assert_eq!(header(&res, "x-served-by").as_deref(), Some("web-b"));

    // A port someone else holds fails the link with the OS error.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap();
    l.link("conflict", "web-a", &[addr_cfg(taken)]).await;
    match l.link_state("conflict").await {
        LinkState::Failed { error } => {
            assert!(
                error.contains(&format!("cannot listen on {taken}")),
                "{error}"
            );
            assert!(error.to_lowercase().contains("in use"), "{error}");
        }
        other => panic!("bind conflict not reported: {other:?}"),
    }

    // A link for another interface is refused.
    l.provider
        .store
        .put_link(
            trellis_sdk::store::StoredLink::new(PROVIDER, "web-a", "wasi", "keyvalue", ["store"])
                .named("wrong"),
        )
        .await
        .unwrap();
    match l.link_state("wrong").await {
        LinkState::Failed { error } => assert!(error.contains("incoming-handler"), "{error}"),
        other => panic!("wrong interface accepted: {other:?}"),
    }
    squatter
}

/// Deleted links take their routes with them, and the listener closes with its last route.
async fn deleted_links(l: &Lattice, addr: std::net::SocketAddr) {
    // Link delete: the route goes (requests fall back to the next prefix), and the
    // listener closes with its last route.
    l.unlink("b").await;
    wait_served(addr, "/b", None, "web-a").await;
    l.unlink("dup").await;
    l.unlink("a").await;
    let mut gone = false;
    for _ in 0..100 {
        let res = get(addr, "/", &[]).await;
        if res.status() == 404 {
            assert!(text(res).await.contains("no route for /"));
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "route of a deleted link still served");
    l.unlink("c").await;
    l.unlink("slow").await;
    let mut closed = false;
    for _ in 0..100 {
        if Conn::open(addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        closed,
        "listener still open after its last link was deleted"
    );
}

#[test]
fn streams_100_mib_both_ways_in_bounded_memory() {
    runtime().block_on(async { tokio::spawn(streaming()).await.unwrap() });
}

async fn streaming() {
    const SIZE: usize = 100 << 20;
    const UPLOAD: usize = 1 << 30;
    let l = lattice(&[], Duration::from_secs(600)).await;
    l.web("web").await;
    let addr = free_addr();
    l.link(
        "web",
        "web",
        &[addr_cfg(addr), ("timeout_ms", "300000".into())],
    )
    .await;
    wait_served(addr, "/", None, "web").await;
    let pid = l.provider.pid();
    let (rss_before, _) = common::memory_kib(pid);

    // Upload: 1 GiB streamed in 64 KiB chunks without a length, hashed by the component
    // (slower than the provider, which must not buffer what it cannot send yet).
    let chunk: Bytes = (0..65_536u32).map(|i| (i * 7 % 253) as u8).collect();
    let chunks = UPLOAD / chunk.len();
    let mut expected = FNV_START;
    for _ in 0..chunks {
        expected = fnv1a(expected, &chunk);
    }
    let stream = futures::stream::iter(std::iter::repeat_n(chunk.clone(), chunks));
    let res = send(addr, request(addr, "PUT", "/digest", &[], streamed(stream))).await;
    assert_eq!(res.status(), 200);
    assert_eq!(text(res).await, format!("{UPLOAD} {expected:016x}"));

    let (_, peak_upload) = common::memory_kib(pid);
    eprintln!("provider peak after the upload: {peak_upload} KiB");
    // Download: 100 MiB streamed back, checked against the component's pattern as it comes,
    // to a client that stops reading for a while after the first chunk (what the provider
    // holds for a slow client must not depend on how the component's host chunks the body).
    let res = get(addr, &format!("/bytes/{SIZE}"), &[]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "content-length"), Some(SIZE.to_string()));
    let mut body = res.into_body().into_data_stream();
    let mut seen = 0usize;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("download failed");
        if seen == 0 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (rss, _) = common::memory_kib(pid);
            eprintln!("provider memory with the client stalled: {rss} KiB");
        }
        for (i, b) in chunk.iter().enumerate() {
            assert_eq!(*b as usize, (seen + i) % 251, "byte {} differs", seen + i);
        }
        seen += chunk.len();
    }
    assert_eq!(seen, SIZE);

    let (rss_after, peak) = common::memory_kib(pid);
    eprintln!("provider memory: {rss_before} KiB before, {rss_after} KiB after, peak {peak} KiB");
    // The flow window (4 MiB), the pacing slack (2 MiB), the response body's read-ahead
    // (a few 64 KiB pieces), hyper and NATS buffers and the allocator: about 15 MiB measured
    // in a debug build. (Reading the body with wrpc-transport's own decoder, a stalled client
    // made the provider queue 128 of the host's chunks as well: 25 MiB in one CI run.)
    assert!(
        peak.saturating_sub(rss_before) < 24 << 10,
        "1.1 GiB through the provider grew its memory by {} KiB",
        peak - rss_before
    );
}

#[test]
fn bad_clients_are_cut_off_without_harm() {
    runtime().block_on(async { tokio::spawn(bad_clients()).await.unwrap() });
}

/// Raw bytes to `addr`; everything read back until the server closes or `limit` passes.
fn raw(addr: std::net::SocketAddr, data: &[u8], limit: Duration) -> (String, Duration) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    let started = Instant::now();
    let _ = s.write_all(data);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

async fn bad_clients() {
    let l = lattice(
        &["--config", "header_read_timeout_ms=500"],
        Duration::from_secs(30),
    )
    .await;
    l.web("web").await;
    let addr = free_addr();
    l.link("web", "web", &[addr_cfg(addr)]).await;
    l.link(
        "small",
        "web",
        &[
            addr_cfg(addr),
            ("host", "small.test".into()),
            ("max_content_len", "1M".into()),
            ("readonly_mode", "false".into()),
        ],
    )
    .await;
    l.link(
        "ro",
        "web",
        &[
            addr_cfg(addr),
            ("host", "ro.test".into()),
            ("readonly_mode", "true".into()),
            ("cache_control", "max-age=60".into()),
            ("cors_allowed_origins", "https://app.test".into()),
            ("cors_exposed_headers", "x-served-by".into()),
        ],
    )
    .await;
    wait_served(addr, "/", None, "web").await;
    wait_served(addr, "/", Some("small.test"), "web").await;
    wait_served(addr, "/", Some("ro.test"), "web").await;
    malformed_and_slow_clients(addr).await;
    disconnects(addr).await;
    size_limits(addr).await;
    read_only_and_cors(addr).await;
    let mut provider = l.provider;
    assert!(provider.is_running(), "the provider died");
}

/// Malformed, oversized, slow and silent clients are answered or cut off while normal
/// requests are served.
async fn malformed_and_slow_clients(addr: std::net::SocketAddr) {
    let a = addr;
    let checks = tokio::task::spawn_blocking(move || {
        // Malformed request line: 400, connection closed.
        let (out, _) = raw(a, b"NOT HTTP AT ALL\r\n\r\n", Duration::from_secs(5));
        assert!(out.starts_with("HTTP/1.1 400"), "{out:?}");
        // 100 KiB of headers: 431.
        let big = format!(
            "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
            "a".repeat(100 << 10)
        );
        let (out, _) = raw(a, big.as_bytes(), Duration::from_secs(5));
        assert!(out.starts_with("HTTP/1.1 431"), "{out:?}");
        // Slowloris: half a header section, then silence: cut off at the header timeout.
        let (out, took) = raw(
            a,
            b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ",
            Duration::from_secs(10),
        );
        assert!(
            took < Duration::from_secs(5),
            "slow client held on for {took:?}"
        );
        assert!(!out.contains("200"), "{out:?}");
        // Silent connection: also closed.
        let (_, took) = raw(a, b"", Duration::from_secs(10));
        assert!(
            took < Duration::from_secs(5),
            "silent client held on for {took:?}"
        );
    });
    // Meanwhile normal requests are served.
    for _ in 0..10 {
        assert_eq!(get(addr, "/", &[]).await.status(), 200);
    }
    checks.await.unwrap();
}

/// Abrupt disconnects mid-download and mid-upload harm nobody.
async fn disconnects(addr: std::net::SocketAddr) {
    // Abrupt disconnects mid-download and mid-upload harm nobody.
    {
        let mut conn = Conn::open(addr).await.unwrap();
        let res = conn
            .send(request(addr, "GET", "/bytes/50000000", &[], empty()))
            .await
            .unwrap();
        let mut body = res.into_body();
        let _ = body.frame().await;
        drop(body);
        conn.task.abort();
    }
    {
        let (tx, rx) = futures::channel::mpsc::channel::<Bytes>(1);
        let mut conn = Conn::open(addr).await.unwrap();
        let req = request(addr, "PUT", "/digest", &[], streamed(rx));
        let pending = tokio::spawn(async move { conn.send(req).await.map(|_| ()) });
        let mut tx = tx;
        futures::SinkExt::send(&mut tx, Bytes::from(vec![1u8; 100_000]))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        pending.abort();
    }
    for _ in 0..5 {
        assert_eq!(get(addr, "/", &[]).await.status(), 200);
    }
}

/// The route's size limit, declared or streamed (the `small.test` route: 1 MiB).
async fn size_limits(addr: std::net::SocketAddr) {
    // Request size limit: declared or streamed, over the limit is 413. (A declared length
    // is refused before the body is read, so this client sends none.)
    let (out, _) = tokio::task::spawn_blocking(move || {
        raw(
            addr,
            b"PUT /digest HTTP/1.1\r\nhost: small.test\r\ncontent-length: 2097152\r\n\r\n",
            Duration::from_secs(5),
        )
    })
    .await
    .unwrap();
    assert!(out.starts_with("HTTP/1.1 413"), "{out:?}");
    let chunks = futures::stream::iter(std::iter::repeat_n(Bytes::from(vec![0u8; 64 << 10]), 32));
    let res = send(
        addr,
        request(
            addr,
            "PUT",
            "/digest",
            &[("host", "small.test")],
            streamed(chunks),
        ),
    )
    .await;
    assert_eq!(res.status(), 413);
    let res = send(
        addr,
        request(
            addr,
            "PUT",
            "/digest",
            &[("host", "small.test")],
            full(vec![0u8; 1000]),
        ),
    )
    .await;
    assert_eq!(res.status(), 200);
}

/// The `ro.test` route: read-only, with cache-control and CORS.
async fn read_only_and_cors(addr: std::net::SocketAddr) {
    // Read-only route: 405 for writes; cache-control added; CORS answered.
    let res = send(
        addr,
        request(addr, "POST", "/echo", &[("host", "ro.test")], full("x")),
    )
    .await;
    assert_eq!(res.status(), 405);
    assert_eq!(header(&res, "allow").as_deref(), Some("GET, HEAD"));
    let res = get(
        addr,
        "/",
        &[("host", "ro.test"), ("origin", "https://app.test")],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "cache-control").as_deref(), Some("max-age=60"));
    assert_eq!(
        header(&res, "access-control-allow-origin").as_deref(),
        Some("https://app.test")
    );
    assert_eq!(
        header(&res, "access-control-expose-headers").as_deref(),
        Some("x-served-by")
    );
    let res = get(
        addr,
        "/",
        &[("host", "ro.test"), ("origin", "https://evil.test")],
    )
    .await;
    assert_eq!(header(&res, "access-control-allow-origin"), None);
    let res = send(
        addr,
        request(
            addr,
            "OPTIONS",
            "/",
            &[
                ("host", "ro.test"),
                ("origin", "https://app.test"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "Content-Type"),
            ],
            empty(),
        ),
    )
    .await;
    assert_eq!(res.status(), 204);
    assert_eq!(
        header(&res, "access-control-allow-origin").as_deref(),
        Some("https://app.test")
    );
    assert!(
        header(&res, "access-control-allow-methods")
            .unwrap()
            .contains("PUT")
    );
    assert_eq!(
        header(&res, "access-control-max-age").as_deref(),
        Some("300")
    );
}

#[test]
fn shutdown_drains_requests_in_flight() {
    runtime().block_on(async { tokio::spawn(drain()).await.unwrap() });
}

async fn drain() {
    let mut l = lattice(&[], Duration::from_secs(10)).await;
    l.web("web").await;
    let addr = free_addr();
    l.link("web", "web", &[addr_cfg(addr)]).await;
    wait_served(addr, "/", None, "web").await;
    let slow = tokio::spawn(async move { get(addr, "/sleep/1500", &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &l.provider.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // The request in flight completes…
    let res = slow.await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(text(res).await, "slept");
    // …new connections are refused, and the process exits cleanly.
    let exit = tokio::task::block_in_place(|| l.provider.wait_exit(Duration::from_secs(15)))
        .expect("the provider did not exit");
    assert!(exit.success(), "{exit:?}");
    assert!(Conn::open(addr).await.is_err());
}

/// A call to the host's handler whose request claims 2³² − 1 headers. wrpc-transport's
/// decoder would reserve about 200 GB for them before reading any, and the host (this test's
/// process, under glibc's allocator) would abort; checked first, the call fails with a clear
/// error and the host serves on.
#[test]
fn a_forged_header_count_fails_the_call_not_the_host() {
    runtime().block_on(async { tokio::spawn(forged_headers()).await.unwrap() });
}

async fn forged_headers() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use trellis_wrpc_nats::{Connection, TransportOptions};
    use wrpc_transport::Invoke as _;

    let l = lattice(&[], Duration::from_secs(10)).await;
    l.web("web").await;
    let addr = free_addr();
    l.link("web", "web", &[addr_cfg(addr)]).await;
    wait_served(addr, "/", None, "web").await;

    let subjects = trellis_sdk::subjects::LatticeSubjects::new(&l.provider.lattice).unwrap();
    let conn = Connection::new(trellis_tests::nats().await, TransportOptions::default())
        .await
        .unwrap();
    let client = conn.client(subjects.wrpc_prefix("web"));
    // A pending body, trailers ready and none, GET, no path, scheme or authority; then the
    // header count, with nothing behind it.
    let params = Bytes::from_static(b"\x00\x01\x00\x00\x00\x00\x00\xff\xff\xff\xff\x0f");
    let err = trellis_tests::forged_call(
        &client,
        None,
        "wrpc:http/incoming-handler@0.1.0",
        "handle",
        params,
    )
    .await;
    assert!(err.contains("malformed parameters"), "{err}");
    let res = get(addr, "/", &[]).await;
    assert_eq!(res.status(), 200, "the host no longer serves");

    // A well-formed request whose trailers are pending, then forged trailer fields on their
    // nested stream (which no parameter check sees): a count of 2^32 - 1 with nothing behind.
    let params = Bytes::from_static(b"\x00\x00\x00\x01\x01/\x00\x01\x01x\x00");
    let call = async {
        let (tx, rx) = client
            .invoke(
                None,
                "wrpc:http/incoming-handler@0.1.0",
                "handle",
                params,
                &[] as &[&[Option<usize>]],
            )
            .await?;
        let mut trailers = wrpc_transport::Index::index(&tx, &[0, 1])?;
        trailers.write_all(b"\x01\xff\xff\xff\xff\x0f").await?;
        trailers.shutdown().await?;
        let mut body = wrpc_transport::Index::index(&tx, &[0, 0])?;
        body.write_all(b"\x00").await?;
        drop((body, trailers, tx));
        let _ = tokio::time::timeout(Duration::from_secs(2), async move {
            let mut rx = rx;
            let mut results = Vec::new();
            rx.read_to_end(&mut results).await
        })
        .await;
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the forged call hung")
        .expect("the forged call could not be sent");
    let res = get(addr, "/", &[]).await;
    assert_eq!(res.status(), 200, "the host no longer serves");
}
