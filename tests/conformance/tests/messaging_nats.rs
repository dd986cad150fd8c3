//! messaging-nats over the lattice, with a handler standing in for the component it delivers
//! to: every message handled with its body, subject and reply subject; 10,000 messages all
//! handled, in order per subject, by a handler that fails the first two tries of every
//! fifth message; the same from a JetStream consumer, acknowledged only once handled; two
//! provider instances splitting a JetStream consumer's load with nothing lost or handled
//! twice; dead letters; request/reply and publish from a component; and the messenger
//! component in the host answering requests end to end.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use trellis_conformance::lattice::ProviderProcess;
use trellis_conformance::messaging::{Recorder, deliver_to, delivered, fast_retries, stand_in};
use trellis_host::read_component;
use trellis_interfaces::messaging::{ConsumerClient, Message, MessageHandler};
use trellis_sdk::store::StoredLink;
use trellis_tests as common;

const MESSENGER_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../components/prebuilt/messenger.wasm"
);

/// Publishes `n` messages round-robin on `subjects` (body: the sequence number).
async fn publish_all(nats: &async_nats::Client, subjects: &[String], n: u64) {
    for seq in 0..n {
        let subject = subjects[(seq as usize) % subjects.len()].clone();
        nats.publish(subject, Bytes::from(seq.to_string()))
            .await
            .unwrap();
    }
    nats.flush().await.unwrap();
}

