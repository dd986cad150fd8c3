//! The inbox demultiplexer: one NATS subscription per connection, routed to calls by subject.
//!
//! wRPC over NATS exchanges every call's handshake, results and parameters on per-call subjects
//! below a reply inbox. Subscribing per call costs a round trip to the server each time (the
//! 1.x SDK did this and paid for it in throughput), so a [`Routes`] table owns a single
//! `{inbox}.>` subscription and hands each message to the call that registered its subject.
//!
//! Registration is synchronous (a mutex, no command channel), so a call's subjects are always
//! in the table before the call's first message is published: a reply cannot overtake its
//! route, which is how the published transport lost about one call in ten thousand.
//!
//! Memory is bounded per call: every byte delivered but not yet read counts against the call's
//! budget, and a call that goes over it is failed with [`TransportError::BufferOverflow`]
//! instead of growing without limit or stalling every other call on the connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll};

use async_nats::{StatusCode, Subject};
use bytes::Bytes;
use futures::StreamExt as _;
use tokio::sync::{Notify, oneshot};
use tracing::{debug, trace};

use super::flow::{FLOW_HEADER, Flow, parse_credit};
use super::queue;
use crate::error::TransportError;

/// What the demultiplexer hands to a reader.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// A message payload; an empty one closes the channel.
    Data(Bytes),
    /// The call failed; the reader returns this error.
    Fail(TransportError),
}

/// The sending half of a stream's delivery queue, held by the route table.
type DeliveryTx = queue::Sender<Delivery>;

/// The receiving half of a stream's delivery queue, held by its reader (see [`queue`]).
#[derive(Debug)]
pub(crate) struct DeliveryRx(queue::Receiver<Delivery>);

impl DeliveryRx {
    /// The next delivery; `None` once the route is gone and the queue drained.
    pub(crate) async fn recv(&mut self) -> Option<Delivery> {
        self.0.recv().await
    }

    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        self.0.poll_recv(cx)
    }

    /// A delivery already queued, if any.
    pub(crate) fn try_recv(&mut self) -> Option<Delivery> {
        self.0.try_recv()
    }

    /// Refuses further deliveries; those queued can still be drained.
    pub(crate) fn close(&mut self) {
        self.0.close();
    }
}

fn delivery_queue() -> (DeliveryTx, DeliveryRx) {
    let (tx, rx) = queue::queue();
    (tx, DeliveryRx(rx))
}

/// Bytes delivered to a call but not yet read by it, when the call last heard from its
/// peer, and whether its peer has begun sending nested (asynchronous) values.
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicUsize,
    limit: usize,
    /// Milliseconds since [`clock_origin`] of the last message for the call.
    last_heard_ms: AtomicU64,
    /// A message arrived on a nested stream of the call. Every wRPC peer sends a call's
    /// synchronous values on the root stream before any nested one, so from then on the
    /// root holds all of them (see [`super::reader::Incoming::prefetch_sync`]).
    nested: AtomicBool,
    nested_signal: Notify,
}

