//! Keyvalue benchmark: get and set of a 16-byte value through each provider — with the SDK
//! client, and from a component in the host — against the backend's own client and against
//! raw NATS request/reply (the transport ceiling), all in one run on the same servers. Raw
//! request/reply is measured twice, answered in this process and by another process; the
//! ceiling every ratio uses is the better of the two.
//!
//! One more row, "via bare NATS", calls the provider's `get` without the SDK client: one
//! publish carrying the whole call and one reply, routed by a plain subscription. It splits
//! the cost of a provider call between the provider and the SDK client.
//!
//! Then, per provider, throughput at 64 in flight in **interleaved rounds**: each round
//! measures the raw ceiling again, then a reference responder (another process answering
//! each raw NATS request with one read through the backend's own client), plain and with
//! the headers every wRPC invocation carries — the least any 1.x-compatible provider of that
//! backend must do — then the SDK client's get, the component's get and the bare get, and
//! takes each ratio to its own round's ceiling and to its own round's reference with
//! headers. On a shared two-core machine throughput swings by half within a minute, so the
//! ratio of two rows measured a minute apart says more about the neighbours than about the
//! code; the median of same-round ratios less so.
//!
//! Last, CPU time per call by process (nats-server, the backend, the provider, this bench
//! as the caller), for raw NATS and each provider's get at 64 in flight: it shows which
//! process a call's cost is in (Linux only: read from `/proc`). Where every process shares
//! the machine's cores, as here, a path whose calls cost twice the ceiling's CPU cannot pass
//! half the ceiling's throughput once both keep the cores busy; each line ends with that
//! bound (`bound ×N`: the cheaper raw row's CPU per call over the line's) and with how many
//! cores the path kept busy. Raising `BENCH_IN_FLIGHT` until the ceiling keeps the cores
//! busy brings the measured ratios to the bound.
//!
//! Run with `scripts/bench.sh` (release build; needs nats-server and redis-server).
//! `BENCH_SCALE=0.2` shortens it; `BENCH_ROUNDS` sets the number of interleaved rounds (7).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{StreamExt as _, stream};
use tokio::sync::oneshot;
use trellis_conformance::cpu::{Probe, cpu_time, service_pid};
use trellis_conformance::keyvalue;
use trellis_conformance::lattice::ProviderProcess;
use trellis_host::in_process::InProcessKind;
use trellis_host::{Host, HostOptions, read_component};
use trellis_interfaces::SplitCall as _;
use trellis_sdk::store::StoredLink;
use trellis_sdk::subjects::{self, LatticeSubjects};
use trellis_tests as common;
use trellis_wrpc_nats::{Connection, TransportOptions};

/// Calls in flight for the throughput column (`BENCH_IN_FLIGHT` overrides it, to see whether
/// a path is bound by latency — it scales — or by work — it does not).
const IN_FLIGHT: usize = 64;

fn in_flight() -> usize {
    std::env::var("BENCH_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(IN_FLIGHT)
}
const KV: [&str; 3] = ["store", "atomics", "batch"];
const ECHO_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../components/prebuilt/echo.wasm"
);

use trellis_tests::components as caller;

#[derive(Clone, Copy)]
struct Stats {
    p50: f64,
    p99: f64,
    one: f64,
    many: f64,
}

async fn measure<F, Fut>(n: usize, call: F) -> Stats
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..n / 10 {
        call().await;
    }
    let mut lat = Vec::with_capacity(n);
    let t = Instant::now();
    for _ in 0..n {
        let s = Instant::now();
        call().await;
        lat.push(s.elapsed().as_secs_f64() * 1e6);
    }
    let one = n as f64 / t.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    Stats {
        p50: pct(0.5),
        p99: pct(0.99),
        one,
        many: rate(n * 4, call).await,
    }
}

/// Makes `total` calls with the usual number in flight; returns calls per second.
async fn rate<F, Fut>(total: usize, call: F) -> f64
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let t = Instant::now();
    stream::iter(0..total)
        .map(|_| call())
        .buffer_unordered(in_flight())
        .for_each(|()| async {})
        .await;
    total as f64 / t.elapsed().as_secs_f64()
}

fn header() {
    println!(
        "{:<44} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9}",
        "path",
        "p50 µs",
        "p99 µs",
        "ops/s @1",
        "ops/s @64",
        "p50 ×bk",
        "added×N",
        "@64 ×bk",
        "@64 ×N"
    );
}

