//! Listing benchmark: every key of a bucket of 10,000 and of 100,000 keys listed through
//! each keyvalue provider (pages of 1,000, the SDK client), against the backend's own client
//! listing the same keys (async-nats' `keys()`; Redis `SCAN MATCH prefix* COUNT 1000`), in
//! one run, and how the time grows from the smaller bucket to the larger: a listing whose
//! cost is linear in the keys grows ×10; one that rescans the bucket for each page grows
//! about ×100.
//!
//! Run with `scripts/bench.sh` (release build; needs nats-server and redis-server).
//! `BENCH_SCALE=0.2` lists 2,000 and 20,000 keys instead.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use trellis_conformance::keyvalue::{BUCKET, kv, list_all, wait_linked};
use trellis_conformance::lattice::ProviderProcess;
use trellis_interfaces::SplitCall as _;
use trellis_tests as common;

const KV: [&str; 3] = ["store", "atomics", "batch"];
const PAGE: &str = "1000";

fn scale() -> f64 {
    std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|s: &f64| *s > 0.0)
        .unwrap_or(1.0)
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("key-{i:07}")).collect()
}

/// Writes `n` keys through the provider (batches of 500).
async fn fill(c: &trellis_sdk::runtime::LinkedClient, n: usize) -> anyhow::Result<()> {
    let value = Bytes::from_static(b"v");
    let all = keys(n);
    for chunk in all.chunks(500) {
        let items: Vec<(&str, &Bytes)> = chunk.iter().map(|k| (k.as_str(), &value)).collect();
        kv(c)
            .set_many(BUCKET, &items)
            .await
            .split()?
            .map_err(|e| anyhow::anyhow!("set-many: {e:?}"))?;
    }
    Ok(())
}

/// (provider listing, direct listing) times for `n` keys of keyvalue-nats.
async fn nats(n: usize) -> anyhow::Result<(Duration, Duration)> {
    let nats = common::nats().await;
    let js = async_nats::jetstream::new(nats.clone());
    let name = format!("LIST_{}", &common::unique_lattice("")[1..9]);
    let store = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: name.clone(),
            history: 1,
            ..Default::default()
        })
        .await?;
    let p = ProviderProcess::start("keyvalue-nats", "bench-list-nats").await;
    let cfg: HashMap<String, String> = [
        (format!("bucket.{BUCKET}"), name.clone()),
        ("page_size".to_string(), PAGE.to_string()),
        ("timeout_ms".to_string(), "60000".to_string()),
    ]
    .into();
    let c = p.link("bench-list", "wrpc", "keyvalue", &KV, cfg).await;
    wait_linked(&c).await;
    fill(&c, n).await?;
    let started = Instant::now();
    let listed = list_all(&c, BUCKET).await;
    let via = started.elapsed();
    anyhow::ensure!(listed.len() == n, "listed {} of {n}", listed.len());
    let started = Instant::now();
    let direct = store.keys().await?.count().await;
    let plain = started.elapsed();
    anyhow::ensure!(direct == n, "the client listed {direct} of {n}");
    js.delete_key_value(&name).await?;
    Ok((via, plain))
}

/// (provider listing, direct listing) times for `n` keys of keyvalue-redis.
async fn redis(n: usize) -> anyhow::Result<(Duration, Duration)> {
    let prefix = format!("list{}:", &common::unique_lattice("")[1..9]);
    let p = ProviderProcess::start("keyvalue-redis", "bench-list-redis").await;
    let cfg: HashMap<String, String> = [
        ("url".to_string(), common::redis_url()),
        (format!("bucket.{BUCKET}"), format!("/{prefix}")),
        ("scan_count".to_string(), PAGE.to_string()),
        ("timeout_ms".to_string(), "60000".to_string()),
    ]
    .into();
    let c = p.link("bench-list", "wrpc", "keyvalue", &KV, cfg).await;
    wait_linked(&c).await;
    fill(&c, n).await?;
    let started = Instant::now();
    let listed = list_all(&c, BUCKET).await;
    let via = started.elapsed();
    anyhow::ensure!(listed.len() == n, "listed {} of {n}", listed.len());
    let mut conn = redis::Client::open(common::redis_url())?
        .get_multiplexed_async_connection()
        .await?;
    let started = Instant::now();
    let (mut cursor, mut found) = (0u64, std::collections::HashSet::new());
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(PAGE)
            .query_async(&mut conn)
            .await?;
        found.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let plain = started.elapsed();
    anyhow::ensure!(found.len() == n, "SCAN found {} of {n}", found.len());
    // Leave the shared server as it was.
    let all: Vec<String> = found.into_iter().collect();
    for chunk in all.chunks(1000) {
        let _: i64 = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await?;
    }
    Ok((via, plain))
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let small = ((10_000.0 * scale()) as usize).max(1000);
        let large = small * 10;
        println!(
            "listing: every key, pages of {PAGE}; seconds (ratio: the backend's client's time over \
             the provider's, 1.00× = as fast)"
        );
        println!(
            "{:<16}{:>12}{:>12}{:>8}{:>12}{:>12}{:>8}{:>16}",
            "",
            format!("{small} via"),
            "direct",
            "ratio",
            format!("{large} via"),
            "direct",
            "ratio",
            "growth via/dir"
        );
        type Lister =
            fn(usize) -> futures::future::BoxFuture<'static, anyhow::Result<(Duration, Duration)>>;
        let rows: [(&str, Lister); 2] = [
            ("keyvalue-nats", |n| Box::pin(nats(n))),
            ("keyvalue-redis", |n| Box::pin(redis(n))),
        ];
        for (name, list) in rows {
            let (sv, sd) = list(small).await?;
            let (lv, ld) = list(large).await?;
            let s = |d: Duration| d.as_secs_f64();
            println!(
                "{name:<16}{:>12.3}{:>12.3}{:>7.2}×{:>12.3}{:>12.3}{:>7.2}×{:>8.1}× /{:>5.1}×",
                s(sv),
                s(sd),
                s(sd) / s(sv),
                s(lv),
                s(ld),
                s(ld) / s(lv),
                s(lv) / s(sv),
                s(ld) / s(sd),
            );
        }
        Ok(())
    })
}