/// A fixed origin for the activity clock (atomics hold no `Instant`).
fn clock_origin() -> std::time::Instant {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    *ORIGIN.get_or_init(std::time::Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(clock_origin().elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Budget {
    fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit,
            last_heard_ms: AtomicU64::new(now_ms()),
            nested: AtomicBool::new(false),
            nested_signal: Notify::new(),
        })
    }

    /// A message arrived on a nested stream of the call.
    fn mark_nested(&self) {
        if !self.nested.swap(true, Ordering::AcqRel) {
            self.nested_signal.notify_one();
        }
    }

    /// Whether a message arrived on a nested stream of the call.
    pub(crate) fn nested_started(&self) -> bool {
        self.nested.load(Ordering::Acquire)
    }

    /// Resolves once a message arrived on a nested stream of the call.
    pub(crate) async fn nested_notified(&self) {
        if !self.nested_started() {
            self.nested_signal.notified().await;
        }
    }

    /// The peer sent something for the call.
    pub(crate) fn touch(&self) {
        self.last_heard_ms.store(now_ms(), Ordering::Release);
    }

    /// When the peer last sent anything for the call. A reader waiting on one stream uses
    /// it to tell a silent peer from one busy on another stream of the same call (a future
    /// that resolves after a long body, say).
    pub(crate) fn last_heard(&self) -> std::time::Instant {
        clock_origin()
            + std::time::Duration::from_millis(self.last_heard_ms.load(Ordering::Acquire))
    }

    /// Reserves `n` bytes; `false` if that would exceed the limit.
    fn take(&self, n: usize) -> bool {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = cur.checked_add(n).filter(|next| *next <= self.limit) else {
                return false;
            };
            match self
                .used
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Returns `n` bytes once the reader consumed them; `true` if nothing is left unread.
    pub(crate) fn release(&self, n: usize) -> bool {
        // Never underflows: every release matches an earlier successful `take`.
        self.used.fetch_sub(n, Ordering::AcqRel) == n
    }
}

/// The outcome of a client call's handshake: the server's reply inbox, or why there is none.
pub(crate) type HandshakeResult = Result<Subject, TransportError>;

#[derive(Debug)]
enum HandshakeState {
    Pending(Vec<oneshot::Sender<HandshakeResult>>),
    Done(HandshakeResult),
}

/// The handshake of one client call, awaited by its parameter writers.
#[derive(Debug)]
pub(crate) struct Handshake {
    state: Mutex<HandshakeState>,
    subject: String,
}

impl Handshake {
    /// Returns the outcome if it is known, or a receiver that gets it.
    pub(crate) fn wait(&self) -> Result<HandshakeResult, oneshot::Receiver<HandshakeResult>> {
        let mut state = lock(&self.state);
        match &mut *state {
            HandshakeState::Done(res) => Ok(res.clone()),
            HandshakeState::Pending(waiters) => {
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                Err(rx)
            }
        }
    }

    /// Records the outcome once; later answers (several non-queue servers) are ignored.
    fn complete(&self, res: HandshakeResult) -> bool {
        let mut state = lock(&self.state);
        match &mut *state {
            HandshakeState::Done(_) => false,
            HandshakeState::Pending(waiters) => {
                for w in waiters.drain(..) {
                    let _ = w.send(res.clone());
                }
                *state = HandshakeState::Done(res);
                true
            }
        }
    }
}

enum Entry {
    /// A channel; `rx` is held here until a reader claims it. `nested` is every stream but
    /// a call's root.
    Channel {
        tx: DeliveryTx,
        rx: Option<DeliveryRx>,
        budget: Arc<Budget>,
        nested: bool,
    },
    /// A client call's handshake subject; `results` is the call's root result subject, which
    /// is failed too when the handshake fails, so a reader never waits for a call that was
    /// refused.
    Handshake {
        handshake: Arc<Handshake>,
        results: Arc<str>,
        flow: Option<Arc<Flow>>,
    },
    /// Where the peer grants credit for what this call sends (see [`super::flow`]).
    Credit {
        flow: Weak<Flow>,
        budget: Arc<Budget>,
    },
    /// A subscription path with wildcards: concrete subjects matching it get a channel on
    /// first use.
    Pattern {
        budget: Arc<Budget>,
        call: Weak<CallRoutes>,
    },
}

/// The route table of one connection.
pub(crate) struct Routes {
    map: Mutex<RouteMap>,
}

/// Subjects to routes. Keyed with a randomly seeded fast hash: every call inserts and removes
/// a few keys and every message looks one up, and SipHash showed in profiles. Keys are shared
/// with the call that registered them ([`CallRoutes`] keeps a list to unregister), so a key
/// is allocated once.
type RouteMap = HashMap<Arc<str>, Entry, foldhash::fast::RandomState>;

/// What [`Routes::deliver`] does to the table once done with an entry.
enum After {
    Nothing,
    /// The route is finished with (failed, or its reader is gone).
    Remove,
    /// A refused call: fail its root result reader too.
    FailResults(Arc<str>, TransportError),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the table inconsistent (each operation
    // is a single insert/remove), so a poisoned lock is still safe to use.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// At most this many trailing path indices are tried against wildcard patterns.
const MAX_WILDCARD_DEPTH: usize = 6;

impl Routes {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            map: Mutex::new(RouteMap::default()),
        })
    }

    /// Runs the demultiplexer until the subscription ends (the client was dropped).
    pub(crate) async fn run(self: Arc<Self>, mut sub: async_nats::Subscriber) {
        while let Some(msg) = sub.next().await {
            self.deliver(msg);
        }
        debug!("wRPC inbox subscription ended");
        // Fail every call still waiting: nothing will ever arrive for them.
        let mut map = lock(&self.map);
        for (_, entry) in map.drain() {
            match entry {
                Entry::Channel { tx, .. } => {
                    let _ = tx.send(Delivery::Fail(TransportError::Disconnected(
                        "inbox subscription ended".into(),
                    )));
                }
                Entry::Handshake { handshake, .. } => {
                    handshake.complete(Err(TransportError::Disconnected(
                        "inbox subscription ended".into(),
                    )));
                }
                Entry::Pattern { .. } | Entry::Credit { .. } => {}
            }
        }
    }

    pub(crate) fn deliver(&self, mut msg: async_nats::Message) {
        let mut map = lock(&self.map);
        // The subject is taken out (no copy); the handlers only need the rest of the message.
        let subject = std::mem::replace(&mut msg.subject, Subject::from_static(""));
        let key = subject.as_str();
        // One lookup for the usual case, a registered subject; a second only for a subject
        // first seen below a wildcard pattern.
        let after = match map.get_mut(key) {
            Some(entry) => Self::deliver_to(entry, key, &mut msg),
            None => {
                if !self.materialize(&mut map, key) {
                    trace!(subject = key, "dropping message for no live call");
                    return;
                }
                match map.get_mut(key) {
                    Some(entry) => Self::deliver_to(entry, key, &mut msg),
                    None => After::Nothing,
                }
            }
        };
        match after {
            After::Nothing => {}
            After::Remove => {
                map.remove(key);
            }
            After::FailResults(results, err) => {
                if let Some(Entry::Channel { tx, .. }) = map.get(&results) {
                    let _ = tx.send(Delivery::Fail(err));
                }
            }
        }
    }

    /// Hands `msg` to the route `entry`; says what to do with the table afterwards.
    fn deliver_to(entry: &mut Entry, key: &str, msg: &mut async_nats::Message) -> After {
        match entry {
            Entry::Channel {
                tx, budget, nested, ..
            } => {
                if let Some(reason) = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(super::REFUSAL_HEADER))
                {
                    let _ = tx.send(Delivery::Fail(TransportError::Failed(
                        reason.as_str().to_string(),
                    )));
                    return After::Remove;
                }
                let len = msg.payload.len();
                budget.touch();
                if !budget.take(len) {
                    debug!(
                        subject = key,
                        limit = budget.limit,
                        "per-call buffer exceeded; failing the call"
                    );
                    let _ = tx.send(Delivery::Fail(TransportError::BufferOverflow {
                        limit: budget.limit,
                    }));
                    return After::Remove;
                }
                if *nested {
                    budget.mark_nested();
                }
                if tx
                    .send(Delivery::Data(std::mem::take(&mut msg.payload)))
                    .is_err()
                {
                    budget.release(len);
                    return After::Remove;
                }
                After::Nothing
            }
            Entry::Credit { flow, budget } => {
                budget.touch();
                if let (Some(flow), Some(total)) = (flow.upgrade(), parse_credit(&msg.payload)) {
                    flow.ack(total);
                }
                After::Nothing
            }
            Entry::Handshake {
                handshake,
                results,
                flow,
            } => {
                let res = handshake_outcome(msg, &handshake.subject);
                // A Trellis server says it grants credit and takes ours.
                if let (Ok(server_rx), Some(flow)) = (&res, flow)
                    && msg
                        .headers
                        .as_ref()
                        .is_some_and(|h| h.get(FLOW_HEADER).is_some())
                {
                    flow.enable_sending();
                    flow.grant_to(Subject::from(crate::subjects::credit(server_rx)));
                }
                let failed = res.as_ref().err().cloned();
                // A refused call also fails its result reader, which may already wait.
                let first = handshake.complete(res);
                match failed {
                    Some(err) if first => After::FailResults(Arc::clone(results), err),
                    _ => After::Nothing,
                }
            }
            Entry::Pattern { .. } => {
                trace!(subject = key, "dropping message on a pattern subject");
                After::Nothing
            }
        }
    }

    /// Whether `subject` has a route.
    #[cfg(test)]
    pub(crate) fn routed(&self, subject: &str) -> bool {
        lock(&self.map).contains_key(subject)
    }

    /// Creates a channel for `key` if it matches a wildcard pattern of a live call.
    fn materialize(&self, map: &mut RouteMap, key: &str) -> bool {
        let Some((budget, call)) = find_pattern(map, key) else {
            return false;
        };
        let Some(call) = call.upgrade() else {
            return false;
        };
        let (tx, rx) = delivery_queue();
        let key: Arc<str> = key.into();
        map.insert(
            Arc::clone(&key),
            Entry::Channel {
                tx,
                rx: Some(rx),
                budget,
                nested: true,
            },
        );
        call.remember(key);
        true
    }
}