/// A row with ratios to the backend's own client (`bk`) and to raw NATS (`nats`): the added
/// p50 over the backend as a multiple of one NATS round trip, and throughput at 64 in flight.
fn row(name: &str, s: Stats, bk: Stats, nats: Stats) {
    println!(
        "{name:<44} {:>8.1} {:>8.1} {:>9.0} {:>9.0} {:>8.2} {:>8.2} {:>9.2} {:>9.2}",
        s.p50,
        s.p99,
        s.one,
        s.many,
        s.p50 / bk.p50,
        (s.p50 - bk.p50) / nats.p50,
        s.many / bk.many,
        s.many / nats.many
    );
}

/// The probes that were found.
fn probes(candidates: &[Option<Probe>]) -> Vec<Probe> {
    candidates.iter().flatten().copied().collect()
}

/// The CPU time each probed process spent per call of one path, in microseconds.
struct CpuLine {
    label: String,
    /// `(process, µs per call)`; `None` where it could not be read.
    by_process: Vec<(&'static str, Option<f64>)>,
    /// Calls per second while measuring.
    rate: f64,
}

impl CpuLine {
    /// All processes together; `None` if any could not be read.
    fn total(&self) -> Option<f64> {
        self.by_process.iter().map(|(_, us)| *us).sum()
    }

    /// The line, ending with the throughput ratio to the raw ceiling that this CPU per call
    /// allows where the machine's cores are the bottleneck: `ceiling` (the cheaper raw row's
    /// total) over this path's total.
    fn render(&self, ceiling: Option<f64>) -> String {
        let mut line = format!("{:<44}", self.label);
        for (name, us) in &self.by_process {
            match us {
                Some(us) => line.push_str(&format!(" {name} {us:>5.1}")),
                None => line.push_str(&format!(" {name}     ?")),
            }
        }
        if let Some(total) = self.total() {
            // Cores the probed processes kept busy: near the machine's count, the path is
            // bound by CPU; well below it, by the latency of its hops.
            let busy = total * self.rate / 1e6;
            line.push_str(&format!("  | total {total:>5.1}  cores {busy:.2}"));
            if let Some(c) = ceiling {
                line.push_str(&format!("  bound ×N {:.2}", c / total));
            }
        }
        line
    }
}

/// Makes `total` calls with the usual number in flight, measuring the CPU time each probed
/// process spends per call.
async fn cpu_per_call<F, Fut>(label: &str, total: usize, probes: &[Probe], call: F) -> CpuLine
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let sample = || {
        probes
            .iter()
            .map(|(_, pid)| cpu_time(*pid))
            .collect::<Vec<_>>()
    };
    let before = sample();
    let rate = rate(total, call).await;
    let after = sample();
    let by_process = probes
        .iter()
        .zip(before.iter().zip(&after))
        .map(|((name, _), (b, a))| {
            let us = b
                .zip(*a)
                .map(|(b, a)| a.saturating_sub(b).as_secs_f64() * 1e6 / total as f64);
            (*name, us)
        })
        .collect();
    CpuLine {
        label: label.to_string(),
        by_process,
        rate,
    }
}

/// One call of a row, boxed so rows of different kinds share a list.
type Call = Box<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

fn boxed<F, Fut>(call: F) -> Call
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Box::new(move || Box::pin(call()))
}

/// The median and range of `xs`.
fn spread(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    let median = if xs.len() % 2 == 1 {
        xs[mid]
    } else {
        (xs[mid - 1] + xs[mid]) / 2.0
    };
    (median, xs[0], xs[xs.len() - 1])
}

/// The median latency of `count` sequential calls, in microseconds.
async fn p50(count: usize, call: &Call) -> f64 {
    let mut lat = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        call().await;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    spread(lat).0
}

