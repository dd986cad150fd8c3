//! messaging-kafka over the lattice against the Kafka-compatible broker, with a handler
//! standing in for the component it delivers to: 10,000 records on four partitions all
//! handled, in offset order per partition, by a handler that fails the first two tries of
//! every fifth; the provider killed (`kill -9`) mid-stream and restarted: every record
//! handled at least once; two instances in one group split the partitions with nothing
//! lost or handled twice; a component's publish (with its `reply-to`) reaching the topic;
//! requests answered through the link's reply topic, each with its own answer; and records
//! whose attempts are spent going to the dead-letter topic.
//!
//! The broker's group join takes about half the session timeout, so the links use a 2 s
//! session (500 ms heartbeats).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use trellis_conformance::lattice::ProviderProcess;
use trellis_conformance::messaging::{Recorder, deliver_to, delivered, fast_retries, stand_in};
use trellis_interfaces::messaging::{ConsumerClient, Message};
use trellis_tests as common;

const PARTITIONS: i32 = 4;

/// The test broker's address; panics when the services are not running.
fn brokers() -> String {
    std::env::var("TRELLIS_KAFKA_BROKERS").unwrap_or_else(|_| {
        panic!("TRELLIS_KAFKA_BROKERS is not set: start the test services (scripts/services.sh start kafka)")
    })
}

/// A fresh topic of [`PARTITIONS`] partitions on the test broker.
async fn topic(tag: &str) -> String {
    let name = format!("trellis-{tag}-{}", &common::unique_lattice("")[1..9]);
    create_topic(&brokers(), &name).await.expect("create topic");
    name
}

