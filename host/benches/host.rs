//! Host benchmark, one run against one nats-server:
//! - call overhead of a component export (pooled, precompiled instance per call) against the
//!   same trivial function served by an SDK provider (no wasm), both over wRPC;
//! - an import round trip (caller → component → provider → back) against the same provider
//!   call made directly with the SDK client;
//! - a call across a composed boundary (echo and greeter composed into one component, built
//!   with `trellis-compose`) against the same call across a runtime link between the two
//!   components on this host.
//!
//! Prints p50/p99 and throughput at 32 in flight, with ratios to the baseline of each pair.
//! Run: `scripts/bench.sh`, or with TRELLIS_NATS_URL set: `cargo bench -p trellis-host`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use futures::{StreamExt as _, stream};
use trellis_host::{Host, HostOptions, read_component};
use trellis_sdk::config::ProviderConfig;
use trellis_sdk::provider::Provider;
use trellis_sdk::runtime::{CallContext, ProviderHandle};
use trellis_sdk::store::StoredLink;
use trellis_sdk::subjects::LatticeSubjects;
use trellis_wrpc_nats::{Client, Connection, TransportOptions};

use trellis_tests::components as greeter;
mod echo {
    wit_bindgen_wrpc::generate!({
        wrpc_transport_path: "::trellis_wrpc_nats::wrpc_transport",
        inline: "
            package trellis-test:components@0.1.0;
            interface echo {
                echo: func(x: string) -> string;
                greet-via-import: func(name: string) -> string;
            }
            world caller { import echo; export echo; }
        ",
    });
}

const ECHO_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/components/prebuilt/echo.wasm"
);
const GREETER_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/components/prebuilt/greeter.wasm"
);
const IN_FLIGHT: usize = 32;
/// Interleaved rounds of the composition pair.
const ROUNDS: usize = 3;

#[derive(Clone)]
struct Native;
impl Provider for Native {}
impl greeter::exports::trellis_test::greeter::greet::Handler<CallContext> for Native {
    async fn greeting(&self, _cx: CallContext, name: String) -> anyhow::Result<String> {
        Ok(format!("hello, {name}"))
    }
    async fn slow(&self, _cx: CallContext, _ms: u32) -> anyhow::Result<String> {
        Ok(String::new())
    }
}
impl echo::exports::trellis_test::components::echo::Handler<CallContext> for Native {
    async fn echo(&self, _cx: CallContext, x: String) -> anyhow::Result<String> {
        Ok(x)
    }
    async fn greet_via_import(&self, _cx: CallContext, name: String) -> anyhow::Result<String> {
        Ok(name)
    }
}

struct Stats {
    p50: f64,
    p99: f64,
    per_s: f64,
}

async fn measure<F, Fut>(n: usize, call: F) -> Stats
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    for _ in 0..n / 10 {
        call().await.expect("warm-up call failed");
    }
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        call().await.expect("call failed");
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let t = Instant::now();
    let total = n * 4;
    stream::iter(0..total)
        .map(|_| call())
        .buffer_unordered(IN_FLIGHT)
        .for_each(|r| {
            r.expect("call failed");
            async {}
        })
        .await;
    Stats {
        p50: pct(0.5),
        p99: pct(0.99),
        per_s: total as f64 / t.elapsed().as_secs_f64(),
    }
}

/// The round with the median p50 (its p99 and throughput with it).
fn median(mut rounds: Vec<Stats>) -> Stats {
    rounds.sort_by(|a, b| a.p50.total_cmp(&b.p50));
    let mid = rounds.len() / 2;
    rounds.swap_remove(mid)
}

fn row(name: &str, s: &Stats, base: &Stats) {
    println!(
        "{name:<52} {:>9.1} {:>9.1} {:>9.0} {:>7.2} {:>7.2}",
        s.p50,
        s.p99,
        s.per_s,
        s.p50 / base.p50,
        s.per_s / base.per_s
    );
}

