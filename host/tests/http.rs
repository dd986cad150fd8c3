//! A component's `wasi:http/incoming-handler` export served as the 1.x wire instance
//! `wrpc:http/incoming-handler@0.1.0` (real nats-server, `tests/components/web`): what an
//! http-server provider sends reaches the component and its response comes back exactly —
//! status, repeated headers, bodies streamed both ways — and a trap is a clear error.

mod support;

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use trellis_host::read_component;
use trellis_sdk::subjects::LatticeSubjects;
use trellis_tests as common;
use trellis_wrpc_nats::Client;

use trellis_interfaces::http::bindings as wire;

use wire::wasi::http0_2_0::types::{ErrorCode, Method};
use wire::wrpc::http::incoming_handler;
use wire::wrpc::http::types::{Fields, Request, Response};

const WEB_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/components/prebuilt/web.wasm"
);

fn request(
    method: Method,
    path: &str,
    headers: Fields,
    body: impl Stream<Item = Bytes> + Send + 'static,
) -> Request {
    Request {
        body: Box::pin(body),
        trailers: Box::pin(async { None }),
        method,
        path_with_query: Some(path.to_string()),
        scheme: Some(wire::wasi::http0_2_0::types::Scheme::Http),
        authority: Some("example.test:8080".into()),
        headers,
    }
}

fn get(path: &str) -> Request {
    request(Method::Get, path, vec![], futures::stream::empty())
}

/// A response, and the task moving its body (and the request's) over the lattice.
struct Answer {
    response: Response,
    io: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl std::ops::Deref for Answer {
    type Target = Response;
    fn deref(&self) -> &Response {
        &self.response
    }
}

async fn call(client: &Client, req: Request) -> Result<Answer, ErrorCode> {
    let (result, io) = incoming_handler::handle(client, None, req)
        .await
        .expect("the wRPC call itself failed");
    let io = io.map(tokio::spawn);
    result.map(|response| Answer { response, io })
}

/// Reads the whole body; the transfer must end cleanly.
async fn body(answer: Answer) -> Vec<u8> {
    let mut out = Vec::new();
    let mut body = answer.response.body;
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk);
    }
    if let Some(io) = answer.io {
        io.await.unwrap().expect("body transfer failed");
    }
    out
}

/// Reads the body whatever becomes of the transfer.
async fn partial_body(answer: Answer) -> Vec<u8> {
    let mut out = Vec::new();
    let mut body = answer.response.body;
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk);
    }
    out
}

fn header<'a>(response: &'a Answer, name: &str) -> Vec<&'a [u8]> {
    response
        .headers
        .iter()
        .filter(|(n, _)| n == name)
        .flat_map(|(_, v)| v.iter().map(|b| b.as_ref()))
        .collect()
}