/// Creates `name` ([`PARTITIONS`] partitions) on `brokers`.
async fn create_topic(brokers: &str, name: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let created = admin
        .create_topics(
            &[NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?;
    for result in created {
        result.map_err(|(topic, code)| anyhow::anyhow!("{topic}: {code}"))?;
    }
    Ok(())
}

/// Produces records `range` to `topic` on the test broker, record `seq` to partition
/// `seq % PARTITIONS`.
async fn produce(topic: &str, range: std::ops::Range<u64>) {
    produce_on(&brokers(), topic, range, &[0, 1, 2, 3]).await;
}

/// Produces records `range` to `topic` on `brokers`, record `seq` to partition
/// `partitions[seq % partitions.len()]`.
async fn produce_on(brokers: &str, topic: &str, range: std::ops::Range<u64>, partitions: &[i32]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let sends = range.map(|seq| {
        let producer = &producer;
        async move {
            let body = seq.to_string();
            let record: FutureRecord<'_, (), String> = FutureRecord::to(topic)
                .partition(partitions[(seq % partitions.len() as u64) as usize])
                .payload(&body);
            producer
                .send(record, Duration::from_secs(10))
                .await
                .map_err(|(e, _)| e)
                .expect("produce")
        }
    });
    futures::future::join_all(sends).await;
}

/// The source config of a link delivering `topic` of the test broker with group `group`.
fn source(topic: &str, group: &str) -> Vec<(&'static str, String)> {
    source_on(&brokers(), topic, group)
}

/// The source config of a link delivering `topic` of `brokers` with group `group`.
fn source_on(brokers: &str, topic: &str, group: &str) -> Vec<(&'static str, String)> {
    fast_retries(vec![
        ("brokers", brokers.to_string()),
        ("topics", topic.to_string()),
        ("group_id", group.to_string()),
        ("session_timeout_ms", "2000".to_string()),
        ("heartbeat_interval_ms", "500".to_string()),
    ])
}

/// Each partition's handled records, in handling order.
fn by_partition(recorder: &Recorder) -> HashMap<u64, Vec<u64>> {
    let mut out: HashMap<u64, Vec<u64>> = HashMap::new();
    for seqs in recorder.by_subject().into_values() {
        for seq in seqs {
            out.entry(seq % PARTITIONS as u64).or_default().push(seq);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_all_handled_in_order_per_partition() {
    let topic = topic("order").await;
    const N: u64 = 10_000;
    produce(&topic, 0..N).await;
    let p = ProviderProcess::start("messaging-kafka", "kafka-order").await;
    let recorder = Recorder {
        flaky: true,
        ..Recorder::default()
    };
    let _comp = stand_in(&p.lattice, "comp", recorder.clone()).await;
    deliver_to(&p, "comp", &source(&topic, "order")).await;
    recorder
        .wait_for(N as usize, Duration::from_secs(180))
        .await;
    for (partition, seqs) in by_partition(&recorder) {
        let expected: Vec<u64> = (0..N)
            .filter(|s| s % PARTITIONS as u64 == partition)
            .collect();
        assert!(
            seqs == expected,
            "partition {partition}: {} records, out of order or duplicated",
            seqs.len()
        );
    }
    let stats = delivered(&p).await;
    assert!(stats[0].retried >= 2 * N / 5, "{stats:?}");
    assert_eq!(stats[0].dropped, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_provider_loses_nothing_once_restarted() {
    let topic = topic("kill").await;
    const N: u64 = 4_000;
    let lattice = common::unique_lattice("kafka-kill");
    let recorder = Recorder::default();
    let _comp = stand_in(&lattice, "comp", recorder.clone()).await;
    let mut p = ProviderProcess::start_in("messaging-kafka", "kafka-kill", &lattice, &[]).await;
    deliver_to(&p, "comp", &source(&topic, "kill")).await;
    produce(&topic, 0..N).await;
    // Mid-stream: some handled, not all.
    recorder
        .wait_for(N as usize / 4, Duration::from_secs(120))
        .await;
    p.kill();
    let before = recorder.count();
    assert!(
        before < N as usize,
        "everything was handled before the kill"
    );
    let p2 = ProviderProcess::start_in("messaging-kafka", "kafka-kill", &lattice, &[]).await;
    // The restarted provider pulls the link from the lattice and rejoins the group; the
    // rest, and whatever was handled but not committed, comes again.
    recorder
        .wait_for_distinct(N as usize, Duration::from_secs(180))
        .await;
    let handled: HashSet<u64> = recorder.by_subject().into_values().flatten().collect();
    assert_eq!(handled.len(), N as usize);
    eprintln!(
        "handled {} records for {N} produced ({before} before the kill)",
        recorder.count()
    );
    drop(p2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_split_the_partitions_with_nothing_lost_or_doubled() {
    let topic = topic("split").await;
    let lattice = common::unique_lattice("kafka-split");
    let recorder = Recorder::default();
    let _comp = stand_in(&lattice, "comp", recorder.clone()).await;
    let a = ProviderProcess::start_in("messaging-kafka", "kafka-split", &lattice, &[]).await;
    let _b = ProviderProcess::start_in("messaging-kafka", "kafka-split", &lattice, &[]).await;
    deliver_to(&a, "comp", &source(&topic, "split")).await;
    common::eventually(|| async {
        let n = delivered(&a).await.len();
        Ok::<_, anyhow::Error>((n == 2).then_some(()).ok_or(format!("{n} of 2 instances")))
    })
    .await
    .unwrap()
    .unwrap();
    // Both members in the group before the records come (a rebalance under load may hand a
    // partition over with records handled but not yet committed: read again, as at least
    // once allows — this test is about the steady state).
    tokio::time::sleep(Duration::from_secs(3)).await;
    const N: u64 = 4_000;
    produce(&topic, 0..N).await;
    recorder
        .wait_for(N as usize, Duration::from_secs(120))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen: Vec<u64> = recorder.by_subject().into_values().flatten().collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..N).collect::<Vec<_>>(), "lost or handled twice");
    let per_instance: Vec<u64> = delivered(&a).await.iter().map(|d| d.delivered).collect();
    assert!(
        per_instance.iter().all(|n| *n > 0),
        "one instance did all the work: {per_instance:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_publishes_with_its_reply_to() {
    let topic = topic("publish").await;
    let p = ProviderProcess::start("messaging-kafka", "kafka-publish").await;
    let config: HashMap<String, String> = [("brokers".to_string(), brokers())].into();
    let c = p
        .link("app", "wasmcloud", "messaging", &["consumer"], config)
        .await;
    let consumer = ConsumerClient::new(&c, ());
    common::eventually(|| async {
        Ok::<_, anyhow::Error>(
            consumer
                .publish(Message {
                    subject: topic.clone(),
                    body: Bytes::from("hello"),
                    reply_to: Some("answers".into()),
                })
                .await,
        )
    })
    .await
    .unwrap()
    .unwrap();
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("reader-{topic}"))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "2000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .unwrap();
    reader.subscribe(&[&topic]).unwrap();
    let record = tokio::time::timeout(Duration::from_secs(30), reader.recv())
        .await
        .expect("no record")
        .unwrap();
    assert_eq!(record.payload(), Some(&b"hello"[..]));
    let reply = record
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == "reply-to").and_then(|h| h.value));
    assert_eq!(reply, Some(&b"answers"[..]));
    // A link without a reply topic refuses requests, saying what is missing.
    let err = consumer
        .request(&topic, &Bytes::from("x"), 100)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("names no reply_topic"), "{err}");
    // A subject that cannot be a topic is refused before anything is sent.
    let err = consumer
        .publish(Message {
            subject: "no spaces allowed".into(),
            body: Bytes::new(),
            reply_to: None,
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a valid Kafka topic"), "{err}");
}

/// The broker stops and comes back; the provider, still running, reconnects, rejoins its
/// group and delivers what comes next. The test broker keeps everything in memory, so a
/// restart also loses the topic (recreated here), its records and the group's offsets:
/// records reuse offsets the consumer had read past on partitions it kept. That loss is the
/// test broker's, not a real cluster's; the records after the restart go to partitions that
/// had none before, so what is checked is the recovery, not the broker's amnesia.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_is_rejoined_without_restarting_the_provider() {
    let mut broker = common::OwnKafka::start();
    let topic = format!("trellis-restart-{}", &common::unique_lattice("")[1..9]);
    create_topic(&broker.brokers(), &topic).await.unwrap();
    let lattice = common::unique_lattice("kafka-restart");
    let recorder = Recorder::default();
    let _comp = stand_in(&lattice, "comp", recorder.clone()).await;
    let mut p = ProviderProcess::start_in("messaging-kafka", "kafka-restart", &lattice, &[]).await;
    deliver_to(&p, "comp", &source_on(&broker.brokers(), &topic, "restart")).await;
    produce_on(&broker.brokers(), &topic, 0..500, &[0, 1]).await;
    recorder.wait_for(500, Duration::from_secs(120)).await;
    // Handled positions are committed within 200 ms; then the broker goes, and (memory
    // storage) its topics and groups with it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.restart();
    let started = std::time::Instant::now();
    while let Err(err) = create_topic(&broker.brokers(), &topic).await {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "cannot recreate the topic: {err}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    produce_on(&broker.brokers(), &topic, 500..1000, &[2, 3]).await;
    recorder
        .wait_for_distinct(1000, Duration::from_secs(180))
        .await;
    assert!(p.is_running(), "the provider restarted or died");
}

/// Answers each request it is handed, upper-cased, by publishing to its `reply_to` through
/// the provider (as a component would).
#[derive(Clone)]
struct Answerer(trellis_sdk::runtime::LinkedClient);

impl trellis_interfaces::messaging::MessageHandler<trellis_wrpc_nats::ServeContext> for Answerer {
    async fn handle_message(
        &self,
        _: trellis_wrpc_nats::ServeContext,
        msg: Message,
    ) -> Result<(), String> {
        let reply_to = msg.reply_to.ok_or("no reply_to")?;
        ConsumerClient::new(&self.0, ())
            .publish(Message {
                subject: reply_to,
                body: Bytes::from(msg.body.to_ascii_uppercase()),
                reply_to: None,
            })
            .await
            .map_err(|e| e.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_answered_through_the_reply_topic() {
    let (requests, answers) = (topic("requests").await, topic("answers").await);
    let p = ProviderProcess::start("messaging-kafka", "kafka-request").await;
    let broker: HashMap<String, String> = [("brokers".to_string(), brokers())].into();
    let mut asker = broker.clone();
    asker.insert("reply_topic".into(), answers.clone());
    let c = p
        .link("app", "wasmcloud", "messaging", &["consumer"], asker)
        .await;
    let responder = p
        .link("responder", "wasmcloud", "messaging", &["consumer"], broker)
        .await;
    let _served = stand_in(&p.lattice, "responder", Answerer(responder)).await;
    deliver_to(
        &p,
        "responder",
        &source(&requests, &format!("g-{requests}")),
    )
    .await;

    let consumer = ConsumerClient::new(&c, ());
    // The first answer waits for the responder's group to form (a few seconds here).
    let first = common::eventually(|| async {
        Ok::<_, anyhow::Error>(
            consumer
                .request(&requests, &Bytes::from("first"), 30_000)
                .await,
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(first.body, Bytes::from("FIRST"));
    assert_eq!(first.subject, answers);
    // Concurrent requests each get their own answer.
    let asks = (0..8).map(|i| {
        let consumer = &consumer;
        let requests = &requests;
        async move {
            let body = Bytes::from(format!("ask {i}"));
            let answer = consumer.request(requests, &body, 30_000).await.unwrap();
            (body, answer.body)
        }
    });
    for (asked, answer) in futures::future::join_all(asks).await {
        assert_eq!(answer, Bytes::from(asked.to_ascii_uppercase()));
    }
    // Nobody answers on a topic nobody reads: the request times out, saying where it waited.
    let silent = topic("silent").await;
    let err = consumer
        .request(&silent, &Bytes::from("x"), 500)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no answer on"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spent_records_go_to_the_dead_letter_topic() {
    let (input, dead) = (topic("dlq-in").await, topic("dlq").await);
    let p = ProviderProcess::start("messaging-kafka", "kafka-dlq").await;
    // Fails the first two tries of every fifth record: with two attempts, those are spent.
    let recorder = Recorder {
        flaky: true,
        ..Default::default()
    };
    let _served = stand_in(&p.lattice, "dlq-comp", recorder.clone()).await;
    let mut config = source(&input, &format!("g-{input}"));
    config.push(("max_attempts", "2".to_string()));
    config.push(("dead_letter_topic", dead.clone()));
    deliver_to(&p, "dlq-comp", &config).await;
    produce(&input, 0..20).await;
    // 16 records handled (0, 5, 10 and 15 are spent), 4 dead-lettered.
    recorder.wait_for(16, Duration::from_secs(60)).await;
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("reader-{dead}"))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "2000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .unwrap();
    reader.subscribe(&[&dead]).unwrap();
    let mut letters = HashSet::new();
    while letters.len() < 4 {
        let record = tokio::time::timeout(Duration::from_secs(30), reader.recv())
            .await
            .expect("a dead letter")
            .unwrap();
        let header = |key: &str| {
            record
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == key).and_then(|h| h.value))
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(
            header("trellis-original-topic").as_deref(),
            Some(input.as_str())
        );
        assert!(
            header("trellis-dead-letter-reason").is_some_and(|r| r.contains("failing")),
            "{:?}",
            header("trellis-dead-letter-reason")
        );
        letters.insert(String::from_utf8_lossy(record.payload().unwrap_or_default()).into_owned());
    }
    let expected: HashSet<String> = ["0", "5", "10", "15"].map(String::from).into();
    assert_eq!(letters, expected);
    let stats = delivered(&p).await;
    assert_eq!(
        stats.iter().map(|s| s.dead_lettered).sum::<u64>(),
        4,
        "{stats:?}"
    );
}

/// Health tells the truth: healthy with a target link whose brokers answer, unhealthy —
/// naming that link only — once a link's brokers are at a port nobody listens on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_names_a_link_whose_brokers_do_not_answer() {
    let p = ProviderProcess::start("messaging-kafka", "kafka-health").await;
    let good: HashMap<String, String> = [("brokers".to_string(), brokers())].into();
    let c = p
        .link("app", "wasmcloud", "messaging", &["consumer"], good)
        .await;
    // The link is set up once a publish through it goes.
    let topic = topic("health").await;
    common::eventually(|| async {
        Ok::<_, anyhow::Error>(
            ConsumerClient::new(&c, ())
                .publish(Message {
                    subject: topic.clone(),
                    body: Bytes::new(),
                    reply_to: None,
                })
                .await,
        )
    })
    .await
    .unwrap()
    .unwrap();
    p.health_until("a link with live brokers", |ok, _| ok).await;
    let bad: HashMap<String, String> = [(
        "brokers".to_string(),
        format!("127.0.0.1:{}", common::free_port()),
    )]
    .into();
    let _d = p
        .link("down", "wasmcloud", "messaging", &["consumer"], bad)
        .await;
    let (_, message) = p
        .health_until("a link with dead brokers", |ok, m| {
            !ok && m.contains("link down -> ")
        })
        .await;
    assert!(!message.contains("link app -> "), "{message}");
}
