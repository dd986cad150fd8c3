//! Pacing producers of streamed values to the speed their call's writer really sends at.
//!
//! The stream encoders of `wrpc-transport` 0.29 take items from a `stream<u8>` whenever the
//! stream offers one, even while their write is still pending, and keep them in a buffer.
//! Behind a slow peer (flow control holding the writer back) a fast producer would so end
//! up entirely in memory. A [`Pacer`] ties the producer to the call: its paced stream offers
//! the next item only while what it produced is at most [`SLACK`] ahead of what the call has
//! published, so memory per call stays bounded by the slack plus the flow window.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures::Stream;

use super::flow::Flow;

/// How far a paced producer may run ahead of what its call has sent.
pub const SLACK: u64 = 2 << 20;

tokio::task_local! {
    static CURRENT: Pacer;
}

#[derive(Default)]
struct Inner {
    flow: OnceLock<Arc<Flow>>,
    produced: AtomicU64,
    /// Producers waiting for the call to start.
    waiting: Mutex<Vec<Waker>>,
}

/// Paces producers of one call's streamed values (see the module docs).
///
/// On the client side, run the invocation inside [`Pacer::scope`]: the call made there
/// attaches itself. On the server side, take the pacer from the
/// [`ServeContext`](super::ServeContext) of the call being served.
///
/// ```no_run
/// # async fn demo(client: trellis_wrpc_nats::Client, body: futures::stream::BoxStream<'static, bytes::Bytes>) {
/// use trellis_wrpc_nats::Pacer;
/// let pacer = Pacer::new();
/// let body = pacer.pace(body); // hand this to the generated call as its stream argument
/// # let _ = body;
/// // pacer.scope(generated_call(&client, …)).await
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Pacer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer")
            .field("attached", &self.inner.flow.get().is_some())
            .field("produced", &self.inner.produced)
            .finish()
    }
}

impl Pacer {
    /// A pacer not yet tied to a call.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn for_flow(flow: &Arc<Flow>) -> Self {
        let pacer = Self::new();
        pacer.attach(flow);
        pacer
    }

    /// Runs `fut`; the call it makes (through this crate's client) is the one paced.
    pub async fn scope<F: std::future::Future>(&self, fut: F) -> F::Output {
        CURRENT.scope(self.clone(), fut).await
    }

    /// Ties the pacer of the current [`Pacer::scope`], if any, to `flow`.
    pub(crate) fn attach_current(flow: &Arc<Flow>) {
        let _ = CURRENT.try_with(|p| p.attach(flow));
    }

    fn attach(&self, flow: &Arc<Flow>) {
        if self.inner.flow.set(Arc::clone(flow)).is_ok() {
            for w in self
                .inner
                .waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..)
            {
                w.wake();
            }
        }
    }

    /// `stream`, offering items only as fast as the call sends them.
    pub fn pace<S>(&self, stream: S) -> Paced<S>
    where
        S: Stream<Item = Bytes>,
    {
        Paced {
            stream,
            pacer: self.clone(),
        }
    }

    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        let produced = self.inner.produced.load(Ordering::Acquire);
        let Some(flow) = self.inner.flow.get() else {
            if produced < SLACK {
                return Poll::Ready(());
            }
            self.inner
                .waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(cx.waker().clone());
            return match self.inner.flow.get() {
                Some(_) => Poll::Ready(()),
                None => Poll::Pending,
            };
        };
        if produced.saturating_sub(flow.sent_total()) < SLACK {
            return Poll::Ready(());
        }
        flow.wake_on_send(cx.waker());
        // A write may have happened between the check and the registration.
        if produced.saturating_sub(flow.sent_total()) < SLACK {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// A stream paced by a [`Pacer`].
#[derive(Debug)]
pub struct Paced<S> {
    stream: S,
    pacer: Pacer,
}

impl<S> Stream for Paced<S>
where
    S: Stream<Item = Bytes> + Unpin,
{
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = &mut *self;
        if this.pacer.poll_room(cx).is_pending() {
            return Poll::Pending;
        }
        let next = Pin::new(&mut this.stream).poll_next(cx);
        if let Poll::Ready(Some(chunk)) = &next {
            this.pacer
                .inner
                .produced
                .fetch_add(chunk.len() as u64, Ordering::AcqRel);
        }
        next
    }
}
