//! Transport benchmark: raw NATS request/reply vs. our wRPC transport vs. the published
//! `wrpc-transport-nats` 0.31, in one run against the same nats-server.
//!
//! Prints sequential p50/p99 latency and throughput at 64 calls in flight, for a small and a
//! 64 KiB payload, each as a ratio to raw NATS (the baseline measured in the same run).
//!
//! Run: `scripts/bench.sh` (starts nats-server), or with `TRELLIS_NATS_URL` set:
//! `cargo bench -p trellis-wrpc-nats --bench transport`. `BENCH_SCALE=0.2` shortens it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt as _, stream};
use trellis_wrpc_nats::{Connection, TransportOptions};

mod bindings {
    wit_bindgen_wrpc::generate!({
        wrpc_transport_path: "::trellis_wrpc_nats::wrpc_transport",
        inline: "
            package trellis-bench:echo@0.1.0;
            interface echo { echo: func(x: list<u8>) -> list<u8>; }
            world bench { import echo; export echo; }
        ",
        generate_all,
    });
}

use bindings::trellis_bench::echo::echo as client;

#[derive(Clone)]
struct Echo;

impl<C: Send + Sync> bindings::exports::trellis_bench::echo::echo::Handler<C> for Echo {
    async fn echo(&self, _cx: C, x: Bytes) -> anyhow::Result<Bytes> {
        Ok(x)
    }
}

const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const IN_FLIGHT: usize = 64;

#[derive(Clone, Copy, Debug)]
struct Stats {
    p50_us: f64,
    p99_us: f64,
    calls_per_s: f64,
    failed: usize,
}

/// Something that can make one echo call.
trait Caller: Clone + Send + Sync + 'static {
    fn call(
        &self,
        payload: Bytes,
    ) -> impl std::future::Future<Output = anyhow::Result<Bytes>> + Send;
}

#[derive(Clone)]
struct Raw(async_nats::Client, String);

impl Caller for Raw {
    async fn call(&self, payload: Bytes) -> anyhow::Result<Bytes> {
        Ok(self.0.request(self.1.clone(), payload).await?.payload)
    }
}

struct Wrpc<T>(Arc<T>);

impl<T> Clone for Wrpc<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T> Caller for Wrpc<T>
where
    T: wrpc_transport::Invoke + 'static,
    T::Context: Default,
{
    async fn call(&self, payload: Bytes) -> anyhow::Result<Bytes> {
        client::echo(&*self.0, T::Context::default(), &payload).await
    }
}

async fn one<C: Caller>(c: &C, payload: Bytes) -> bool {
    matches!(
        tokio::time::timeout(CALL_TIMEOUT, c.call(payload)).await,
        Ok(Ok(_))
    )
}

