//! The messaging suite's shared parts: a handler standing in for the component a provider
//! delivers to (it records what it handled and can fail on purpose), the link that makes the
//! provider deliver to it, and the delivery counters `link ping` shows. The suites of the
//! messaging providers (`tests/messaging_*.rs`) run their backends' scenarios with them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use trellis_interfaces::messaging::{self, Message, MessageHandler};
use trellis_sdk::store::StoredLink;
use trellis_sdk::subjects::LatticeSubjects;
use trellis_tests as common;

use crate::lattice::ProviderProcess;

/// What the stand-in component saw, and how it fails.
#[derive(Clone, Default)]
pub struct Recorder {
    /// What was handled, in order.
    pub handled: Arc<Mutex<Vec<Message>>>,
    /// Tries per body.
    pub tries: Arc<Mutex<HashMap<Bytes, u32>>>,
    /// Fail the first two tries of messages whose body is a multiple of five.
    pub flaky: bool,
}

impl MessageHandler<trellis_wrpc_nats::ServeContext> for Recorder {
    async fn handle_message(
        &self,
        _cx: trellis_wrpc_nats::ServeContext,
        msg: Message,
    ) -> Result<(), String> {
        let tries = {
            let mut t = self.tries.lock().unwrap();
            let n = t.entry(msg.body.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let seq: u64 = std::str::from_utf8(&msg.body)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        if self.flaky && seq.is_multiple_of(5) && tries <= 2 {
            return Err(format!("failing {seq} on try {tries}"));
        }
        self.handled.lock().unwrap().push(msg);
        Ok(())
    }
}

impl Recorder {
    /// Messages handled, readiness probes aside.
    pub fn count(&self) -> usize {
        self.handled
            .lock()
            .unwrap()
            .iter()
            .filter(|m| !m.subject.ends_with(".probe"))
            .count()
    }

    /// Waits until `n` messages were handled (at most `limit`).
    pub async fn wait_for(&self, n: usize, limit: Duration) {
        let started = std::time::Instant::now();
        while self.count() < n {
            assert!(
                started.elapsed() < limit,
                "only {} of {n} messages handled",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `n` different bodies were handled (at most `limit`): redeliveries are
    /// allowed, losses are not.
    pub async fn wait_for_distinct(&self, n: usize, limit: Duration) {
        let started = std::time::Instant::now();
        loop {
            let distinct = self
                .handled
                .lock()
                .unwrap()
                .iter()
                .map(|m| m.body.clone())
                .collect::<std::collections::HashSet<_>>()
                .len();
            if distinct >= n {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "only {distinct} of {n} different messages handled"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The bodies handled per subject, in handling order.
    pub fn by_subject(&self) -> HashMap<String, Vec<u64>> {
        let mut out: HashMap<String, Vec<u64>> = HashMap::new();
        for m in self.handled.lock().unwrap().iter() {
            let seq = std::str::from_utf8(&m.body).unwrap().parse().unwrap();
            out.entry(m.subject.clone()).or_default().push(seq);
        }
        out
    }
}

/// Serves `handler` as component `id` on `lattice` until the returned tasks are dropped.
pub async fn stand_in<H>(lattice: &str, id: &str, handler: H) -> Vec<tokio::task::JoinHandle<()>>
where
    H: MessageHandler<trellis_wrpc_nats::ServeContext>,
{
    let server = crate::lattice::component_server(lattice, id).await;
    let invocations = messaging::serve_handler(&server, handler)
        .await
        .expect("serve the handler");
    crate::lattice::run_calls(invocations)
}

/// Links provider `p` to component `comp` for `handler`, with `config` as source config.
pub async fn deliver_to(p: &ProviderProcess, comp: &str, config: &[(&str, String)]) {
    let name = format!("{comp}-subs");
    let config: HashMap<String, String> = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    p.store.put_config(&name, &config).await.unwrap();
    p.store
        .put_link(
            StoredLink::new(&p.id, comp, "wasmcloud", "messaging", ["handler"])
                .with_source_config([name]),
        )
        .await
        .unwrap();
}

/// The delivery counters `link ping` shows for `p`'s links.
pub async fn delivered(p: &ProviderProcess) -> Vec<trellis_sdk::delivery::DeliverySnapshot> {
    let nats = common::nats().await;
    let subjects = LatticeSubjects::new(&p.lattice).unwrap();
    trellis_sdk::admin::ping_links(&nats, &subjects, Some(&p.id), Duration::from_millis(500))
        .await
        .unwrap()
        .into_iter()
        .flat_map(|r| r.links)
        .filter_map(|l| l.delivery)
        .collect()
}

/// Source config with quick retries (and `extra`).
pub fn fast_retries(extra: Vec<(&'static str, String)>) -> Vec<(&'static str, String)> {
    let mut c = vec![
        ("retry_backoff_ms", "5".to_string()),
        ("max_retry_backoff_ms", "20".to_string()),
        ("handler_timeout_ms", "5000".to_string()),
    ];
    c.extend(extra);
    c
}