/// Every subject's sequence, complete and in order.
fn assert_in_order(recorder: &Recorder, subjects: &[String], n: u64) {
    let by_subject = recorder.by_subject();
    for (i, subject) in subjects.iter().enumerate() {
        let expected: Vec<u64> = (0..n)
            .filter(|s| (*s as usize) % subjects.len() == i)
            .collect();
        assert_eq!(
            by_subject.get(subject).map(Vec::len),
            Some(expected.len()),
            "{subject}"
        );
        assert!(
            by_subject[subject] == expected,
            "{subject}: out of order or duplicated"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_nats_messages_are_all_handled_in_order_per_subject() {
    let p = ProviderProcess::start("messaging-nats", "msg-core").await;
    let recorder = Recorder {
        flaky: true,
        ..Recorder::default()
    };
    let _comp = stand_in(&p.lattice, "comp", recorder.clone()).await;
    let tag = &common::unique_lattice("")[1..9];
    let subjects: Vec<String> = (0..4).map(|k| format!("core.{tag}.{k}")).collect();
    deliver_to(
        &p,
        "comp",
        &fast_retries(vec![("subscriptions", format!("core.{tag}.*"))]),
    )
    .await;
    let nats = common::nats().await;
    // The link is live once a probe goes through (its handling is not counted below).
    let probe = format!("core.{tag}.probe");
    common::eventually(|| async {
        nats.publish(probe.clone(), Bytes::from("1")).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let probed = !recorder.handled.lock().unwrap().is_empty();
        Ok::<_, anyhow::Error>(probed.then_some(()).ok_or("no probe yet"))
    })
    .await
    .unwrap()
    .unwrap();
    // One message with a reply subject: body, subject and reply-to as published.
    nats.publish_with_reply(subjects[0].clone(), "answers.here", Bytes::from("7"))
        .await
        .unwrap();
    recorder.wait_for(1, Duration::from_secs(10)).await;
    let first = recorder
        .handled
        .lock()
        .unwrap()
        .iter()
        .find(|m| m.subject == subjects[0])
        .cloned()
        .unwrap();
    assert_eq!(
        first,
        Message {
            subject: subjects[0].clone(),
            body: Bytes::from("7"),
            reply_to: Some("answers.here".into()),
        }
    );
    recorder.handled.lock().unwrap().clear();
    recorder.tries.lock().unwrap().clear();

    const N: u64 = 10_000;
    publish_all(&nats, &subjects, N).await;
    recorder
        .wait_for(N as usize, Duration::from_secs(120))
        .await;
    assert_in_order(&recorder, &subjects, N);
    let stats = delivered(&p).await;
    assert_eq!(stats.len(), 1, "{stats:?}");
    // Every fifth of the 10,000 failed twice (the probes and the first message did not).
    assert!(stats[0].retried >= 2 * N / 5, "{stats:?}");
    assert_eq!((stats[0].dropped, stats[0].queued), (0, 0), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_messages_are_acknowledged_only_once_handled() {
    let tag = &common::unique_lattice("")[1..9];
    let nats = common::nats().await;
    let js = async_nats::jetstream::new(nats.clone());
    let stream = format!("TRELLIS_MSG_{tag}");
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("js.{tag}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    // Published before anything listens: JetStream keeps them.
    let subjects: Vec<String> = (0..3).map(|k| format!("js.{tag}.{k}")).collect();
    const N: u64 = 2_000;
    for seq in 0..N {
        let subject = subjects[(seq as usize) % subjects.len()].clone();
        js.publish(subject, Bytes::from(seq.to_string()))
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let p = ProviderProcess::start("messaging-nats", "msg-js").await;
    let recorder = Recorder {
        flaky: true,
        ..Recorder::default()
    };
    let _comp = stand_in(&p.lattice, "comp", recorder.clone()).await;
    deliver_to(
        &p,
        "comp",
        &fast_retries(vec![
            ("subscriptions", format!("js.{tag}.>")),
            ("stream", stream.clone()),
            ("consumer", "workers".to_string()),
        ]),
    )
    .await;
    recorder
        .wait_for(N as usize, Duration::from_secs(120))
        .await;
    assert_in_order(&recorder, &subjects, N);
    // Every message acknowledged: nothing pending, nothing redelivered.
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream(&stream)
        .await
        .unwrap()
        .get_consumer("workers")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let info = consumer.info().await.unwrap();
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "ack pending {}, pending {}",
            info.num_ack_pending,
            info.num_pending
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_split_a_jetstream_consumer_with_nothing_lost_or_doubled() {
    let tag = &common::unique_lattice("")[1..9];
    let nats = common::nats().await;
    let js = async_nats::jetstream::new(nats.clone());
    let stream = format!("TRELLIS_SPLIT_{tag}");
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("split.{tag}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    let lattice = common::unique_lattice("split");
    let a = ProviderProcess::start_in("messaging-nats", "msg-split", &lattice, &[]).await;
    let b = ProviderProcess::start_in("messaging-nats", "msg-split", &lattice, &[]).await;
    let recorder = Recorder::default();
    let _comp = stand_in(&lattice, "comp", recorder.clone()).await;
    deliver_to(
        &a,
        "comp",
        &fast_retries(vec![
            ("subscriptions", format!("split.{tag}.>")),
            ("stream", stream.clone()),
        ]),
    )
    .await;
    // Both instances have the link (and so a pull on the shared durable consumer).
    common::eventually(|| async {
        let n = delivered(&a).await.len();
        Ok::<_, anyhow::Error>((n == 2).then_some(()).ok_or(format!("{n} of 2 instances")))
    })
    .await
    .unwrap()
    .unwrap();
    let subjects: Vec<String> = (0..8).map(|k| format!("split.{tag}.{k}")).collect();
    const N: u64 = 4_000;
    publish_all(&nats, &subjects, N).await;
    recorder
        .wait_for(N as usize, Duration::from_secs(120))
        .await;
    // Nothing handled twice in steady state.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen: Vec<u64> = recorder.by_subject().into_values().flatten().collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..N).collect::<Vec<_>>());
    let per_instance: Vec<u64> = delivered(&a).await.iter().map(|d| d.delivered).collect();
    assert_eq!(per_instance.iter().sum::<u64>(), N, "{per_instance:?}");
    assert!(
        per_instance.iter().all(|n| *n > 0),
        "one instance did all the work: {per_instance:?}"
    );
    drop(b);
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_delivery_survives_a_server_restart() {
    let mut own = common::OwnNats::start();
    let client = async_nats::connect(own.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let tag = &common::unique_lattice("")[1..9];
    let stream = format!("TRELLIS_RESTART_{tag}");
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("restart.{tag}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    let p = ProviderProcess::start("messaging-nats", "msg-restart").await;
    let recorder = Recorder::default();
    let _comp = stand_in(&p.lattice, "comp", recorder.clone()).await;
    deliver_to(
        &p,
        "comp",
        &fast_retries(vec![
            ("url", own.url()),
            ("subscriptions", format!("restart.{tag}.>")),
            ("stream", stream.clone()),
        ]),
    )
    .await;
    // Published until acknowledged: the server may be restarting.
    let publish = |seq: u64| {
        let js = js.clone();
        let subject = format!("restart.{tag}.{}", seq % 3);
        async move {
            let started = std::time::Instant::now();
            loop {
                let sent = async {
                    js.publish(subject.clone(), Bytes::from(seq.to_string()))
                        .await?
                        .await
                        .map_err(anyhow::Error::from)
                };
                match sent.await {
                    Ok(_) => return,
                    Err(err) => assert!(
                        started.elapsed() < Duration::from_secs(30),
                        "cannot publish {seq}: {err}"
                    ),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    for seq in 0..500 {
        publish(seq).await;
    }
    recorder.wait_for(200, Duration::from_secs(60)).await;
    own.restart();
    for seq in 500..1000 {
        publish(seq).await;
    }
    recorder
        .wait_for_distinct(1000, Duration::from_secs(120))
        .await;
}

/// Always fails for body "poison".
#[derive(Clone)]
struct Poisoned;

impl MessageHandler<trellis_wrpc_nats::ServeContext> for Poisoned {
    async fn handle_message(
        &self,
        _cx: trellis_wrpc_nats::ServeContext,
        msg: Message,
    ) -> Result<(), String> {
        if msg.body == "poison" {
            return Err("cannot digest this".into());
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spent_messages_go_to_the_dead_letter_subject() {
    let p = ProviderProcess::start("messaging-nats", "msg-dlq").await;
    let _comp = stand_in(&p.lattice, "comp", Poisoned).await;
    let tag = &common::unique_lattice("")[1..9];
    let nats = common::nats().await;
    let mut dlq = nats.subscribe(format!("dlq.{tag}")).await.unwrap();
    deliver_to(
        &p,
        "comp",
        &fast_retries(vec![
            ("subscriptions", format!("in.{tag}")),
            ("max_attempts", "3".to_string()),
            ("dead_letter_subject", format!("dlq.{tag}")),
        ]),
    )
    .await;
    // Published until the link's subscription is live and one comes out dead.
    let started = std::time::Instant::now();
    let dead = loop {
        nats.publish(format!("in.{tag}"), Bytes::from("poison"))
            .await
            .unwrap();
        if let Ok(Some(dead)) = tokio::time::timeout(Duration::from_millis(500), dlq.next()).await {
            break dead;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no dead letter"
        );
    };
    assert_eq!(dead.payload, "poison");
    let headers = dead.headers.expect("dead letter headers");
    assert_eq!(
        headers.get("trellis-original-subject").map(|v| v.as_str()),
        Some(format!("in.{tag}").as_str())
    );
    assert!(
        headers
            .get("trellis-dead-letter-reason")
            .is_some_and(|v| v.as_str().contains("cannot digest this")),
        "{headers:?}"
    );
    let stats = delivered(&p).await;
    assert!(
        stats[0].dead_lettered >= 1 && stats[0].retried >= 2,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_publish_and_request_through_the_provider() {
    let p = ProviderProcess::start("messaging-nats", "msg-consumer").await;
    let c = p
        .link(
            "app",
            "wasmcloud",
            "messaging",
            &["consumer"],
            HashMap::new(),
        )
        .await;
    let consumer = ConsumerClient::new(&c, ());
    let tag = &common::unique_lattice("")[1..9];
    let nats = common::nats().await;
    let mut sub = nats.subscribe(format!("out.{tag}")).await.unwrap();
    nats.flush().await.unwrap();
    common::eventually(|| async {
        Ok::<_, anyhow::Error>(
            consumer
                .publish(Message {
                    subject: format!("out.{tag}"),
                    body: Bytes::from("hello"),
                    reply_to: Some("back.here".into()),
                })
                .await,
        )
    })
    .await
    .unwrap()
    .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.payload, got.reply.map(|r| r.to_string())),
        (Bytes::from("hello"), Some("back.here".to_string()))
    );

    // A responder answers requests upper-cased.
    let mut requests = nats.subscribe(format!("svc.{tag}")).await.unwrap();
    let responder = nats.clone();
    tokio::spawn(async move {
        while let Some(req) = requests.next().await {
            if let Some(reply) = req.reply {
                let body = Bytes::from(req.payload.to_ascii_uppercase());
                let _ = responder.publish(reply, body).await;
            }
        }
    });
    nats.flush().await.unwrap();
    let answer = consumer
        .request(&format!("svc.{tag}"), &Bytes::from("ping"), 5000)
        .await
        .unwrap();
    assert_eq!(answer.body, "PING");
    // Nobody answers: a clear error, soon.
    let err = consumer
        .request(&format!("nobody.{tag}"), &Bytes::from("x"), 300)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&format!("nobody.{tag}")), "{err}");
    // Subjects a publish cannot use are refused before anything reaches NATS.
    for bad in ["", "has space", "a..b", "wild.*", "all.>"] {
        let msg = Message {
            subject: bad.into(),
            body: Bytes::new(),
            reply_to: None,
        };
        let err = consumer.publish(msg).await.unwrap_err().to_string();
        assert!(err.contains("invalid subject"), "{bad:?}: {err}");
        let err = consumer.request(bad, &Bytes::new(), 100).await.unwrap_err();
        assert!(
            err.to_string().contains("invalid subject"),
            "{bad:?}: {err}"
        );
    }
}

/// The messenger component in the host: messages on a subscribed subject reach it through
/// messaging-nats, and its replies (published through the same provider) reach the
/// requester.
#[test]
fn the_messenger_component_answers_requests_end_to_end() {
    common::run_with_large_stacks(async {
        let p = ProviderProcess::start("messaging-nats", "msg-e2e").await;
        let host = support::host(&p.lattice).await;
        let tag = &common::unique_lattice("")[1..9];
        // Provider → component (delivery) and component → provider (publish).
        deliver_to(
            &p,
            "messenger",
            &[("subscriptions", format!("shout.{tag}"))],
        )
        .await;
        host.admin()
            .put_link(StoredLink::new(
                "messenger",
                &p.id,
                "wasmcloud",
                "messaging",
                ["consumer"],
            ))
            .await
            .unwrap();
        let _c = host
            .start_component("messenger", read_component(MESSENGER_WASM).unwrap(), &[])
            .await
            .unwrap();
        let nats = common::nats().await;
        let reply = common::eventually(|| async {
            let request = async_nats::Request::new()
                .payload(Bytes::from("hello there"))
                .timeout(Some(Duration::from_secs(2)));
            Ok::<_, anyhow::Error>(
                nats.send_request(format!("shout.{tag}"), request)
                    .await
                    .map_err(|e| e.to_string()),
            )
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(reply.payload, "HELLO THERE");
    });
}

/// Health tells the truth: unhealthy, naming the link, while a target link's own NATS server
/// is down; healthy again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_a_links_own_nats_server() {
    let mut server = common::OwnNats::start();
    let p = ProviderProcess::start("messaging-nats", "msg-health").await;
    let config: HashMap<String, String> = [("url".to_string(), server.url())].into();
    let c = p
        .link("app", "wasmcloud", "messaging", &["consumer"], config)
        .await;
    // The link is set up once a publish through it goes.
    common::eventually(|| async {
        Ok::<_, anyhow::Error>(
            ConsumerClient::new(&c, ())
                .publish(Message {
                    subject: "health.probe".into(),
                    body: Bytes::new(),
                    reply_to: None,
                })
                .await,
        )
    })
    .await
    .unwrap()
    .unwrap();
    p.health_until("the link's server is up", |ok, _| ok).await;
    server.kill();
    let (_, message) = p
        .health_until("the link's server is down", |ok, m| {
            !ok && m.contains("link app -> ")
        })
        .await;
    assert!(message.contains("not connected"), "{message}");
    server.restart();
    p.health_until("the link's server is back", |ok, _| ok)
        .await;
}
