//! Delivering events from a provider to a linked component — messages from a broker, changes
//! of a key — at least once, in order, with bounded memory.
//!
//! A [`Delivery`] runs a fixed number of **lanes**. Every message has a key (its partition,
//! its subject) and a key always goes to the same lane, so messages of one key are handled
//! one after another, in the order they were submitted; different keys proceed side by side.
//! A lane holds at most [`DeliveryOptions::lane_queue`] messages: beyond that,
//! [`Delivery::submit`] waits, which stops the provider reading from its broker — the broker
//! keeps the backlog, not our memory.
//!
//! Each attempt has a deadline. A failed attempt (the handler's error, a transport error, the
//! deadline) is retried with capped exponential backoff; once the attempts are spent the
//! message goes to the dead-letter destination through [`Deliver::dead_letter`] (if the link
//! names one) or is dropped with a warning. Only then is the message's `done` callback run,
//! with the outcome: a provider acknowledges or commits there, so nothing is acknowledged
//! before its handler succeeded (or gave up on it) — and, per key, nothing before every
//! earlier message of that key.
//!
//! What happened is counted in [`DeliveryStats`], which `link ping` shows per link.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// How a [`Delivery`] delivers.
#[derive(Clone, Debug)]
pub struct DeliveryOptions {
    /// Lanes: keys handled side by side (messages of one key never are).
    pub lanes: usize,
    /// Messages waiting per lane before [`Delivery::submit`] waits.
    pub lane_queue: usize,
    /// Longest one attempt may take.
    pub deadline: Duration,
    /// Attempts per message, the first included.
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub first_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        Self {
            lanes: 16,
            lane_queue: 64,
            deadline: Duration::from_secs(30),
            attempts: 5,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl DeliveryOptions {
    /// The options a link's config sets, the defaults for the rest: `lanes`, `lane_queue`,
    /// `max_attempts`, `handler_timeout_ms`, `retry_backoff_ms`, `max_retry_backoff_ms`
    /// (one set of keys for every provider that delivers events).
    pub fn from_config(
        values: &crate::config::ConfigValues<'_>,
    ) -> Result<Self, crate::config::ConfigValueError> {
        let d = Self::default();
        Ok(Self {
            lanes: values.number_in("lanes", 1..=1024, d.lanes)?,
            lane_queue: values.number_in("lane_queue", 1..=10_000, d.lane_queue)?,
            deadline: values.millis("handler_timeout_ms", d.deadline)?,
            attempts: u32::try_from(values.number_in(
                "max_attempts",
                1..=1000,
                d.attempts as usize,
            )?)
            .unwrap_or(d.attempts),
            first_backoff: values.millis("retry_backoff_ms", d.first_backoff)?,
            max_backoff: values.millis("max_retry_backoff_ms", d.max_backoff)?,
        })
    }

    /// The wait before attempt `attempt` (2 is the first retry).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(2).min(31);
        self.first_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }
}

/// Delivers one kind of message: what a provider implements for a link.
pub trait Deliver: Send + Sync + 'static {
    /// What is delivered.
    type Message: Send + Sync + 'static;

    /// One attempt at handing `msg` to the component; `Err` with the reason asks for a retry.
    fn deliver(&self, msg: &Self::Message) -> impl Future<Output = Result<(), String>> + Send;

    /// Sends `msg`, whose attempts are spent (`why`: the last failure), to the link's
    /// dead-letter destination. `Ok(false)`: the link has none, the message is dropped.
    fn dead_letter(
        &self,
        msg: &Self::Message,
        why: &str,
    ) -> impl Future<Output = Result<bool, String>> + Send {
        let _ = (msg, why);
        async { Ok(false) }
    }
}

/// How a message's delivery ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The handler succeeded.
    Delivered,
    /// Every attempt failed; the message went to the dead-letter destination.
    DeadLettered,
    /// Every attempt failed and there was no dead-letter destination (or it failed too).
    Dropped,
}

/// Counters of one link's deliveries (shared with `link ping`).
#[derive(Debug, Default)]
pub struct DeliveryStats {
    delivered: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    dropped: AtomicU64,
    queued: AtomicU64,
    lag: AtomicU64,
}

