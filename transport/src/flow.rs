//! Flow control for streamed values: a Trellis extension, negotiated per call.
//!
//! wRPC over NATS has none. A sender publishes as fast as it can, so a receiver that reads
//! slower — a component hashing a 1 GiB upload, an HTTP client on a slow link downloading
//! from a component — either buffers without bound or, with this transport's per-call
//! budget, has its call failed. When both ends are Trellis, the receiver grants credit
//! instead: it tells the sender how many bytes of the call it has consumed, on a subject in
//! the *sender's* inbox, and the sender keeps at most one window beyond that in flight.
//! Memory then stays bounded on both sides and nothing is lost, at any speed difference.
//!
//! Negotiation rides on messages the protocol already has:
//! - the client's reply subject carries the token `t-flow` ("I send credit for results and
//!   honour credit for parameters"), or `t-flow-r` when the call has streamed results (the
//!   server must then answer the handshake, so the client learns where to send credit) —
//!   see [`crate::subjects::FLOW_TOKEN`];
//! - a Trellis server answers the handshake with header [`FLOW_HEADER`];
//! - credit goes to `{reply}.credit` (the client's, for parameters) and `{server-rx}.credit`
//!   (the server's, for results); its payload is the decimal count of bytes consumed so far.
//!
//! A 1.x client's reply subject has no such token, and a 1.x server neither sees the token
//! (reply subjects are opaque to it) nor answers with the header: then nothing waits for
//! credit and none is sent, exactly as before.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use async_nats::Subject;
use bytes::Bytes;
use tracing::trace;

/// The header that negotiates flow control.
pub(crate) const FLOW_HEADER: &str = "trellis-flow";

/// The smallest window a sender keeps: see [`DRAINED_GRANT`].
pub(crate) const MIN_WINDOW: usize = 256 << 10;

/// A reader that has read everything it received grants credit once it owes this much,
/// whatever its own window. A sender stopped at its window (at least [`MIN_WINDOW`]) is owed
/// at least that once its bytes are read, so the two can never wait on each other.
const DRAINED_GRANT: u64 = 64 << 10;

/// Flow state of one call: the sending side (bytes sent, credit received) and the receiving
/// side (bytes consumed, credit granted). Each call sends in one direction and receives in
/// the other, so one value serves both.
pub(crate) struct Flow {
    nats: Arc<async_nats::Client>,
    window: u64,
    send_enabled: AtomicBool,
    sent: AtomicU64,
    acked: AtomicU64,
    waiters: Mutex<Vec<Waker>>,
    credit_to: Mutex<Option<Subject>>,
    consumed: AtomicU64,
    credited: AtomicU64,
    /// Producers ([`super::Pacer`]) waiting for writes to catch up.
    producers: Mutex<Vec<Waker>>,
    has_producers: AtomicBool,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow")
            .field("window", &self.window)
            .field("sent", &self.sent)
            .field("acked", &self.acked)
            .field("consumed", &self.consumed)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Flow {
    pub(crate) fn new(nats: Arc<async_nats::Client>, window: usize) -> Arc<Self> {
        Arc::new(Self {
            nats,
            window: window.max(MIN_WINDOW) as u64,
            send_enabled: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            waiters: Mutex::new(Vec::new()),
            credit_to: Mutex::new(None),
            consumed: AtomicU64::new(0),
            credited: AtomicU64::new(0),
            producers: Mutex::new(Vec::new()),
            has_producers: AtomicBool::new(false),
        })
    }

    /// The peer grants credit: from now on the sender waits for it.
    pub(crate) fn enable_sending(&self) {
        self.send_enabled.store(true, Ordering::Release);
    }

    /// The peer honours credit sent to `subject`: from now on consumption is reported.
    pub(crate) fn grant_to(&self, subject: Subject) {
        *lock(&self.credit_to) = Some(subject);
    }

    /// Ready when there is room for more bytes (always, unless the peer grants credit).
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.has_room() {
            return Poll::Ready(());
        }
        lock(&self.waiters).push(cx.waker().clone());
        // Credit may have come in between the check and the registration.
        if self.has_room() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn has_room(&self) -> bool {
        self.room() > 0
    }

    /// Bytes that may be sent now before waiting for credit (unbounded unless the peer
    /// grants credit).
    pub(crate) fn room(&self) -> usize {
        if !self.send_enabled.load(Ordering::Acquire) {
            return usize::MAX;
        }
        let in_flight = self
            .sent
            .load(Ordering::Acquire)
            .saturating_sub(self.acked.load(Ordering::Acquire));
        usize::try_from(self.window.saturating_sub(in_flight)).unwrap_or(usize::MAX)
    }

    /// `n` bytes went out.
    pub(crate) fn sent(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::AcqRel);
        if self.has_producers.swap(false, Ordering::AcqRel) {
            for w in lock(&self.producers).drain(..) {
                w.wake();
            }
        }
    }

    /// Bytes sent so far.
    pub(crate) fn sent_total(&self) -> u64 {
        self.sent.load(Ordering::Acquire)
    }

    /// Wakes `waker` at the next write.
    pub(crate) fn wake_on_send(&self, waker: &Waker) {
        lock(&self.producers).push(waker.clone());
        self.has_producers.store(true, Ordering::Release);
    }

    /// The peer has consumed `total` bytes of what we sent.
    pub(crate) fn ack(&self, total: u64) {
        let before = self.acked.fetch_max(total, Ordering::AcqRel);
        if total > before {
            for w in lock(&self.waiters).drain(..) {
                w.wake();
            }
        }
    }

    /// The application consumed `n` received bytes; `drained` says nothing received is
    /// left unread. Grants credit every quarter window, and once the reader has drained all
    /// it received (and owes [`DRAINED_GRANT`]): the sender's window may be smaller than
    /// ours, and a sender stopped at its window sends nothing more, so waiting for our
    /// quarter would stall both.
    pub(crate) fn consumed(&self, n: usize, drained: bool) {
        let Some(target) = lock(&self.credit_to).clone() else {
            return;
        };
        let total = self.consumed.fetch_add(n as u64, Ordering::AcqRel) + n as u64;
        let last = self.credited.load(Ordering::Acquire);
        let owed = total.saturating_sub(last);
        // A window is at least `MIN_WINDOW`, so a quarter of it is never below `DRAINED_GRANT`.
        let due = if drained {
            DRAINED_GRANT
        } else {
            self.window / 4
        };
        if owed < due {
            return;
        }
        if self
            .credited
            .compare_exchange(last, total, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return; // another reader of this call just granted
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let nats = Arc::clone(&self.nats);
        trace!(subject = target.as_str(), total, "granting credit");
        // Credit is cumulative, so a late or reordered grant is harmless.
        rt.spawn(async move {
            let _ = nats.publish(target, Bytes::from(total.to_string())).await;
        });
    }
}

/// The credit a message carries: the decimal count of bytes consumed.
pub(crate) fn parse_credit(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_parses() {
        assert_eq!(parse_credit(b"1048576"), Some(1 << 20));
        assert_eq!(parse_credit(b"x"), None);
        assert_eq!(parse_credit(b""), None);
    }
}