fn find_pattern(map: &RouteMap, key: &str) -> Option<(Arc<Budget>, Weak<CallRoutes>)> {
    let tokens: Vec<&str> = key.split('.').collect();
    let numeric = tokens
        .iter()
        .rev()
        .take(MAX_WILDCARD_DEPTH)
        .take_while(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .count();
    if numeric == 0 {
        return None;
    }
    let head = tokens.len() - numeric;
    // Try every non-empty subset of the trailing indices as wildcards.
    for mask in 1..(1u32 << numeric) {
        let mut candidate = tokens[..head].join(".");
        for (i, tok) in tokens[head..].iter().enumerate() {
            candidate.push('.');
            if mask & (1 << i) != 0 {
                candidate.push('*');
            } else {
                candidate.push_str(tok);
            }
        }
        if let Some(Entry::Pattern { budget, call }) = map.get(candidate.as_str()) {
            return Some((Arc::clone(budget), Weak::clone(call)));
        }
    }
    None
}

fn handshake_outcome(msg: &async_nats::Message, subject: &str) -> HandshakeResult {
    if let Some(reason) = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(super::REFUSAL_HEADER))
    {
        return Err(TransportError::Refused(reason.as_str().to_string()));
    }
    match msg.status {
        Some(StatusCode::NO_RESPONDERS) => Err(TransportError::NoResponders {
            subject: subject.to_string(),
        }),
        Some(StatusCode::TIMEOUT) => Err(TransportError::TimedOut {
            what: "the server to accept the call",
            timeout: std::time::Duration::ZERO,
        }),
        Some(code) if !code.is_success() => Err(TransportError::Status {
            code: code.as_u16(),
            description: msg.description.clone().unwrap_or_default(),
        }),
        _ => msg.reply.clone().ok_or(TransportError::NoReplySubject),
    }
}

