//! http-server benchmark: the same `hello` component (`tests/components/hello`) answering
//! HTTP three ways, loaded by `wrk` in one run:
//! - **Trellis**: wrk → http-server provider (release binary) → wRPC over NATS → host →
//!   component instance → back;
//! - **wasmtime serve** (wasmtime-cli 45, the same engine version): the component in-process,
//!   as installed (the yardstick) and with the pooling settings the Trellis host uses
//!   (`-O pooling-allocator=y`, memory kept resident), so neither side wins by engine tuning;
//! - **hyper**: a plain hyper server answering the same bytes (no wasm, no NATS).
//!
//! Prints requests/s, p50 and p99 for each, and Trellis as a ratio of the other two.
//! Needs `wrk` and `wasmtime` (on PATH, or `TRELLIS_WRK` / `TRELLIS_WASMTIME`; `scripts/bench.sh`
//! installs both) and nats-server (`TRELLIS_NATS_URL`). `BENCH_SCALE=0.2` shortens it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[path = "../tests/support/mod.rs"]
mod support;

const HELLO_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/components/prebuilt/hello.wasm"
);
const BODY: &[u8] = b"hello from trellis\n";
/// Connections wrk keeps open (one wrk thread: the machine has two cores to share).
const CONNECTIONS: u32 = 32;

/// What one wrk run measured.
struct Run {
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn tool(var: &str, name: &str, fallback: Option<PathBuf>) -> PathBuf {
    if let Ok(path) = std::env::var(var) {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .chain(fallback)
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("{name} is missing: run scripts/bench.sh (it installs it) or set {var}")
    })
}

/// Parses a wrk duration such as `812.00us`, `4.54ms` or `1.02s` into milliseconds.
fn millis(text: &str) -> Option<f64> {
    let (num, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| text.split_at(i))?;
    let value: f64 = num.parse().ok()?;
    match unit {
        "us" => Some(value / 1000.0),
        "ms" => Some(value),
        "s" => Some(value * 1000.0),
        "m" => Some(value * 60_000.0),
        _ => None,
    }
}