/// Measures `rows` in `rounds` rounds. Each round first measures both raw ceiling rows and
/// the backend's own client again, then every row: the p50 of `total / 16` sequential calls
/// and the throughput of `total` calls with the usual number in flight. One line per row:
/// its median calls per second, then the medians over rounds (their ranges end the line) of
/// its throughput ratio to its own round's ceiling (the better raw row) and to its own
/// round's `rows[reference]`, and of its p50 added over the backend in its own round's NATS
/// round trips.
async fn interleaved(
    rounds: usize,
    total: usize,
    ceiling: &[Call; 2],
    rows: &[(String, Call)],
    reference: usize,
    backend: &Call,
) -> Vec<String> {
    let sequential = (total / 16).max(50);
    let mut rates = vec![Vec::with_capacity(rounds); rows.len()];
    let mut added = vec![Vec::with_capacity(rounds); rows.len()];
    let mut ceilings = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let trip = p50(sequential, &ceiling[0])
            .await
            .min(p50(sequential, &ceiling[1]).await);
        let top = rate(total, &ceiling[0])
            .await
            .max(rate(total, &ceiling[1]).await);
        let base = p50(sequential, backend).await;
        ceilings.push(top);
        for (i, (_, call)) in rows.iter().enumerate() {
            added[i].push((p50(sequential, call).await - base) / trip);
            rates[i].push(rate(total, call).await);
        }
    }
    let per_round = |row: &[f64], base: &[f64]| -> Vec<f64> {
        row.iter().zip(base).map(|(r, b)| r / b).collect()
    };
    let (c, lo, hi) = spread(ceilings.clone());
    let mut lines = vec![format!(
        "{:<44} {c:>9.0} {:>8} {:>8} {:>9}   ceiling {lo:.0}–{hi:.0} ops/s",
        "raw NATS ceiling (better raw row)", "1.00", "", ""
    )];
    for ((label, _), (row, added)) in rows.iter().zip(rates.iter().zip(added)) {
        let (ops, _, _) = spread(row.clone());
        let (m, lo, hi) = spread(per_round(row, &ceilings));
        let (r, rlo, rhi) = spread(per_round(row, &rates[reference]));
        let (a, alo, ahi) = spread(added);
        lines.push(format!(
            "{label:<44} {ops:>9.0} {m:>8.2} {r:>8.2} {a:>9.2}   ×N {lo:.2}–{hi:.2}, ×ref {rlo:.2}–{rhi:.2}, added {alo:.2}–{ahi:.2}"
        ));
    }
    lines
}

/// Set when the bench runs itself as a responder for another process: `{role}:{subject}` or
/// `{role}:{subject}:{argument}` (see [`Responder`]).
const RESPONDER_ENV: &str = "TRELLIS_BENCH_RESPONDER";

/// What a responder process answers each request on its subject with.
enum Responder {
    /// The request's payload (the raw NATS ceiling).
    Echo,
    /// The value of this Redis key, read with redis-rs as keyvalue-redis does.
    RedisGet(String),
    /// The value of key `k` in this JetStream KV bucket, read with async-nats.
    NatsKvGet(String),
}

impl Responder {
    fn env(&self, subject: &str) -> String {
        match self {
            Self::Echo => format!("echo:{subject}"),
            Self::RedisGet(key) => format!("redis-get:{subject}:{key}"),
            Self::NatsKvGet(bucket) => format!("nats-kv-get:{subject}:{bucket}"),
        }
    }

    fn parse(v: &str) -> anyhow::Result<(Self, String)> {
        let mut parts = v.splitn(3, ':');
        let (role, subject, arg) = (parts.next(), parts.next(), parts.next());
        let subject = subject.context("responder subject")?.to_string();
        let arg = || arg.map(str::to_string).context("responder argument");
        let role = match role {
            Some("echo") => Self::Echo,
            Some("redis-get") => Self::RedisGet(arg()?),
            Some("nats-kv-get") => Self::NatsKvGet(arg()?),
            other => anyhow::bail!("unknown responder role {other:?}"),
        };
        Ok((role, subject))
    }

    /// Starts this bench binary as a responder on `subject` and waits until it answers.
    async fn spawn(
        &self,
        nats: &async_nats::Client,
        subject: &str,
    ) -> anyhow::Result<std::process::Child> {
        let child = std::process::Command::new(std::env::current_exe()?)
            .env(RESPONDER_ENV, self.env(subject))
            .stdin(std::process::Stdio::null())
            .spawn()?;
        wait_responding(nats, subject).await;
        Ok(child)
    }