/// The subjects one call registered; dropping the last handle unregisters them all.
pub(crate) struct CallRoutes {
    routes: Arc<Routes>,
    keys: Mutex<Vec<Arc<str>>>,
    budget: Arc<Budget>,
    flow: OnceLock<Arc<Flow>>,
    /// A client call's reply subject, whose credit subject is routed only once the call
    /// sends more than its invocation (see [`CallRoutes::route_credit`]).
    deferred_credit: OnceLock<Arc<str>>,
    /// Whether the deferred credit subject was routed.
    credit_routed: AtomicBool,
}

impl CallRoutes {
    pub(crate) fn new(routes: &Arc<Routes>, buffer_limit: usize) -> Arc<Self> {
        Arc::new(Self {
            routes: Arc::clone(routes),
            keys: Mutex::new(Vec::new()),
            budget: Budget::new(buffer_limit),
            flow: OnceLock::new(),
            deferred_credit: OnceLock::new(),
            credit_routed: AtomicBool::new(false),
        })
    }

    /// Attaches the call's flow state and registers `credit` as where the peer grants
    /// credit for what this call sends.
    pub(crate) fn set_flow(&self, flow: &Arc<Flow>, credit: &str) {
        let _ = self.flow.set(Arc::clone(flow));
        let credit: Arc<str> = credit.into();
        lock(&self.routes.map).insert(
            Arc::clone(&credit),
            Entry::Credit {
                flow: Arc::downgrade(flow),
                budget: Arc::clone(&self.budget),
            },
        );
        self.remember(credit);
    }

    /// Attaches a client call's flow state. The credit subject of reply subject `rx`, where
    /// the server grants credit for what the call sends, is made and routed by
    /// [`CallRoutes::route_credit`] before the call first publishes beyond its invocation.
    /// Most calls never do, and so save a route and a subject.
    ///
    /// A grant that comes before that is dropped, which is harmless: grants are cumulative,
    /// and the call has sent nothing that needs credit yet.
    pub(crate) fn set_flow_deferred(&self, flow: &Arc<Flow>, rx: &Arc<str>) {
        let _ = self.flow.set(Arc::clone(flow));
        let _ = self.deferred_credit.set(Arc::clone(rx));
    }

    /// Routes the credit subject set aside by [`CallRoutes::set_flow_deferred`], if not yet.
    pub(crate) fn route_credit(&self) {
        let Some(rx) = self.deferred_credit.get() else {
            return;
        };
        if self.credit_routed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(flow) = self.flow.get() {
            self.set_flow(flow, &crate::subjects::credit(rx));
        }
    }

    /// When the peer last sent anything for this call.
    pub(crate) fn last_heard(&self) -> std::time::Instant {
        self.budget.last_heard()
    }