/// A snapshot of [`DeliveryStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeliverySnapshot {
    /// Messages whose handler succeeded.
    pub delivered: u64,
    /// Attempts that failed and were retried.
    pub retried: u64,
    /// Messages sent to the dead-letter destination.
    pub dead_lettered: u64,
    /// Messages given up on with nowhere to send them.
    pub dropped: u64,
    /// Messages submitted and not yet done.
    pub queued: u64,
    /// What the backend still holds for this link, as the provider measures it (Kafka: the
    /// partitions' end offsets minus the committed ones); 0 where it cannot tell.
    pub lag: u64,
}

impl DeliveryStats {
    /// The counters now.
    pub fn snapshot(&self) -> DeliverySnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DeliverySnapshot {
            delivered: get(&self.delivered),
            retried: get(&self.retried),
            dead_lettered: get(&self.dead_lettered),
            dropped: get(&self.dropped),
            queued: get(&self.queued),
            lag: get(&self.lag),
        }
    }

    /// Records the backend's lag for this link.
    pub fn set_lag(&self, lag: u64) {
        self.lag.store(lag, Ordering::Relaxed);
    }
}

/// What is done once a message's delivery has ended (acknowledge, commit, or nothing).
pub type Done = Box<dyn FnOnce(Outcome) + Send>;

struct Job<M> {
    msg: M,
    done: Done,
}

/// The delivery engine of one link (see the [module](self) docs). Dropping it stops its
/// lanes: messages not yet done are abandoned, their `done` never runs (so a broker
/// redelivers them).
pub struct Delivery<D: Deliver> {
    lanes: Vec<mpsc::Sender<Job<D::Message>>>,
    tasks: Vec<JoinHandle<()>>,
    stats: Arc<DeliveryStats>,
}

impl<D: Deliver> std::fmt::Debug for Delivery<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("lanes", &self.lanes.len())
            .field("stats", &self.stats.snapshot())
            .finish()
    }
}

/// The delivery engine has stopped.
#[derive(Debug, thiserror::Error)]
#[error("the delivery engine has stopped")]
pub struct Stopped;

impl<D: Deliver> Delivery<D> {
    /// Starts the lanes (on the current tokio runtime), counting into `stats`.
    pub fn start(deliver: D, options: DeliveryOptions, stats: Arc<DeliveryStats>) -> Self {
        let deliver = Arc::new(deliver);
        let options = Arc::new(DeliveryOptions {
            lanes: options.lanes.max(1),
            lane_queue: options.lane_queue.max(1),
            attempts: options.attempts.max(1),
            ..options
        });
        let (lanes, tasks) = (0..options.lanes)
            .map(|_| {
                let (tx, rx) = mpsc::channel(options.lane_queue);
                let task = tokio::spawn(lane(
                    rx,
                    Arc::clone(&deliver),
                    Arc::clone(&options),
                    Arc::clone(&stats),
                ));
                (tx, task)
            })
            .unzip();
        Self {
            lanes,
            tasks,
            stats,
        }
    }

    /// Queues `msg` on the lane of `key`; waits while that lane is full. `done` runs once
    /// its delivery has ended.
    pub async fn submit(
        &self,
        key: impl Hash,
        msg: D::Message,
        done: impl FnOnce(Outcome) + Send + 'static,
    ) -> Result<(), Stopped> {
        let lane = &self.lanes[self.lane_of(key)];
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        let sent = lane
            .send(Job {
                msg,
                done: Box::new(done),
            })
            .await;
        if sent.is_err() {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(Stopped);
        }
        Ok(())
    }

