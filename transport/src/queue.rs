//! The queue between the route table and the reader of one stream.
//!
//! Every stream of every call gets one, and most carry a single message: a call's results.
//! So the queue is built for that case: one allocation when it is made, and none for its
//! first message, which is kept inline. (The `futures` unbounded channel it replaces
//! allocated a stub node when made and a node per message: three allocations for a one-message
//! stream, a measurable share of a small call.)
//!
//! One sender (the route table's entry) and one receiver (the reader). Memory is not bounded
//! here: the route table counts every byte it queues against the call's budget first.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

struct State<T> {
    /// The oldest queued item, if any: a one-message stream never touches `rest`.
    head: Option<T>,
    rest: VecDeque<T>,
    /// The receiver was closed or dropped: further sends fail.
    rx_closed: bool,
    /// The sender was dropped: once drained, the receiver sees the end.
    tx_dropped: bool,
    waker: Option<Waker>,
}

type Shared<T> = Arc<Mutex<State<T>>>;

fn lock<T>(shared: &Mutex<State<T>>) -> MutexGuard<'_, State<T>> {
    // Every critical section is a push, a pop or a flag change: a panic cannot leave the
    // state half-updated, so a poisoned lock is still safe to use.
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// A new empty queue.
pub(crate) fn queue<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Mutex::new(State {
        head: None,
        rest: VecDeque::new(),
        rx_closed: false,
        tx_dropped: false,
        waker: None,
    }));
    (
        Sender {
            shared: Arc::clone(&shared),
        },
        Receiver { shared },
    )
}

/// The sending half.
pub(crate) struct Sender<T> {
    shared: Shared<T>,
}

impl<T> Sender<T> {
    /// Queues `item` and wakes the receiver; gives `item` back if the receiver is closed.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        let waker = {
            let mut state = lock(&self.shared);
            if state.rx_closed {
                return Err(item);
            }
            if state.head.is_none() && state.rest.is_empty() {
                state.head = Some(item);
            } else {
                state.rest.push_back(item);
            }
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut state = lock(&self.shared);
            state.tx_dropped = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The receiving half.
pub(crate) struct Receiver<T> {
    shared: Shared<T>,
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

fn pop<T>(state: &mut State<T>) -> Option<T> {
    state.head.take().or_else(|| state.rest.pop_front())
}

impl<T> Receiver<T> {
    /// The next item; `Ready(None)` once the sender is gone and the queue drained.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = lock(&self.shared);
        if let Some(item) = pop(&mut state) {
            return Poll::Ready(Some(item));
        }
        if state.tx_dropped {
            return Poll::Ready(None);
        }
        match &mut state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next item, waiting for it.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// An item already queued, if any.
    pub(crate) fn try_recv(&mut self) -> Option<T> {
        pop(&mut lock(&self.shared))
    }

    /// Refuses further items; those queued can still be drained.
    pub(crate) fn close(&mut self) {
        lock(&self.shared).rx_closed = true;
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = lock(&self.shared);
        state.rx_closed = true;
        // Queued items are byte buffers and errors: dropping them here takes no other lock.
        state.head = None;
        state.rest.clear();
        state.waker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker;

    #[test]
    fn items_come_out_in_order_then_the_end() {
        let (tx, mut rx) = queue();
        for i in 0..5 {
            assert!(tx.send(i).is_ok());
        }
        assert_eq!(rx.try_recv(), Some(0));
        assert!(tx.send(5).is_ok());
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut got = Vec::new();
        while let Poll::Ready(Some(i)) = rx.poll_recv(&mut cx) {
            got.push(i);
        }
        assert_eq!(got, [1, 2, 3, 4, 5]);
        assert!(rx.poll_recv(&mut cx).is_pending());
        drop(tx);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn a_closed_receiver_refuses_but_drains() {
        let (tx, mut rx) = queue();
        assert!(tx.send(1).is_ok());
        rx.close();
        assert_eq!(tx.send(2), Err(2));
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(rx.try_recv(), None);
        drop(rx);
        assert_eq!(tx.send(3), Err(3));
    }

    #[tokio::test]
    async fn a_send_wakes_a_waiting_receiver() {
        let (tx, mut rx) = queue();
        let reader = tokio::spawn(async move { (rx.recv().await, rx.recv().await) });
        tokio::task::yield_now().await;
        assert!(tx.send("a").is_ok());
        drop(tx);
        assert_eq!(reader.await.ok(), Some((Some("a"), None)));
    }
}