    /// The call's budget and activity record.
    pub(crate) fn budget(&self) -> &Budget {
        &self.budget
    }

    /// `n` received bytes were consumed (read, or dropped unread): their buffer space is
    /// free again, and the sender may be granted credit.
    pub(crate) fn consumed(&self, n: usize) {
        let drained = self.budget.release(n);
        if let Some(flow) = self.flow.get() {
            flow.consumed(n, drained);
        }
    }

    fn remember(&self, key: Arc<str>) {
        lock(&self.keys).push(key);
    }

    /// Registers a channel for the root stream `subject`; `claim` returns its receiver now,
    /// otherwise a reader claims it later with [`CallRoutes::claim`].
    pub(crate) fn channel(&self, subject: Arc<str>, claim: bool) -> Option<DeliveryRx> {
        self.register(subject, claim, false)
    }

    fn register(&self, subject: Arc<str>, claim: bool, nested: bool) -> Option<DeliveryRx> {
        let (tx, rx) = delivery_queue();
        let (kept, given) = if claim {
            (None, Some(rx))
        } else {
            (Some(rx), None)
        };
        lock(&self.routes.map).insert(
            Arc::clone(&subject),
            Entry::Channel {
                tx,
                rx: kept,
                budget: Arc::clone(&self.budget),
                nested,
            },
        );
        self.remember(subject);
        given
    }

    /// Registers a subscription path; paths with wildcards become patterns.
    pub(crate) fn path(self: &Arc<Self>, subject: &str, has_wildcard: bool) {
        let subject: Arc<str> = subject.into();
        if has_wildcard {
            lock(&self.routes.map).insert(
                Arc::clone(&subject),
                Entry::Pattern {
                    budget: Arc::clone(&self.budget),
                    call: Arc::downgrade(self),
                },
            );
            self.remember(subject);
        } else {
            self.register(subject, false, true);
        }
    }

    /// Registers the handshake subject `rx` of a client call whose root result subject is
    /// `results`.
    pub(crate) fn handshake(
        &self,
        rx: &Arc<str>,
        results: &Arc<str>,
        invocation: &str,
    ) -> Arc<Handshake> {
        let flow = self.flow.get().cloned();
        let handshake = Arc::new(Handshake {
            state: Mutex::new(HandshakeState::Pending(Vec::new())),
            subject: invocation.to_string(),
        });
        lock(&self.routes.map).insert(
            Arc::clone(rx),
            Entry::Handshake {
                handshake: Arc::clone(&handshake),
                results: Arc::clone(results),
                flow,
            },
        );
        self.remember(Arc::clone(rx));
        handshake
    }

    /// Takes the receiver registered for `subject` (directly or through a pattern).
    pub(crate) fn claim(self: &Arc<Self>, subject: &str) -> Option<DeliveryRx> {
        let mut map = lock(&self.routes.map);
        if let Some(Entry::Channel { rx, .. }) = map.get_mut(subject) {
            return rx.take();
        }
        if map.contains_key(subject) {
            return None;
        }
        let (budget, call) = find_pattern(&map, subject)?;
        if !Weak::ptr_eq(&call, &Arc::downgrade(self)) {
            return None;
        }
        let (tx, rx) = delivery_queue();
        let subject: Arc<str> = subject.into();
        map.insert(
            Arc::clone(&subject),
            Entry::Channel {
                tx,
                rx: None,
                budget,
                nested: true,
            },
        );
        drop(map);
        self.remember(subject);
        Some(rx)
    }

    /// Unregisters one subject early (its reader is gone), so late messages are dropped
    /// instead of buffered.
    pub(crate) fn forget(&self, subject: &str) {
        lock(&self.routes.map).remove(subject);
    }
}

impl Drop for CallRoutes {
    fn drop(&mut self) {
        let keys = std::mem::take(&mut *lock(&self.keys));
        let mut map = lock(&self.routes.map);
        for key in keys {
            map.remove(&*key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_bounded() {
        let b = Budget::new(10);
        assert!(b.take(6));
        assert!(!b.take(5));
        b.release(6);
        assert!(b.take(10));
        assert!(!b.take(1));
    }

    #[test]
    fn patterns_match_concrete_subjects_and_calls_unregister() {
        let routes = Routes::new();
        let call = CallRoutes::new(&routes, 1024);
        call.path("in.x.results.0.*", true);
        assert!(call.claim("in.x.results.0.7").is_some());
        assert!(call.claim("in.x.results.1.7").is_none());
        drop(call);
        assert!(lock(&routes.map).is_empty());
    }
}
