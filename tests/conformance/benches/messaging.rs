//! Messaging benchmark: messages per second delivered into a component's handler — the
//! messenger test component in an in-process host — through messaging-nats and
//! messaging-kafka, against a plain client reading the same kind of messages from the same
//! broker (an async-nats subscriber; an rdkafka consumer), in interleaved rounds of one run;
//! then the p50 latency the handler path adds to a request answered by the component
//! (delivered by the provider, answered through it) over one answered by a plain client.
//!
//! Throughput: NATS messages are published while both readers listen, and a round's rate is
//! the messages over the time from the first publish to the last one handled (read, for the
//! plain subscriber). Kafka records are produced first (untimed), then read by a fresh group
//! — the plain consumer's or the provider's — and the rate runs from the first record read
//! to the last, so the group join (seconds on the test broker) is not counted. Deliveries into
//! the component are counted by the provider's own counters (`link ping`), polled every
//! 10 ms or so.
//!
//! Run with `scripts/bench.sh` (release build; needs nats-server and the Kafka-compatible
//! broker). `BENCH_SCALE=0.2` shortens it; `BENCH_ROUNDS` sets the rounds (3).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use futures::StreamExt as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use trellis_conformance::cpu::{self, Probe};
use trellis_conformance::lattice::ProviderProcess;
use trellis_conformance::messaging::deliver_to;
use trellis_host::{Host, HostOptions, read_component};
use trellis_sdk::store::StoredLink;
use trellis_tests as common;

const MESSENGER_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../components/prebuilt/messenger.wasm"
);
/// Messages per throughput round at scale 1.
const MESSAGES: f64 = 20_000.0;
/// Body size.
const BODY: usize = 100;
/// Sequential requests per latency row: NATS's, and Kafka's (whose round trips wait on the
/// broker's fetch cycle: a quarter of a second each on the test broker).
const REQUESTS: usize = 200;
const KAFKA_REQUESTS: usize = 20;
/// Partitions of every topic, subjects of every NATS round: the messages of one partition
/// (subject) are handled one after another, so this is how many the provider may have in
/// flight at once (its default lanes are 16).
const PARTITIONS: i32 = 16;

fn scale() -> f64 {
    std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|s: &f64| *s > 0.0)
        .unwrap_or(1.0)
}

fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(3)
}