/// `size` bytes in 64 KiB chunks of a pattern unlike the component's.
fn upload(size: usize) -> (Vec<u8>, Pin<Box<dyn Stream<Item = Bytes> + Send>>) {
    let data: Vec<u8> = (0..size).map(|i| (i * 7 % 253) as u8).collect();
    let chunks: Vec<Bytes> = data.chunks(64 << 10).map(Bytes::copy_from_slice).collect();
    (data, Box::pin(futures::stream::iter(chunks)))
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[test]
fn incoming_handler_served_over_wrpc() {
    common::run_with_large_stacks(round_trips());
}

async fn round_trips() {
    let lattice = common::unique_lattice("http");
    let host = support::host(&lattice).await;
    host.admin()
        .put_config(
            "web-cfg",
            &HashMap::from([("name".to_string(), "web-1".to_string())]),
        )
        .await
        .unwrap();
    let component = host
        .start_component(
            "web",
            read_component(WEB_WASM).unwrap(),
            &["web-cfg".to_string()],
        )
        .await
        .unwrap();
    let conn = common::caller(Duration::from_secs(30)).await;
    let client = conn.client(LatticeSubjects::new(&lattice).unwrap().wrpc_prefix("web"));
    requests_pass_exactly(&client).await;
    large_bodies_stream(&client).await;
    traps_are_errors(&client).await;
    hostile_invocations(&lattice).await;
    let res = call(&client, get("/")).await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(body(res).await, b"hello from trellis\n");
    assert!(component.served() >= 10, "served {}", component.served());
}

/// Method, path, authority, scheme, headers, status and bodies pass both ways exactly.
async fn requests_pass_exactly(client: &Client) {
    // A plain GET, answered with the component's config.
    let res = call(client, get("/")).await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(header(&res, "x-served-by"), [b"web-1"]);
    assert_eq!(header(&res, "content-type"), [b"text/plain"]);
    assert_eq!(body(res).await, b"hello from trellis\n");

    // Method, path, authority, scheme and repeated headers reach the component in order; a
    // 3 MiB body streams through it and back unchanged.
    let (data, stream) = upload(3 << 20);
    let headers = vec![
        (
            "x-multi".to_string(),
            vec![Bytes::from("one"), Bytes::from("two")],
        ),
        (
            "content-type".to_string(),
            vec![Bytes::from("application/octet-stream")],
        ),
    ];
    let res = call(
        client,
        request(Method::Put, "/echo?x=1&y=%20", headers, stream),
    )
    .await
    .unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(header(&res, "x-multi"), [&b"one"[..], b"two"]);
    assert_eq!(header(&res, "x-method"), [b"PUT"]);
    assert_eq!(header(&res, "x-path"), [&b"/echo?x=1&y=%20"[..]]);
    assert_eq!(header(&res, "x-authority"), [&b"example.test:8080"[..]]);
    assert_eq!(header(&res, "x-scheme"), [b"http"]);
    assert_eq!(
        header(&res, "content-type"),
        [&b"application/octet-stream"[..]]
    );
    let echoed = body(res).await;
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "echoed body differs");

    // A custom method.
    let res = call(
        client,
        request(
            Method::Other("PURGE".into()),
            "/echo",
            vec![],
            futures::stream::empty(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(header(&res, "x-method"), [b"PURGE"]);

    // Status and repeated response headers are kept exactly.
    let res = call(client, get("/status/418")).await.unwrap();
    assert_eq!(res.status, 418);
    assert_eq!(header(&res, "set-cookie"), [&b"a=1"[..], b"b=2"]);
    assert_eq!(body(res).await, b"status 418");
}

/// Bodies far larger than any buffer stream both ways.
async fn large_bodies_stream(client: &Client) {
    // 24 MiB uploaded is digested as it streams; 24 MiB downloaded arrives intact.
    let (data, stream) = upload(24 << 20);
    let res = call(client, request(Method::Post, "/digest", vec![], stream))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(body(res).await).unwrap(),
        format!("{} {:016x}", data.len(), fnv1a(&data))
    );
    let n = 24 << 20;
    let res = call(client, get(&format!("/bytes/{n}"))).await.unwrap();
    assert_eq!(header(&res, "content-length"), [n.to_string().as_bytes()]);
    let got = body(res).await;
    assert_eq!(got.len(), n);
    assert!(
        got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8),
        "downloaded body differs from the pattern"
    );
}

/// A component's traps are errors, before the response or mid-body, and it keeps serving.
async fn traps_are_errors(client: &Client) {
    // A trap before the response is a clear error; a trap mid-body ends the body early; the
    // component keeps serving.
    match call(client, get("/trap")).await {
        Err(ErrorCode::InternalError(Some(why))) => {
            assert!(why.contains("failed"), "unexpected reason: {why}")
        }
        other => panic!(
            "expected an internal error, got {:?}",
            other.map(|r| r.status)
        ),
    }
    let res = call(client, get("/trap-mid-body")).await.unwrap();
    assert_eq!(res.status, 200);
    assert!(partial_body(res).await.len() <= 1024);
    let res = call(client, get("/nowhere")).await.unwrap();
    assert_eq!(res.status, 404);
}

/// Invocations that are no requests take nothing down.
async fn hostile_invocations(lattice: &str) {
    // Hostile invocations of the handler: no reply subject, bytes that are no request, a
    // request cut short, an absurd length, a flood. None of them takes the handler down.
    let nats = common::nats().await;
    let subject = format!(
        "{}.wrpc.0.0.1.wrpc:http/incoming-handler@0.1.0.handle",
        LatticeSubjects::new(lattice).unwrap().wrpc_prefix("web")
    );
    nats.publish(subject.clone(), Bytes::from_static(b"\x00\x00\x00"))
        .await
        .unwrap();
    let garbage: [&[u8]; 5] = [
        b"",
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x00\x00\x00\x01",
        b"\x00\x01\x00\x00\x08\x2f",
        b"\x00\x00\x00\x09\x01\xff\xff\xff\xff\x0f",
    ];
    for _ in 0..20 {
        for bytes in garbage {
            // As a 1.x client sends it, and claiming (falsely, for most) that the invocation
            // holds the whole request head: a head cut short must fail, not wait.
            for complete in [false, true] {
                let mut reply = nats.new_inbox();
                if complete {
                    reply = format!("{reply}.{}", trellis_sdk::subjects::PARAMS_COMPLETE_TOKEN);
                }
                nats.publish_with_reply(subject.clone(), reply, Bytes::copy_from_slice(bytes))
                    .await
                    .unwrap();
            }
        }
    }
    nats.flush().await.unwrap();
}