fn headers(source: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("source-id", source);
    h
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("TRELLIS_NATS_URL")
        .map_err(|_| anyhow::anyhow!("TRELLIS_NATS_URL is not set: run scripts/bench.sh"))?;
    let scale: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let n = ((2000.0 * scale) as usize).max(50);
    let lattice = format!("hostbench{}", std::process::id());
    let subjects = LatticeSubjects::new(&lattice)?;

    // A native provider serving both interfaces (the baselines).
    let native = ProviderHandle::start(
        ProviderConfig::standalone(&lattice, "native", &url)?,
        Arc::new(Native),
    )
    .await?;
    native.serve(
        greeter::exports::trellis_test::greeter::greet::serve_interface(&native.server(), Native)
            .await?,
    )?;
    native.serve(echo::serve(&native.server(), Native).await?)?;

    let host = Host::new(
        async_nats::connect(url.as_str()).await?,
        HostOptions {
            lattice: lattice.clone(),
            ..HostOptions::default()
        },
    )
    .await?;
    let admin = host.admin();
    for (source, ns, pkg, iface) in [
        ("echo-bench", "trellis-test", "greeter", "greet"),
        ("bench-client", "trellis-test", "greeter", "greet"),
        ("bench-client", "trellis-test", "components", "echo"),
    ] {
        admin
            .put_link(StoredLink::new(source, "native", ns, pkg, [iface]))
            .await?;
    }
    let _component = host
        .start_component("echo-bench", read_component(ECHO_WASM)?, &[])
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let conn = Connection::new(
        async_nats::connect(url.as_str()).await?,
        TransportOptions::default(),
    )
    .await?;
    let to_native: Client = conn.client(subjects.wrpc_prefix("native"));
    let to_component: Client = conn.client(subjects.wrpc_prefix("echo-bench"));

    println!(
        "host benchmark ({n} sequential calls, then {} at {IN_FLIGHT} in flight)",
        n * 4
    );
    println!(
        "{:<52} {:>9} {:>9} {:>9} {:>7} {:>7}",
        "", "p50 µs", "p99 µs", "calls/s", "p50 ×", "thru ×"
    );
    let native_echo = measure(n, || {
        echo::trellis_test::components::echo::echo(&to_native, Some(headers("bench-client")), "x")
    })
    .await;
    let wasm_echo = measure(n, || {
        echo::trellis_test::components::echo::echo(&to_component, None, "x")
    })
    .await;
    row(
        "echo served natively by an SDK provider (baseline)",
        &native_echo,
        &native_echo,
    );
    row(
        "echo served by a component (instance per call)",
        &wasm_echo,
        &native_echo,
    );

    let direct = measure(n, || {
        greeter::trellis_test::greeter::greet::greeting(
            &to_native,
            Some(headers("bench-client")),
            "x",
        )
    })
    .await;
    let via = measure(n, || {
        echo::trellis_test::components::echo::greet_via_import(&to_component, None, "x")
    })
    .await;
    row(
        "provider call with the SDK client (baseline)",
        &direct,
        &direct,
    );
    row(
        "same call as a component import (caller→host→provider)",
        &via,
        &direct,
    );

    // echo → greeter: over a runtime link between two components, then composed into one.
    let greeter = std::fs::read(GREETER_WASM)?;
    let composer = trellis_compose::Composer::new(vec![
        trellis_compose::Part::new("echo", std::fs::read(ECHO_WASM)?),
        trellis_compose::Part::new("greeter", greeter.clone()),
    ])?;
    let plan = composer.plan(&[])?;
    let composed = composer.encode(&plan)?;
    admin
        .put_link(StoredLink::new(
            "echo-linked",
            "greeter-comp",
            "trellis-test",
            "greeter",
            ["greet"],
        ))
        .await?;
    let _greeter = host.start_component("greeter-comp", greeter, &[]).await?;
    let _linked = host
        .start_component("echo-linked", read_component(ECHO_WASM)?, &[])
        .await?;
    let _composed = host.start_component("echo-composed", composed, &[]).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let to_linked: Client = conn.client(subjects.wrpc_prefix("echo-linked"));
    let to_composed: Client = conn.client(subjects.wrpc_prefix("echo-composed"));
    // Interleaved rounds, so drift on the shared machine falls on both alike.
    let (mut linked, mut composed) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        linked.push(
            measure(n / ROUNDS, || {
                echo::trellis_test::components::echo::greet_via_import(&to_linked, None, "x")
            })
            .await,
        );
        composed.push(
            measure(n / ROUNDS, || {
                echo::trellis_test::components::echo::greet_via_import(&to_composed, None, "x")
            })
            .await,
        );
    }
    let (linked, composed) = (median(linked), median(composed));
    row(
        "component→component over a runtime link (baseline)",
        &linked,
        &linked,
    );
    row("same call composed into one component", &composed, &linked);
    Ok(())
}