fn brokers() -> anyhow::Result<String> {
    std::env::var("TRELLIS_KAFKA_BROKERS")
        .context("TRELLIS_KAFKA_BROKERS is not set: start the services (scripts/services.sh start nats kafka)")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The handler component on a fresh lattice, reached through both providers: each
/// provider delivers into its own instance of the messenger (`via-nats`, `via-kafka`), which
/// answers through the same provider.
struct Lattice {
    nats_provider: ProviderProcess,
    kafka_provider: ProviderProcess,
    /// Running while held.
    _components: Vec<trellis_host::RunningComponent>,
    _host: Host,
}

impl Lattice {
    async fn start(brokers: &str) -> anyhow::Result<Self> {
        let lattice = common::unique_lattice("bench-msg");
        let nats_provider =
            ProviderProcess::start_in("messaging-nats", "bench-msg-nats", &lattice, &[]).await;
        let kafka_provider =
            ProviderProcess::start_in("messaging-kafka", "bench-msg-kafka", &lattice, &[]).await;
        let host = Host::new(
            common::nats().await,
            HostOptions {
                lattice: lattice.clone(),
                nats_url: common::nats_url(),
                call_timeout: Duration::from_secs(10),
                ..HostOptions::default()
            },
        )
        .await?;
        kafka_provider
            .store
            .put_config(
                "bench-kafka",
                &[("brokers".to_string(), brokers.to_string())].into(),
            )
            .await?;
        host.admin()
            .put_link(StoredLink::new(
                "via-nats",
                &nats_provider.id,
                "wasmcloud",
                "messaging",
                ["consumer"],
            ))
            .await?;
        host.admin()
            .put_link(
                StoredLink::new(
                    "via-kafka",
                    &kafka_provider.id,
                    "wasmcloud",
                    "messaging",
                    ["consumer"],
                )
                .with_target_config(["bench-kafka"]),
            )
            .await?;
        let mut components = Vec::new();
        for id in ["via-nats", "via-kafka"] {
            components.push(
                host.start_component(id, read_component(MESSENGER_WASM)?, &[])
                    .await?,
            );
        }
        Ok(Self {
            nats_provider,
            kafka_provider,
            _components: components,
            _host: host,
        })
    }
}

impl Lattice {
    /// The processes whose CPU a path uses: nats-server, the Kafka broker, this one (the
    /// host, the publisher, the readers) and, for delivery into the component, `provider`.
    fn probes(&self, provider: Option<&ProviderProcess>) -> Vec<Probe> {
        let mut probes: Vec<Probe> = [
            ("nats-server", cpu::service_pid("TRELLIS_NATS_PID")),
            ("broker", cpu::service_pid("TRELLIS_KAFKA_PID")),
            ("bench+host", Some(std::process::id())),
            ("provider", provider.map(ProviderProcess::pid)),
        ]
        .into_iter()
        .filter_map(|(name, pid)| Some((name, pid?)))
        .collect();
        probes.dedup();
        probes
    }
}

/// Handled deliveries of `p`'s links so far (`link ping`, waiting 20 ms for the answer: on
/// loopback it comes in well under one).
async fn handled(p: &ProviderProcess) -> u64 {
    let nats = common::nats().await;
    let Ok(subjects) = trellis_sdk::subjects::LatticeSubjects::new(&p.lattice) else {
        return 0;
    };
    trellis_sdk::admin::ping_links(&nats, &subjects, Some(&p.id), Duration::from_millis(20))
        .await
        .unwrap_or_default()
        .into_iter()
        .flat_map(|r| r.links)
        .filter_map(|l| l.delivery)
        .map(|d| d.delivered)
        .sum()
}

/// Waits until `p` has handled `target` deliveries; the time of the first one seen past
/// `base` and of the last.
async fn wait_handled(
    p: &ProviderProcess,
    base: u64,
    target: u64,
    limit: Duration,
) -> anyhow::Result<(Instant, Instant)> {
    let started = Instant::now();
    let mut first = None;
    loop {
        let now = handled(p).await;
        if now > base && first.is_none() {
            first = Some(Instant::now());
        }
        if now >= target {
            return Ok((first.unwrap_or_else(Instant::now), Instant::now()));
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "only {} of {} handled",
            now - base,
            target - base
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One NATS round: the plain subscriber's rate, then the component's.
async fn nats_round(lat: &Lattice, round: usize, n: u64) -> anyhow::Result<Round> {
    let nats = common::nats().await;
    let publisher = async_nats::connect(common::nats_url()).await?;
    let body = Bytes::from(vec![b'x'; BODY]);

    let prefix = format!("bench.direct.{round}");
    let mut sub = nats.subscribe(format!("{prefix}.>")).await?;
    nats.flush().await?;
    let cpu = Cpu::start(&lat.probes(None));
    let started = Instant::now();
    let publish = tokio::spawn(publish_spread(publisher.clone(), prefix, n, body.clone()));
    let mut got = 0;
    while got < n {
        tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .context("the plain subscriber stalled")?
            .context("subscription ended")?;
        got += 1;
    }
    let direct = n as f64 / started.elapsed().as_secs_f64();
    let direct_cpu = cpu.per_message(n);
    publish.await??;

    let base = handled(&lat.nats_provider).await;
    let cpu = Cpu::start(&lat.probes(Some(&lat.nats_provider)));
    let started = Instant::now();
    publish_spread(publisher, "bench.via".into(), n, body).await?;
    let (_, last) =
        wait_handled(&lat.nats_provider, base, base + n, Duration::from_secs(120)).await?;
    let via = n as f64 / (last - started).as_secs_f64();
    Ok(Round {
        direct,
        via,
        direct_cpu,
        via_cpu: cpu.per_message(n),
    })
}

/// Publishes `n` copies of `body` round-robin on [`PARTITIONS`] subjects under `prefix`.
async fn publish_spread(
    publisher: async_nats::Client,
    prefix: String,
    n: u64,
    body: Bytes,
) -> anyhow::Result<()> {
    let subjects: Vec<String> = (0..PARTITIONS).map(|i| format!("{prefix}.{i}")).collect();
    for seq in 0..n {
        let subject = subjects[(seq % PARTITIONS as u64) as usize].clone();
        publisher.publish(subject, body.clone()).await?;
    }
    publisher.flush().await?;
    Ok(())
}

/// One round of one backend: rates (messages/s) and CPU (µs per message, every probed
/// process together) of the plain reader and of delivery into the component.
struct Round {
    direct: f64,
    via: f64,
    direct_cpu: Option<f64>,
    via_cpu: Option<f64>,
}

/// CPU time of the probed processes from `start` on.
struct Cpu {
    probes: Vec<Probe>,
    before: Vec<Option<Duration>>,
}

impl Round {
    fn line(&self) -> String {
        let us = |c: Option<f64>| c.map_or("?".to_string(), |c| format!("{c:.1}"));
        format!(
            "{:.0} vs {:.0} msg/s, CPU {} vs {} µs/msg (plain reader vs into the component)",
            self.direct,
            self.via,
            us(self.direct_cpu),
            us(self.via_cpu)
        )
    }
}

impl Cpu {
    fn start(probes: &[Probe]) -> Self {
        Self {
            probes: probes.to_vec(),
            before: probes.iter().map(|(_, pid)| cpu::cpu_time(*pid)).collect(),
        }
    }

    /// µs per message of the CPU time used since `start`, all probes together; each
    /// probe's share goes to stderr (where a path's cost is).
    fn per_message(&self, n: u64) -> Option<f64> {
        let mut total = 0.0;
        let mut shares = Vec::new();
        for ((name, pid), before) in self.probes.iter().zip(&self.before) {
            let used = cpu::cpu_time(*pid)?.saturating_sub((*before)?);
            let us = used.as_secs_f64() * 1e6 / n as f64;
            shares.push(format!("{name} {us:.1}"));
            total += us;
        }
        eprintln!("    CPU µs/msg: {}", shares.join(", "));
        Some(total)
    }
}

async fn create_topic(brokers: &str, name: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    for result in admin
        .create_topics(
            &[NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?
    {
        result.map_err(|(topic, code)| anyhow::anyhow!("{topic}: {code}"))?;
    }
    Ok(())
}

fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?)
}

/// Produces `n` records of [`BODY`] bytes to `topic`, spread over its partitions.
async fn produce(brokers: &str, topic: &str, n: u64) -> anyhow::Result<()> {
    let producer = producer(brokers)?;
    let body = vec![b'x'; BODY];
    let sends = futures::stream::iter(0..n).map(|seq| {
        let producer = &producer;
        let body = &body;
        async move {
            let record: FutureRecord<'_, (), [u8]> = FutureRecord::to(topic)
                .partition((seq % PARTITIONS as u64) as i32)
                .payload(&body[..]);
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))
        }
    });
    let results: Vec<_> = sends.buffer_unordered(1024).collect().await;
    results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok(())
}

fn group_consumer(brokers: &str, group: &str) -> anyhow::Result<StreamConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "2000")
        .set("heartbeat.interval.ms", "500")
        .create()?)
}