    /// Answers requests on `subject` until killed, every request concurrently, on one
    /// thread as a provider does.
    async fn run(self, subject: String) -> anyhow::Result<()> {
        let nats = common::nats().await;
        let sub = nats.subscribe(subject).await?;
        let redis = match &self {
            Self::RedisGet(_) => Some(
                redis::aio::ConnectionManager::new(redis::Client::open(common::redis_url())?)
                    .await?,
            ),
            _ => None,
        };
        let kv = match &self {
            Self::NatsKvGet(bucket) => Some(
                async_nats::jetstream::new(nats.clone())
                    .get_key_value(bucket)
                    .await?,
            ),
            _ => None,
        };
        let this = &self;
        sub.for_each_concurrent(None, |m| {
            let (nats, mut redis, kv) = (nats.clone(), redis.clone(), kv.clone());
            async move {
                let Some(reply) = m.reply else { return };
                let answer = match (this, redis.as_mut(), kv) {
                    (Self::RedisGet(key), Some(redis), _) => redis::cmd("GET")
                        .arg(key)
                        .query_async::<Option<Vec<u8>>>(redis)
                        .await
                        .ok()
                        .flatten()
                        .map(Bytes::from),
                    (Self::NatsKvGet(_), _, Some(kv)) => kv.get("k").await.ok().flatten(),
                    _ => Some(m.payload),
                };
                // A failed read answers empty; the caller checks the answer.
                let _ = nats.publish(reply, answer.unwrap_or_default()).await;
            }
        })
        .await;
        Ok(())
    }
}

/// Waits until a responder answers on `subject`.
async fn wait_responding(nats: &async_nats::Client, subject: &str) {
    for _ in 0..200 {
        let ask = nats.request(subject.to_string(), Bytes::from_static(b"ping"));
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(100), ask).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the echo responder never answered on {subject}");
}

/// Calls `get(bucket, key)` on a provider the way the shortest wRPC call goes on the wire,
/// without the SDK client: one invocation carrying every parameter (its reply subject ends
/// in `p-complete`, so the server skips the handshake) and one message on `{reply}.results`.
#[derive(Clone)]
struct BareGet {
    nats: async_nats::Client,
    subject: String,
    inbox: String,
    headers: async_nats::HeaderMap,
    params: Bytes,
    next: Arc<AtomicU64>,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Bytes>>>>,
}

impl BareGet {
    async fn new(lattice: &str, provider: &str, source: &str, bucket: &str, key: &str) -> Self {
        let nats = common::nats().await;
        let inbox = format!("{}.", nats.new_inbox());
        let waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Bytes>>>> = Arc::default();
        let mut replies = nats
            .subscribe(format!("{inbox}>"))
            .await
            .expect("subscribe the inbox");
        let routes = Arc::clone(&waiting);
        tokio::spawn(async move {
            while let Some(m) = replies.next().await {
                let waiter = routes.lock().expect("lock").remove(m.subject.as_str());
                if let Some(tx) = waiter {
                    let _ = tx.send(m.payload);
                }
            }
        });
        let prefix = LatticeSubjects::new(lattice)
            .expect("lattice name")
            .wrpc_prefix(provider);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("source-id", source);
        headers.insert("link-name", "default");
        // Two strings: each a LEB128 length and its bytes.
        let mut params = Vec::new();
        for s in [bucket, key] {
            params.push(u8::try_from(s.len()).expect("short string"));
            params.extend_from_slice(s.as_bytes());
        }
        Self {
            nats,
            subject: subjects::invocation(&prefix, "wrpc:keyvalue/store@0.2.0-draft", "get"),
            inbox,
            headers,
            params: params.into(),
            next: Arc::default(),
            waiting,
        }
    }

    async fn call(&self) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let reply = format!("{}{id}.{}", self.inbox, subjects::PARAMS_COMPLETE_TOKEN);
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .expect("lock")
            .insert(subjects::results(&reply), tx);
        self.nats
            .publish_with_reply_and_headers(
                self.subject.clone(),
                reply,
                self.headers.clone(),
                self.params.clone(),
            )
            .await
            .expect("publish");
        let results = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("the provider answers")
            .expect("results");
        // `result::ok` (0), `option::some` (1), then the value.
        assert!(
            results.starts_with(&[0, 1]),
            "unexpected results {results:?}"
        );
    }
}