async fn measure<C: Caller>(c: &C, payload: Bytes, sequential: usize, parallel: usize) -> Stats {
    for _ in 0..sequential / 10 {
        one(c, payload.clone()).await; // warm-up
    }
    let mut lat = Vec::with_capacity(sequential);
    let mut failed = 0;
    for _ in 0..sequential {
        let t = Instant::now();
        if !one(c, payload.clone()).await {
            failed += 1;
        }
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let t = Instant::now();
    let ok = stream::iter(0..parallel)
        .map(|_| one(c, payload.clone()))
        .buffer_unordered(IN_FLIGHT)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    let secs = t.elapsed().as_secs_f64();
    Stats {
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        calls_per_s: ok as f64 / secs,
        failed: failed + (parallel - ok),
    }
}

/// Serves the echo export, driving calls concurrently inside one task per function (as the
/// SDK does): no spawn per call.
async fn serve_wrpc<T>(wrpc: T)
where
    T: wrpc_transport::Serve + Send + Sync + 'static,
    T::Context: Send + Sync,
{
    let invocations = bindings::serve(&wrpc, Echo).await.expect("serve");
    for (_, _, mut st) in invocations {
        tokio::spawn(async move {
            let mut calls = futures::stream::FuturesUnordered::new();
            loop {
                tokio::select! {
                    next = st.next() => match next {
                        Some(Ok(fut)) => calls.push(fut),
                        Some(Err(_)) => {}
                        None => break,
                    },
                    Some(_) = calls.next(), if !calls.is_empty() => {}
                }
            }
        });
    }
    tokio::spawn(async move {
        let _keep = wrpc;
        futures::future::pending::<()>().await;
    });
}

fn main() -> anyhow::Result<()> {
    let threads: usize = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let url = std::env::var("TRELLIS_NATS_URL")
        .map_err(|_| anyhow::anyhow!("TRELLIS_NATS_URL is not set: run scripts/bench.sh"))?;
    let scale: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let n = |x: usize| ((x as f64 * scale) as usize).max(50);
    let connect = || async_nats::connect(url.as_str());
    let lattice = format!("bench{}", std::process::id());

    // Raw NATS: a responder echoing the payload.
    let raw_subject = format!("{lattice}.raw.echo");
    let server = connect().await?;
    let mut sub = server.subscribe(raw_subject.clone()).await?;
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if let Some(reply) = msg.reply {
                let _ = server.publish(reply, msg.payload).await;
            }
        }
    });
    let raw = Raw(connect().await?, raw_subject);

    // Ours, both ends.
    let ours_prefix = format!("{lattice}.ours");
    let server = Connection::new(connect().await?, TransportOptions::default()).await?;
    serve_wrpc(server.server(ours_prefix.clone(), Some(ours_prefix.clone().into()))).await;
    let ours = Wrpc(Arc::new(
        Connection::new(connect().await?, TransportOptions::default())
            .await?
            .client(ours_prefix),
    ));

    // Theirs (wrpc-transport-nats 0.31), both ends.
    let theirs_prefix = format!("{lattice}.theirs");
    let server = wrpc_transport_nats::Client::new(
        connect().await?,
        theirs_prefix.clone(),
        Some(theirs_prefix.clone().into()),
    )
    .await?;
    serve_wrpc(server).await;
    let theirs = Wrpc(Arc::new(
        wrpc_transport_nats::Client::new(connect().await?, theirs_prefix, None).await?,
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;

    println!("transport benchmark (nats-server at {url}; {IN_FLIGHT} in flight for throughput)");
    println!(
        "{:<9} {:<34} {:>10} {:>10} {:>11} {:>8} {:>8} {:>8} {:>7}",
        "payload", "transport", "p50 µs", "p99 µs", "calls/s", "p50 ×", "p99 ×", "thru ×", "failed"
    );
    for (label, size, seq, par) in [
        ("16 B", 16usize, n(5000), n(20_000)),
        ("64 KiB", 65536, n(1000), n(4000)),
    ] {
        let payload = Bytes::from(vec![0x5a; size]);
        let base = measure(&raw, payload.clone(), seq, par).await;
        let only = std::env::var("BENCH_ONLY").unwrap_or_default();
        let mut rows = vec![("raw NATS request/reply", base)];
        if only.is_empty() || only == "ours" {
            rows.push((
                "trellis transport",
                measure(&ours, payload.clone(), seq, par).await,
            ));
        }
        if only.is_empty() || only == "theirs" {
            rows.push((
                "wrpc-transport-nats 0.31",
                measure(&theirs, payload.clone(), seq, par).await,
            ));
        }
        for (name, s) in rows {
            println!(
                "{label:<9} {name:<34} {:>10.1} {:>10.1} {:>11.0} {:>8.2} {:>8.2} {:>8.2} {:>7}",
                s.p50_us,
                s.p99_us,
                s.calls_per_s,
                s.p50_us / base.p50_us,
                s.p99_us / base.p99_us,
                s.calls_per_s / base.calls_per_s,
                s.failed
            );
        }
    }
    println!("targets: trellis p50 ≤ 1.5× raw NATS, throughput ≥ 0.6× raw NATS");
    Ok(())
}