/// One Kafka round: `n` records produced to a fresh topic, read by the plain consumer, then
/// the same number from another fresh topic delivered into the component.
async fn kafka_round(lat: &Lattice, brokers: &str, round: usize, n: u64) -> anyhow::Result<Round> {
    let tag = &common::unique_lattice("")[1..9];
    let (direct_topic, via_topic) = (format!("bench-direct-{tag}"), format!("bench-via-{tag}"));
    create_topic(brokers, &direct_topic).await?;
    create_topic(brokers, &via_topic).await?;
    produce(brokers, &direct_topic, n).await?;
    produce(brokers, &via_topic, n).await?;

    let consumer = group_consumer(brokers, &format!("bench-direct-{tag}"))?;
    consumer.subscribe(&[&direct_topic])?;
    let mut first = None;
    for _ in 0..n {
        tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .context("the plain consumer stalled")??;
        if first.is_none() {
            first = Some((Instant::now(), Cpu::start(&lat.probes(None))));
        }
    }
    let (direct, direct_cpu) = match first {
        Some((at, cpu)) => (
            n as f64 / at.elapsed().as_secs_f64(),
            cpu.per_message(n - 1),
        ),
        None => (f64::NAN, None),
    };
    drop(consumer);

    let base = handled(&lat.kafka_provider).await;
    deliver_to(
        &lat.kafka_provider,
        "via-kafka",
        &[
            ("brokers", brokers.to_string()),
            ("topics", via_topic.clone()),
            ("group_id", format!("bench-via-{tag}-{round}")),
            ("session_timeout_ms", "2000".to_string()),
            ("heartbeat_interval_ms", "500".to_string()),
        ],
    )
    .await;
    // The group join is not counted: CPU from the first delivery on (polled, so a few
    // messages early or late out of thousands).
    let started = Instant::now();
    while handled(&lat.kafka_provider).await == base {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "nothing delivered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cpu = Cpu::start(&lat.probes(Some(&lat.kafka_provider)));
    let (first, last) = wait_handled(
        &lat.kafka_provider,
        base,
        base + n,
        Duration::from_secs(180),
    )
    .await?;
    let via = n as f64 / (last - first).as_secs_f64();
    Ok(Round {
        direct,
        via,
        direct_cpu,
        via_cpu: cpu.per_message(n),
    })
}

/// p50 of `requests` sequential round trips of `call`, after a few unmeasured ones.
async fn p50<F, Fut>(requests: usize, mut call: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    for _ in 0..5 {
        call().await?;
    }
    let mut times = Vec::with_capacity(requests);
    for _ in 0..requests {
        let started = Instant::now();
        call().await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// NATS request/reply answered by a plain subscriber, then by the component (delivered on
/// `bench.via` with the request's reply subject, answered through the provider).
async fn nats_latency() -> anyhow::Result<(Duration, Duration)> {
    let nats = common::nats().await;
    let responder = async_nats::connect(common::nats_url()).await?;
    let mut requests = responder.subscribe("bench.echo").await?;
    tokio::spawn(async move {
        while let Some(req) = requests.next().await {
            if let Some(reply) = req.reply {
                let _ = responder
                    .publish(reply, Bytes::from(req.payload.to_ascii_uppercase()))
                    .await;
            }
        }
    });
    nats.flush().await?;
    let body = Bytes::from(vec![b'x'; BODY]);
    let ask = |subject: &'static str| {
        let (nats, body) = (nats.clone(), body.clone());
        move || {
            let (nats, body) = (nats.clone(), body.clone());
            async move {
                let answer =
                    tokio::time::timeout(Duration::from_secs(10), nats.request(subject, body))
                        .await
                        .context("no answer")??;
                anyhow::ensure!(answer.payload.len() == BODY, "a wrong answer");
                Ok(())
            }
        }
    };
    let direct = p50(REQUESTS, ask("bench.echo")).await?;
    let via = p50(REQUESTS, ask("bench.via.0")).await?;
    Ok((direct, via))
}

/// A consumer of every partition of `topic` from its end (answers only).
fn answers_reader(brokers: &str, topic: &str) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("answers-{topic}"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut list = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        let (_, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
        list.add_partition_offset(topic, partition, Offset::Offset(high))?;
    }
    consumer.assign(&list)?;
    Ok(consumer)
}

/// Kafka request/reply: a record with a `reply-to` header answered by a plain consumer (which
/// produces the answer), then by the component (delivered by the provider, its answer
/// produced through the provider); the asker reads the answers topic.
async fn kafka_latency(lat: &Lattice, brokers: &str) -> anyhow::Result<(Duration, Duration)> {
    let tag = &common::unique_lattice("")[1..9];
    let (echo, via, answers) = (
        format!("lat-echo-{tag}"),
        format!("lat-via-{tag}"),
        format!("lat-answers-{tag}"),
    );
    for t in [&echo, &via, &answers] {
        create_topic(brokers, t).await?;
    }
    // The plain responder: its own group on the echo topic, answering with a producer.
    let responder = group_consumer(brokers, &format!("echo-{tag}"))?;
    responder.subscribe(&[&echo])?;
    let answerer = producer(brokers)?;
    tokio::spawn(async move {
        while let Ok(record) = responder.recv().await {
            let reply = record.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == "reply-to")
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            });
            let (Some(reply), Some(body)) = (reply, record.payload()) else {
                continue;
            };
            let body = body.to_ascii_uppercase();
            let _ = answerer
                .send(
                    FutureRecord::<(), [u8]>::to(&reply).payload(&body[..]),
                    Duration::from_secs(10),
                )
                .await;
        }
    });
    deliver_to(
        &lat.kafka_provider,
        "via-kafka",
        &[
            ("brokers", brokers.to_string()),
            ("topics", via.clone()),
            ("group_id", format!("lat-via-{tag}")),
            ("session_timeout_ms", "2000".to_string()),
            ("heartbeat_interval_ms", "500".to_string()),
        ],
    )
    .await;
    let reader = answers_reader(brokers, &answers)?;
    let asker = producer(brokers)?;
    let ask = |topic: String| {
        let (reader, asker, answers) = (&reader, &asker, answers.clone());
        move || {
            let (topic, answers) = (topic.clone(), answers.clone());
            async move {
                let headers = OwnedHeaders::new().insert(Header {
                    key: "reply-to",
                    value: Some(answers.as_bytes()),
                });
                asker
                    .send(
                        FutureRecord::<(), [u8]>::to(&topic)
                            .payload(&[b'x'; BODY][..])
                            .headers(headers),
                        Duration::from_secs(10),
                    )
                    .await
                    .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
                // The first answers wait for the responders' groups to form.
                tokio::time::timeout(Duration::from_secs(60), reader.recv())
                    .await
                    .context("no answer")??;
                Ok(())
            }
        }
    };
    let direct = p50(KAFKA_REQUESTS, ask(echo.clone())).await?;
    let via = p50(KAFKA_REQUESTS, ask(via.clone())).await?;
    Ok((direct, via))
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let n = ((MESSAGES * scale()) as u64).max(1000);
    let lat = Lattice::start(&brokers).await?;
    deliver_to(
        &lat.nats_provider,
        "via-nats",
        &[("subscriptions", "bench.via.>".to_string())],
    )
    .await;
    // Warm up: the subscription and the component answer once before anything is timed.
    let nats = common::nats().await;
    common::eventually(|| async {
        let answer = tokio::time::timeout(
            Duration::from_millis(500),
            nats.request("bench.via.0", Bytes::from_static(b"warm")),
        )
        .await;
        Ok::<_, anyhow::Error>(matches!(answer, Ok(Ok(_))).then_some(()).context("not yet"))
    })
    .await??;

    let mut rows: HashMap<&str, Vec<Round>> = HashMap::new();
    for round in 0..rounds() {
        let r = nats_round(&lat, round, n).await?;
        println!("round {round} nats : {}", r.line());
        rows.entry("nats").or_default().push(r);
        let r = kafka_round(&lat, &brokers, round, n).await?;
        println!("round {round} kafka: {}", r.line());
        rows.entry("kafka").or_default().push(r);
    }
    let (nats_direct, nats_via) = nats_latency().await?;
    let (kafka_direct, kafka_via) = kafka_latency(&lat, &brokers).await?;

    println!(
        "\nmessaging: {n} messages of {BODY} bytes per round, median of {} interleaved rounds",
        rounds()
    );
    println!(
        "{:<7}{:>13}{:>17}{:>8}  {:>22}{:>8}{:>12}{:>16}",
        "",
        "plain msg/s",
        "component msg/s",
        "ratio",
        "CPU µs/msg plain/comp",
        "bound",
        "plain p50",
        "component p50"
    );
    for (name, (direct_p50, via_p50)) in [
        ("nats", (nats_direct, nats_via)),
        ("kafka", (kafka_direct, kafka_via)),
    ] {
        let rounds = rows.remove(name).unwrap_or_default();
        let col = |f: fn(&Round) -> Option<f64>| median(rounds.iter().filter_map(f).collect());
        let (direct_cpu, via_cpu) = (col(|r| r.direct_cpu), col(|r| r.via_cpu));
        println!(
            "{name:<7}{:>13.0}{:>17.0}{:>7.3}×  {:>12.1} /{:>8.1}{:>7.3}×{:>9.2} ms{:>13.2} ms",
            col(|r| Some(r.direct)),
            col(|r| Some(r.via)),
            col(|r| Some(r.via / r.direct)),
            direct_cpu,
            via_cpu,
            direct_cpu / via_cpu,
            direct_p50.as_secs_f64() * 1e3,
            via_p50.as_secs_f64() * 1e3,
        );
    }
    println!(
        "(bound: the plain reader's CPU per message over the component path's — the ratio the \
         path cannot pass once the machine's cores are busy)"
    );
    println!(
        "(p50: sequential requests ({REQUESTS} NATS, {KAFKA_REQUESTS} Kafka) answered by a plain \
         client, and by the component through the provider both ways)"
    );
    Ok(())
}