fn config(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn main() -> anyhow::Result<()> {
    if let Ok(v) = std::env::var(RESPONDER_ENV) {
        let (responder, subject) = Responder::parse(&v)?;
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(responder.run(subject));
    }
    // Every call is made from a task on the runtime's workers, as a service making calls does
    // (not from `block_on`, whose thread is outside the scheduler: each reply would then wake
    // it across threads, a hop a service's own tasks do not make). The same for every row,
    // the baseline too.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async { tokio::spawn(bench()).await? })
}

/// What the steps of the bench share.
struct Bench {
    /// Sequential calls per measurement (throughput rows make four times as many).
    n: usize,
    /// Interleaved rounds.
    rounds: usize,
    nats: async_nats::Client,
    /// The value every row reads and writes.
    value: Bytes,
    /// This process (the caller; for raw NATS also the responder).
    me: Probe,
    /// nats-server, where scripts/services.sh started it.
    nats_server: Option<Probe>,
    /// CPU per call, the two raw rows first.
    cpu_lines: Vec<CpuLine>,
    /// The interleaved rounds' lines.
    round_lines: Vec<String>,
}

/// The raw NATS rows: the ceiling of anything on the lattice.
struct Ceiling {
    /// The better of the two raw rows in each column.
    stats: Stats,
    /// Both raw calls, measured again in each interleaved round.
    calls: [Call; 2],
    /// The responder process of the remote row.
    remote: std::process::Child,
}

/// One backend's own client, the reference of its provider's rows.
struct Backend {
    set: Stats,
    get: Stats,
    get_call: Call,
    /// The backend's process, where it is not nats-server itself.
    process: Option<Probe>,
}

async fn bench() -> anyhow::Result<()> {
    let scale: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let mut b = Bench {
        n: ((4000.0 * scale) as usize).max(200),
        rounds: std::env::var("BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|r: &usize| *r > 0)
            .unwrap_or(7),
        nats: common::nats().await,
        value: Bytes::from_static(b"0123456789abcdef"),
        me: ("bench", std::process::id()),
        // Servers this bench did not start through scripts/services.sh are left out.
        nats_server: service_pid("TRELLIS_NATS_PID").map(|pid| ("nats-server", pid)),
        cpu_lines: Vec::new(),
        round_lines: Vec::new(),
    };
    let (raw, raw_remote, mut ceiling) = b.raw_ceiling().await?;
    let rkey = format!("bench:{}", &common::unique_lattice("")[1..9]);
    let redis = b.redis_client(&rkey).await?;
    let kv_name = format!("BENCH_{}", &common::unique_lattice("")[1..9]);
    let natskv = b.nats_kv_client(&kv_name).await?;

    let n = b.n;
    println!(
        "\n16-byte values, {n} sequential ops (p50/p99, ops/s @1), then {} with {} in flight",
        n * 4,
        in_flight()
    );
    println!(
        "×bk: to the backend's own client; N: the raw NATS ceiling, the better of the two raw rows in each column; added×N: (p50 − backend p50) / N's p50; ×N: to N\n"
    );
    let top = ceiling.stats;
    header();
    row("raw NATS request/reply", raw, raw, top);
    row(
        "raw NATS, replies from another process",
        raw_remote,
        raw,
        top,
    );
    row("redis client SET", redis.set, redis.set, top);
    row("redis client GET", redis.get, redis.get, top);
    row("NATS KV client put", natskv.set, natskv.set, top);
    row("NATS KV client get", natskv.get, natskv.get, top);

    let redis_cfg = config(&[
        ("url", common::redis_url()),
        ("bucket.bench", format!("/{rkey}:")),
    ]);
    let redis_ref = Responder::RedisGet(rkey.clone());
    b.provider("keyvalue-redis", redis_cfg, &redis, redis_ref, &ceiling)
        .await?;
    let nats_cfg = config(&[("bucket.bench", kv_name.clone())]);
    let nats_ref = Responder::NatsKvGet(kv_name.clone());
    b.provider("keyvalue-nats", nats_cfg, &natskv, nats_ref, &ceiling)
        .await?;
    let _ = ceiling.remote.kill();
    let _ = ceiling.remote.wait();
    b.print_rounds_and_cpu();
    Ok(())
}

impl Bench {
    /// A raw NATS request of `value` to `subject`.
    fn raw_request(
        &self,
        subject: &str,
    ) -> impl Fn() -> BoxFuture<'static, ()> + Send + Sync + 'static {
        let (nats, value, subject) = (self.nats.clone(), self.value.clone(), subject.to_string());
        move || {
            let (nats, value, subject) = (nats.clone(), value.clone(), subject.clone());
            Box::pin(async move {
                nats.request(subject, value).await.expect("raw request");
            })
        }
    }

    /// Raw NATS request/reply, twice: answered in this process (requests and replies share
    /// one connection), and answered by another process, as a provider answers.
    async fn raw_ceiling(&mut self) -> anyhow::Result<(Stats, Stats, Ceiling)> {
        let (n, me, nats_server) = (self.n, self.me, self.nats_server);
        let local_subject = format!("bench.kv.echo.{}", &common::unique_lattice("")[1..9]);
        let mut sub = self.nats.subscribe(local_subject.clone()).await?;
        let responder = self.nats.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if let Some(reply) = m.reply {
                    let _ = responder.publish(reply, m.payload).await;
                }
            }
        });
        let raw = measure(n, self.raw_request(&local_subject)).await;
        let probes_local = probes(&[nats_server, Some(me)]);
        let label = "raw NATS request/reply";
        let line = cpu_per_call(
            label,
            n * 4,
            &probes_local,
            self.raw_request(&local_subject),
        );
        self.cpu_lines.push(line.await);

        let remote_subject = format!("bench.kv.echo.{}", &common::unique_lattice("")[1..9]);
        let remote = Responder::Echo.spawn(&self.nats, &remote_subject).await?;
        let raw_remote = measure(n, self.raw_request(&remote_subject)).await;
        let probes_remote = probes(&[nats_server, Some(("responder", remote.id())), Some(me)]);
        let label = "raw NATS, replies from another process";
        let line = cpu_per_call(
            label,
            n * 4,
            &probes_remote,
            self.raw_request(&remote_subject),
        );
        self.cpu_lines.push(line.await);
        // The ceiling is the better of the two raw rows: which one is faster depends on how
        // the scheduler shares the two cores, so taking either one alone would flatter every
        // ratio in the runs where it is the slower.
        let stats = Stats {
            p50: raw.p50.min(raw_remote.p50),
            p99: raw.p99.min(raw_remote.p99),
            one: raw.one.max(raw_remote.one),
            many: raw.many.max(raw_remote.many),
        };
        let calls = [
            boxed(self.raw_request(&local_subject)),
            boxed(self.raw_request(&remote_subject)),
        ];
        Ok((
            raw,
            raw_remote,
            Ceiling {
                stats,
                calls,
                remote,
            },
        ))
    }

    /// Redis's own client setting and getting `key`.
    async fn redis_client(&self, key: &str) -> anyhow::Result<Backend> {
        let redis_client = redis::Client::open(common::redis_url())?;
        let redis_conn = redis::aio::ConnectionManager::new(redis_client).await?;
        let set = measure(self.n, || {
            let mut c = redis_conn.clone();
            let (k, v) = (key.to_string(), self.value.clone());
            async move {
                let _: () = redis::cmd("SET")
                    .arg(k)
                    .arg(v.as_ref())
                    .query_async(&mut c)
                    .await
                    .expect("redis set");
            }
        })
        .await;
        // The backends' gets are measured again in the interleaved rounds: they own what
        // they use.
        let get_call = {
            let key = key.to_string();
            move || {
                let mut c = redis_conn.clone();
                let k = key.clone();
                async move {
                    let _: Option<Vec<u8>> = redis::cmd("GET")
                        .arg(k)
                        .query_async(&mut c)
                        .await
                        .expect("redis get");
                }
            }
        };
        let get = measure(self.n, &get_call).await;
        let process = service_pid("TRELLIS_REDIS_PID").map(|pid| ("redis", pid));
        let get_call = boxed(get_call);
        Ok(Backend {
            set,
            get,
            get_call,
            process,
        })
    }

    /// The NATS KV client putting and getting a key of a new bucket `bucket`.
    async fn nats_kv_client(&self, bucket: &str) -> anyhow::Result<Backend> {
        let js = async_nats::jetstream::new(self.nats.clone());
        let kv = js
            .create_key_value(async_nats::jetstream::kv::Config {
                bucket: bucket.to_string(),
                history: 1,
                ..Default::default()
            })
            .await?;
        let set = measure(self.n, || {
            let kv = kv.clone();
            let v = self.value.clone();
            async move {
                kv.put("k", v).await.expect("kv put");
            }
        })
        .await;
        let get_call = move || {
            let kv = kv.clone();
            async move {
                kv.get("k").await.expect("kv get");
            }
        };
        let get = measure(self.n, &get_call).await;
        let get_call = boxed(get_call);
        Ok(Backend {
            set,
            get,
            get_call,
            process: None,
        })
    }

    /// The rows of provider binary `bin` linked with `cfg`: through the SDK client, bare
    /// NATS and a component in the host, then the interleaved rounds against `reference`.
    async fn provider(
        &mut self,
        bin: &str,
        cfg: HashMap<String, String>,
        backend: &Backend,
        reference: Responder,
        ceiling: &Ceiling,
    ) -> anyhow::Result<()> {
        let (n, top) = (self.n, ceiling.stats);
        let p = ProviderProcess::start(bin, &format!("bench-{bin}")).await;
        let c = p
            .link("bench-caller", "wrpc", "keyvalue", &KV, cfg.clone())
            .await;
        keyvalue::wait_linked_bucket(&c, "bench").await;
        let set = measure(n, || {
            let c = c.clone();
            let v = self.value.clone();
            async move {
                keyvalue::kv(&c)
                    .set("bench", "k", &v)
                    .await
                    .split()
                    .expect("wRPC")
                    .expect("set");
            }
        })
        .await;
        // The calls measured again in the interleaved rounds own what they use.
        let sdk_get = move || {
            let c = c.clone();
            async move {
                keyvalue::kv(&c)
                    .get("bench", "k")
                    .await
                    .split()
                    .expect("wRPC")
                    .expect("get");
            }
        };
        let get = measure(n, &sdk_get).await;
        let provider_probes = probes(&[
            self.nats_server,
            backend.process,
            Some(("provider", p.pid())),
            Some(self.me),
        ]);
        let label = format!("{bin} via SDK client: get");
        let line = cpu_per_call(&label, n * 4, &provider_probes, &sdk_get);
        self.cpu_lines.push(line.await);
        let bare = BareGet::new(&p.lattice, &p.id, "bench-caller", "bench", "k").await;
        let bare_call = {
            let bare = bare.clone();
            move || {
                let bare = bare.clone();
                async move { bare.call().await }
            }
        };
        let bare_get = measure(n, &bare_call).await;
        let label = format!("{bin} via bare NATS: get");
        let line = cpu_per_call(&label, n * 4, &provider_probes, &bare_call);
        self.cpu_lines.push(line.await);

        row(&format!("{bin} via SDK client: set"), set, backend.set, top);
        row(&format!("{bin} via SDK client: get"), get, backend.get, top);
        row(
            &format!("{bin} via bare NATS: get"),
            bare_get,
            backend.get,
            top,
        );

        let comp_get = self.component_get(&p, &cfg, None).await?;
        let comp = measure(n, &comp_get).await;
        let label = format!("{bin} from a component in the host: get");
        row(&label, comp, backend.get, top);
        let kind = InProcessKind::from_name(bin).context("a provider the host runs in-process")?;
        let local_get = self.component_get(&p, &cfg, Some(kind)).await?;
        let local = measure(n, &local_get).await;
        let local_label = format!("{bin} in-process, from a component: get");
        row(&local_label, local, backend.get, top);

        let reference_subject = format!("bench.kv.ref.{}", &common::unique_lattice("")[1..9]);
        let mut responder = reference.spawn(&self.nats, &reference_subject).await?;
        // Plain, and with the headers every wRPC invocation carries (which the responder's
        // client parses, as a provider's does).
        let reference_call = |headers: Option<async_nats::HeaderMap>| {
            let (nats, subject) = (self.nats.clone(), reference_subject.clone());
            move || {
                let (nats, subject, headers) = (nats.clone(), subject.clone(), headers.clone());
                async move {
                    let answer = match headers {
                        Some(h) => nats.request_with_headers(subject, h, Bytes::new()).await,
                        None => nats.request(subject, Bytes::new()).await,
                    }
                    .expect("reference request");
                    assert_eq!(answer.payload.len(), 16, "the reference read failed");
                }
            }
        };
        let ref_label = format!("{bin} reference responder, headers");
        let reference_probes = probes(&[
            self.nats_server,
            backend.process,
            Some(("responder", responder.id())),
            Some(self.me),
        ]);
        let with_headers = reference_call(Some(bare.headers.clone()));
        let line = cpu_per_call(&ref_label, n * 4, &reference_probes, with_headers);
        self.cpu_lines.push(line.await);
        let rows = [
            (
                format!("raw NATS + one {bin} backend read"),
                boxed(reference_call(None)),
            ),
            (
                "  the same, with a wRPC call's headers (ref)".to_string(),
                boxed(reference_call(Some(bare.headers.clone()))),
            ),
            (format!("{bin} via SDK client: get"), boxed(sdk_get)),
            (label, boxed(comp_get)),
            (local_label, boxed(local_get)),
            (format!("{bin} via bare NATS: get"), boxed(bare_call)),
        ];
        let rounds = interleaved(
            self.rounds,
            n * 4,
            &ceiling.calls,
            &rows,
            1,
            &backend.get_call,
        );
        self.round_lines.push(String::new());
        self.round_lines.extend(rounds.await);
        let _ = responder.kill();
        let _ = responder.wait();
        Ok(())
    }

    /// A component in a host of `p`'s lattice calling `wasi:keyvalue` get through `p` (linked
    /// with `cfg`) — or, given `in_process`, through the same provider run in the host's
    /// process: the call that reads it once the link is up.
    async fn component_get(
        &self,
        p: &ProviderProcess,
        cfg: &HashMap<String, String>,
        in_process: Option<InProcessKind>,
    ) -> anyhow::Result<impl Fn() -> BoxFuture<'static, ()> + Send + Sync + 'static> {
        p.store.put_config("bench-kv", cfg).await?;
        let host = Host::new(
            common::nats().await,
            HostOptions {
                lattice: p.lattice.clone(),
                nats_url: common::nats_url(),
                call_timeout: Duration::from_secs(10),
                ..HostOptions::default()
            },
        )
        .await?;
        let (source, target) = match in_process {
            Some(kind) => ("bench-comp-local", format!("bench-local-{}", kind.name())),
            None => ("bench-comp", p.id.clone()),
        };
        host.admin()
            .put_link(
                StoredLink::new(source, &target, "wasi", "keyvalue", KV)
                    .with_target_config(["bench-kv"]),
            )
            .await?;
        let local = match in_process {
            Some(kind) => Some(
                host.start_in_process(&target, kind, HashMap::new(), None)
                    .await?,
            ),
            None => None,
        };
        let comp = host
            .start_component(source, read_component(ECHO_WASM)?, &[])
            .await?;
        let conn = Connection::new(common::nats().await, TransportOptions::default()).await?;
        let client = conn.client(LatticeSubjects::new(&p.lattice)?.wrpc_prefix(source));
        for _ in 0..100 {
            if let Ok(Ok(_)) =
                caller::trellis_test::components::echo::kv_get(&client, None, "bench", "k").await
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The call keeps the host, its component and provider running while it is measured.
        let keep = Arc::new((host, comp, local));
        Ok(move || {
            let (client, keep) = (client.clone(), Arc::clone(&keep));
            Box::pin(async move {
                caller::trellis_test::components::echo::kv_get(&client, None, "bench", "k")
                    .await
                    .expect("wRPC")
                    .expect("component get");
                drop(keep);
            }) as BoxFuture<'static, ()>
        })
    }

    /// The interleaved rounds, then CPU per call.
    fn print_rounds_and_cpu(&self) {
        let n = self.n;
        println!(
            "\nInterleaved: {} rounds of {} sequential calls (p50) and {} calls with {} in flight \
             per row, the raw rows and the backend's client measured again each round; medians \
             (and ranges) over rounds of: throughput to the same round's raw ceiling (×N) and to \
             its reference responder with headers (×ref), and the p50 added over the backend's \
             client in the same round's NATS round trips (added×N)",
            self.rounds,
            (n * 4 / 16).max(50),
            n * 4,
            in_flight()
        );
        println!(
            "{:<44} {:>9} {:>8} {:>8} {:>9}",
            "path", "ops/s @64", "×N", "×ref", "added×N"
        );
        for line in &self.round_lines {
            println!("{line}");
        }
        println!(
            "\nCPU time per call at {} in flight, µs by process (the bench is the caller); cores: \
             how many cores they kept busy; bound ×N: the cheaper raw row's total over the line's, \
             the most of the ceiling's throughput that CPU per call allows once both keep the \
             cores busy\n",
            in_flight()
        );
        // The first two lines are the raw rows: the cheaper one is the ceiling's CPU per call.
        let ceiling_cpu = self.cpu_lines[..2]
            .iter()
            .filter_map(CpuLine::total)
            .min_by(f64::total_cmp);
        for line in &self.cpu_lines {
            println!("{}", line.render(ceiling_cpu));
        }
    }
}