    /// The lane of `key`.
    fn lane_of(&self, key: impl Hash) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() % self.lanes.len() as u64) as usize
    }

    /// The link's counters.
    pub fn stats(&self) -> &Arc<DeliveryStats> {
        &self.stats
    }

    /// Stops taking messages and waits until every queued one is done.
    pub async fn drain(mut self) {
        self.lanes.clear();
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl<D: Deliver> Drop for Delivery<D> {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One lane: its messages, one at a time, each until its delivery has ended.
async fn lane<D: Deliver>(
    mut rx: mpsc::Receiver<Job<D::Message>>,
    deliver: Arc<D>,
    options: Arc<DeliveryOptions>,
    stats: Arc<DeliveryStats>,
) {
    while let Some(Job { msg, done }) = rx.recv().await {
        let outcome = deliver_one(&*deliver, &msg, &options, &stats).await;
        stats.queued.fetch_sub(1, Ordering::Relaxed);
        done(outcome);
    }
}

/// Every attempt at `msg` until one succeeds or they are spent, then the dead letter.
async fn deliver_one<D: Deliver>(
    deliver: &D,
    msg: &D::Message,
    options: &DeliveryOptions,
    stats: &DeliveryStats,
) -> Outcome {
    let mut why = String::new();
    for attempt in 1..=options.attempts {
        if attempt > 1 {
            stats.retried.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(options.backoff(attempt)).await;
        }
        match tokio::time::timeout(options.deadline, deliver.deliver(msg)).await {
            Ok(Ok(())) => {
                stats.delivered.fetch_add(1, Ordering::Relaxed);
                return Outcome::Delivered;
            }
            Ok(Err(err)) => why = err,
            Err(_) => why = format!("no answer within {:?}", options.deadline),
        }
        debug!(attempt, error = %why, "delivery attempt failed");
    }
    match deliver.dead_letter(msg, &why).await {
        Ok(true) => {
            warn!(attempts = options.attempts, error = %why, "message sent to the dead-letter destination");
            stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            Outcome::DeadLettered
        }
        Ok(false) => {
            warn!(attempts = options.attempts, error = %why, "message dropped: every attempt failed and the link has no dead-letter destination");
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            Outcome::Dropped
        }
        Err(dlq) => {
            warn!(attempts = options.attempts, error = %why, dead_letter_error = %dlq, "message dropped: every attempt failed, and so did the dead-letter destination");
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            Outcome::Dropped
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Fails the first two attempts of every fifth message; records what it handled.
    struct Flaky {
        handled: Arc<Mutex<Vec<(u32, u32)>>>,
        tries: Mutex<std::collections::HashMap<(u32, u32), u32>>,
    }

    impl Deliver for Flaky {
        type Message = (u32, u32); // (key, sequence)

        async fn deliver(&self, msg: &(u32, u32)) -> Result<(), String> {
            let tries = {
                let mut t = self.tries.lock().unwrap();
                let n = t.entry(*msg).or_insert(0);
                *n += 1;
                *n
            };
            if msg.1.is_multiple_of(5) && tries <= 2 {
                return Err(format!("failing {msg:?} on try {tries}"));
            }
            self.handled.lock().unwrap().push(*msg);
            Ok(())
        }
    }

    fn fast() -> DeliveryOptions {
        DeliveryOptions {
            lanes: 4,
            lane_queue: 2,
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
            ..DeliveryOptions::default()
        }
    }

    #[tokio::test]
    async fn every_message_is_delivered_in_order_per_key_despite_failures() {
        let handled = Arc::new(Mutex::new(Vec::new()));
        let flaky = Flaky {
            handled: Arc::clone(&handled),
            tries: Mutex::default(),
        };
        let stats = Arc::new(DeliveryStats::default());
        let delivery = Delivery::start(flaky, fast(), Arc::clone(&stats));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        for seq in 0..200u32 {
            for key in 0..3u32 {
                let outcomes = Arc::clone(&outcomes);
                delivery
                    .submit(key, (key, seq), move |o| outcomes.lock().unwrap().push(o))
                    .await
                    .unwrap();
            }
        }
        delivery.drain().await;
        let handled = handled.lock().unwrap();
        assert_eq!(handled.len(), 600);
        for key in 0..3 {
            let seqs: Vec<u32> = handled.iter().filter(|m| m.0 == key).map(|m| m.1).collect();
            assert_eq!(seqs, (0..200).collect::<Vec<_>>(), "key {key} out of order");
        }
        let s = stats.snapshot();
        assert_eq!((s.delivered, s.retried, s.queued), (600, 2 * 3 * 40, 0));
        assert!(
            outcomes
                .lock()
                .unwrap()
                .iter()
                .all(|o| *o == Outcome::Delivered)
        );
    }

    /// Always fails; counts dead letters.
    struct Broken {
        dead: Arc<AtomicU64>,
        has_dlq: bool,
    }

    impl Deliver for Broken {
        type Message = u32;

        async fn deliver(&self, _: &u32) -> Result<(), String> {
            Err("handler failed".into())
        }

        async fn dead_letter(&self, _: &u32, why: &str) -> Result<bool, String> {
            assert_eq!(why, "handler failed");
            if self.has_dlq {
                self.dead.fetch_add(1, Ordering::Relaxed);
            }
            Ok(self.has_dlq)
        }
    }

    #[tokio::test]
    async fn spent_messages_go_to_the_dead_letter_destination_or_are_dropped() {
        for has_dlq in [true, false] {
            let dead = Arc::new(AtomicU64::new(0));
            let stats = Arc::new(DeliveryStats::default());
            let broken = Broken {
                dead: Arc::clone(&dead),
                has_dlq,
            };
            let opts = DeliveryOptions {
                attempts: 3,
                ..fast()
            };
            let delivery = Delivery::start(broken, opts, Arc::clone(&stats));
            let outcomes = Arc::new(Mutex::new(Vec::new()));
            for i in 0..5u32 {
                let outcomes = Arc::clone(&outcomes);
                delivery
                    .submit(i, i, move |o| outcomes.lock().unwrap().push(o))
                    .await
                    .unwrap();
            }
            delivery.drain().await;
            let s = stats.snapshot();
            assert_eq!(s.retried, 10, "two retries each");
            let expected = if has_dlq {
                Outcome::DeadLettered
            } else {
                Outcome::Dropped
            };
            assert_eq!(*outcomes.lock().unwrap(), vec![expected; 5]);
            assert_eq!(
                (s.dead_lettered, s.dropped),
                if has_dlq { (5, 0) } else { (0, 5) }
            );
            assert_eq!(dead.load(Ordering::Relaxed), if has_dlq { 5 } else { 0 });
        }
    }

    /// Never answers.
    struct Hung;

    impl Deliver for Hung {
        type Message = ();

        async fn deliver(&self, _: &()) -> Result<(), String> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_lane_holds_the_submitter_back_and_attempts_have_a_deadline() {
        let stats = Arc::new(DeliveryStats::default());
        let opts = DeliveryOptions {
            lanes: 1,
            lane_queue: 2,
            attempts: 1,
            deadline: Duration::from_secs(5),
            ..DeliveryOptions::default()
        };
        let delivery = Delivery::start(Hung, opts, Arc::clone(&stats));
        // One in the handler, two queued: the fourth waits.
        for _ in 0..3 {
            delivery.submit(0, (), |_| {}).await.unwrap();
        }
        let fourth = delivery.submit(0, (), |_| {});
        tokio::pin!(fourth);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), &mut fourth)
                .await
                .is_err(),
            "a full lane must hold the submitter back"
        );
        // The deadline (5 s) ends the hung attempt, and the lane moves on.
        fourth.await.unwrap();
        assert!(stats.snapshot().dropped >= 1);
    }

    #[test]
    fn options_come_from_link_config_keys() {
        let map: std::collections::HashMap<String, String> = [
            ("MAX_ATTEMPTS", "3"),
            ("handler_timeout_ms", "1500"),
            ("lanes", "2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let o = DeliveryOptions::from_config(&crate::config::ConfigValues::new(&map)).unwrap();
        assert_eq!((o.attempts, o.lanes, o.lane_queue), (3, 2, 64));
        assert_eq!(o.deadline, Duration::from_millis(1500));
        let bad: std::collections::HashMap<String, String> =
            [("max_attempts".to_string(), "0".to_string())].into();
        let err =
            DeliveryOptions::from_config(&crate::config::ConfigValues::new(&bad)).unwrap_err();
        assert!(err.to_string().contains("max_attempts"), "{err}");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let o = DeliveryOptions::default();
        let waits: Vec<u64> = (2..=10).map(|a| o.backoff(a).as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000]);
    }
}
