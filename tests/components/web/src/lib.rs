//! Test component for the host and the http-server provider: a `wasi:http` incoming handler.
//!
//! Routes (any method unless noted):
//! - `GET /` — `hello from trellis`.
//!
//! Every response carries `x-served-by` from config key `name`, if set (routing tests tell
//! components apart by it, whatever the path).
//! - `/echo` — the request body streamed back; request headers starting with `x-` copied;
//!   `x-method`, `x-path`, `x-authority`, `x-scheme` describe the request.
//! - `/digest` — reads the body as it streams: `"{length} {fnv1a-64 hex}"`.
//! - `GET /bytes/N` — N bytes of the pattern `i % 251`, streamed.
//! - `GET /status/N` — status N with two `set-cookie` headers.
//! - `GET /sleep/MS` — answers after MS milliseconds.
//! - `GET /trap` — traps before answering; `GET /trap-mid-body` — after 1 KiB of body.
//! - anything else — 404.

wit_bindgen::generate!({
    path: "../wit",
    world: "trellis-test:components/web-component",
    generate_all,
});

use exports::wasi::http::incoming_handler::Guest;
use wasi::config::store as config;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam, Scheme,
};
use wasi::io::streams::{InputStream, OutputStream, StreamError};

/// Period of the `/bytes` pattern; a chunk of 256 periods tiles without a seam.
const PERIOD: usize = 251;
const READ_CHUNK: u64 = 64 << 10;

struct Web;

impl Guest for Web {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (route, arg) = match path.trim_start_matches('/').split_once('/') {
            Some((r, a)) => (r.to_string(), a.to_string()),
            None => (path.trim_start_matches('/').to_string(), String::new()),
        };
        let route = route.split('?').next().unwrap_or_default().to_string();
        match route.as_str() {
            "" => {
                let headers = [("content-type".to_string(), b"text/plain".to_vec())];
                respond(out, 200, &headers, |body| write_all(body, b"hello from trellis\n"));
            }
            "echo" => echo(request, out),
            "digest" => {
                let mut len = 0u64;
                let mut hash = 0xcbf2_9ce4_8422_2325u64;
                read_body(request, |chunk| {
                    len += chunk.len() as u64;
                    for b in chunk {
                        hash ^= u64::from(*b);
                        hash = hash.wrapping_mul(0x0100_0000_01b3);
                    }
                });
                let text = format!("{len} {hash:016x}");
                respond(out, 200, &[], |body| write_all(body, text.as_bytes()));
            }
            "bytes" => {
                let n: usize = arg.parse().unwrap_or(0);
                let chunk: Vec<u8> = (0..PERIOD * 256).map(|i| (i % PERIOD) as u8).collect();
                let headers = [("content-length".to_string(), n.to_string().into_bytes())];
                respond(out, 200, &headers, |body| {
                    let mut left = n;
                    while left > 0 {
                        let k = left.min(chunk.len());
                        write_all(body, &chunk[..k]);
                        left -= k;
                    }
                });
            }
            "status" => {
                let status: u16 = arg.parse().unwrap_or(500);
                let headers = [
                    ("set-cookie".to_string(), b"a=1".to_vec()),
                    ("set-cookie".to_string(), b"b=2".to_vec()),
                ];
                let text = format!("status {status}");
                respond(out, status, &headers, |body| write_all(body, text.as_bytes()));
            }
            "sleep" => {
                let ms: u64 = arg.parse().unwrap_or(0);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                respond(out, 200, &[], |body| write_all(body, b"slept"));
            }
            "trap" => panic!("trap requested"),
            "trap-mid-body" => respond(out, 200, &[], |body| {
                write_all(body, &[b'x'; 1024]);
                panic!("trap requested mid-body");
            }),
            _ => respond(out, 404, &[], |body| write_all(body, b"not found")),
        }
    }
}

/// Sends the response head, then lets `write` produce the body.
fn respond(
    out: ResponseOutparam,
    status: u16,
    headers: &[(String, Vec<u8>)],
    write: impl FnOnce(&OutputStream),
) {
    let mut headers = headers.to_vec();
    if let Ok(Some(name)) = config::get("name") {
        headers.push(("x-served-by".to_string(), name.into_bytes()));
    }
    let fields = Fields::from_list(&headers).expect("valid headers");
    let response = OutgoingResponse::new(fields);
    response.set_status_code(status).expect("valid status");
    let body = response.body().expect("body taken once");
    ResponseOutparam::set(out, Ok(response));
    {
        let stream = body.write().expect("stream taken once");
        write(&stream);
        stream.blocking_flush().expect("flush");
    }
    OutgoingBody::finish(body, None).expect("finish body");
}

fn echo(request: IncomingRequest, out: ResponseOutparam) {
    let mut headers: Vec<(String, Vec<u8>)> = request
        .headers()
        .entries()
        .into_iter()
        .filter(|(name, _)| name.starts_with("x-") || name == "content-type")
        .collect();
    let method = match request.method() {
        Method::Get => "GET".to_string(),
        Method::Head => "HEAD".to_string(),
        Method::Post => "POST".to_string(),
        Method::Put => "PUT".to_string(),
        Method::Delete => "DELETE".to_string(),
        Method::Connect => "CONNECT".to_string(),
        Method::Options => "OPTIONS".to_string(),
        Method::Trace => "TRACE".to_string(),
        Method::Patch => "PATCH".to_string(),
        Method::Other(m) => m,
    };
    let scheme = match request.scheme() {
        Some(Scheme::Http) => "http".to_string(),
        Some(Scheme::Https) => "https".to_string(),
        Some(Scheme::Other(s)) => s,
        None => String::new(),
    };
    headers.push(("x-method".into(), method.into_bytes()));
    headers.push((
        "x-path".into(),
        request.path_with_query().unwrap_or_default().into_bytes(),
    ));
    headers.push((
        "x-authority".into(),
        request.authority().unwrap_or_default().into_bytes(),
    ));
    headers.push(("x-scheme".into(), scheme.into_bytes()));
    let body = request.consume().expect("body taken once");
    let input = body.stream().expect("stream taken once");
    respond(out, 200, &headers, |output| {
        copy(&input, |chunk| write_all(output, chunk));
    });
}

/// Reads the request body chunk by chunk.
fn read_body(request: IncomingRequest, mut f: impl FnMut(&[u8])) {
    let body = request.consume().expect("body taken once");
    let input = body.stream().expect("stream taken once");
    copy(&input, &mut f);
}

fn copy(input: &InputStream, mut f: impl FnMut(&[u8])) {
    loop {
        match input.blocking_read(READ_CHUNK) {
            Ok(chunk) => f(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => panic!("read failed: {}", e.to_debug_string()),
        }
    }
}

/// Writes all of `data`, waiting whenever the host's buffer is full.
fn write_all(out: &OutputStream, mut data: &[u8]) {
    while !data.is_empty() {
        let room = out.check_write().expect("writable") as usize;
        if room == 0 {
            out.subscribe().block();
            continue;
        }
        let k = room.min(data.len());
        out.write(&data[..k]).expect("write");
        data = &data[k..];
    }
}

export!(Web);