fn wrk(wrk: &PathBuf, url: &str, secs: u32) -> Run {
    let out = Command::new(wrk)
        .args([
            "-t1",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{secs}s"),
            "--latency",
            url,
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("cannot run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed:\n{text}");
    let mut run = Run {
        per_s: 0.0,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        errors: 0,
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", n] => run.per_s = n.parse().unwrap_or(0.0),
            ["50%", t] => run.p50_ms = millis(t).unwrap_or(f64::NAN),
            ["99%", t] => run.p99_ms = millis(t).unwrap_or(f64::NAN),
            ["Non-2xx", "or", "3xx", "responses:", n] => run.errors += n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                run.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    assert!(run.per_s > 0.0, "wrk printed no rate:\n{text}");
    run
}

/// Waits until `addr` answers `GET /` with the hello body.
async fn wait_ready(addr: SocketAddr) {
    for _ in 0..200 {
        if let Ok(mut conn) = support::Conn::open(addr).await {
            let req = support::request(addr, "GET", "/", &[], support::empty());
            if let Ok(resp) = conn.send(req).await {
                use http_body_util::BodyExt as _;
                if let Ok(body) = resp.into_body().collect().await {
                    assert_eq!(body.to_bytes().as_ref(), BODY, "unexpected body at {addr}");
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{addr} never answered");
}

async fn hyper_server(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = service_fn(|_req: Request<hyper::body::Incoming>| async {
                let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
                resp.headers_mut().insert(
                    "content-type",
                    hyper::header::HeaderValue::from_static("text/plain"),
                );
                Ok::<_, Infallible>(resp)
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Runs `wasmtime serve` with `opts` on the hello component and loads it.
fn wasmtime_serve(
    rt: &tokio::runtime::Runtime,
    wrk_bin: &PathBuf,
    wasmtime: &PathBuf,
    opts: &[&str],
    secs: u32,
) -> Run {
    let addr = support::free_addr();
    let mut serve = Command::new(wasmtime)
        .args(["serve", "-S", "cli=y"])
        .args(opts)
        .args(["--addr", &addr.to_string(), HELLO_WASM])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start wasmtime serve");
    rt.block_on(wait_ready(addr));
    let url = format!("http://{addr}/");
    wrk(wrk_bin, &url, 1);
    let run = wrk(wrk_bin, &url, secs);
    let _ = serve.kill();
    let _ = serve.wait();
    run
}

fn line(name: &str, run: &Run) {
    println!(
        "{name:<16} {:>10.0} {:>9.2} {:>9.2} {:>8}",
        run.per_s, run.p50_ms, run.p99_ms, run.errors
    );
}

fn main() {
    let scale: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let secs = ((10.0 * scale).round() as u32).max(2);
    let wrk_bin = tool("TRELLIS_WRK", "wrk", None);
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let wasmtime = tool(
        "TRELLIS_WASMTIME",
        "wasmtime",
        Some(home.join(".cache/trellis/tools/bin/wasmtime")),
    );
    let rt = support::runtime();

    // Trellis: provider process + in-process host with the hello component.
    let trellis = rt.block_on(async {
        let lattice = support::lattice(&[], Duration::from_secs(10)).await;
        let wasm = trellis_host::read_component(HELLO_WASM).expect("hello.wasm");
        let component = lattice
            .host
            .start_component("hello", wasm, &[])
            .await
            .expect("start hello");
        std::mem::forget(component);
        let addr = support::free_addr();
        lattice
            .link("bench", "hello", &[("address", addr.to_string())])
            .await;
        wait_ready(addr).await;
        (lattice, addr)
    });
    let (_lattice, trellis_addr) = trellis;
    // Warm up (compiled code, connections, caches), then measure.
    let url = format!("http://{trellis_addr}/");
    wrk(&wrk_bin, &url, 1);
    let ours = wrk(&wrk_bin, &url, secs);

    // wasmtime serve, the same component: as installed, then with the pooling settings the
    // Trellis host uses (instances from a pool, memory reset in place instead of madvise).
    let wasmtime_run = wasmtime_serve(&rt, &wrk_bin, &wasmtime, &[], secs);
    let keep = trellis_host::engine::KEEP_RESIDENT_MEMORY.to_string();
    let tuned = [
        "-O",
        "pooling-allocator=y",
        "-O",
        &format!("pooling-memory-keep-resident={keep}"),
        "-O",
        "pooling-table-keep-resident=65536",
    ];
    let tuned_run = wasmtime_serve(&rt, &wrk_bin, &wasmtime, &tuned, secs);

    // Plain hyper, same bytes.
    let hyper_addr = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(hyper_server(listener));
        wait_ready(addr).await;
        addr
    });
    let url = format!("http://{hyper_addr}/");
    wrk(&wrk_bin, &url, 1);
    let hyper_run = wrk(&wrk_bin, &url, secs);

    println!(
        "\nhttp-server: GET / → `hello` component, wrk 1 thread × {CONNECTIONS} connections, {secs} s each"
    );
    println!(
        "{:<16} {:>10} {:>9} {:>9} {:>8}",
        "server", "req/s", "p50 ms", "p99 ms", "errors"
    );
    line("trellis", &ours);
    line("wasmtime serve", &wasmtime_run);
    line("wasmtime pooled", &tuned_run);
    line("hyper (no wasm)", &hyper_run);
    println!(
        "trellis / wasmtime serve: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x (target: throughput >= 0.80x)",
        ours.per_s / wasmtime_run.per_s,
        ours.p50_ms / wasmtime_run.p50_ms,
        ours.p99_ms / wasmtime_run.p99_ms,
    );
    println!(
        "trellis / wasmtime serve with the host's pooling settings: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x",
        ours.per_s / tuned_run.per_s,
        ours.p50_ms / tuned_run.p50_ms,
        ours.p99_ms / tuned_run.p99_ms,
    );
    println!(
        "trellis / hyper:          throughput {:.2}x, p50 {:.2}x, p99 {:.2}x",
        ours.per_s / hyper_run.per_s,
        ours.p50_ms / hyper_run.p50_ms,
        ours.p99_ms / hyper_run.p99_ms,
    );
}
