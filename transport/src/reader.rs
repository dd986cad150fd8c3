//! The incoming byte stream of one call (results on the client, parameters on the server).
//!
//! A reader drains the channel the demultiplexer fills for its subject. An empty message is
//! the wRPC end-of-stream marker. Reads are guarded by an idle timeout, so a peer that goes
//! silent fails the call with a clear error instead of leaving it waiting forever.
//!
//! A server reads a call's synchronous parameters ahead ([`Incoming::prefetch_sync`]) before
//! handing the call to the code that decodes them: generated serving code decodes one call
//! after another, so a call whose parameters never complete must not reach it.

use core::pin::Pin;
use core::task::{Context, Poll};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::routes::{CallRoutes, Delivery, DeliveryRx};
use crate::error::TransportError;
use crate::subjects;

/// Incoming multiplexed byte stream of a wRPC call over NATS.
pub struct Incoming {
    buffer: Bytes,
    rx: Option<DeliveryRx>,
    call: Arc<CallRoutes>,
    /// The subject of the root stream (`….results` or `….params`).
    base: Arc<str>,
    path: Vec<usize>,
    timeout: Option<Duration>,
    sleep: Option<Pin<Box<Sleep>>>,
    eof: bool,
    what: &'static str,
}

impl Incoming {
    pub(crate) fn new(
        call: Arc<CallRoutes>,
        base: Arc<str>,
        rx: Option<DeliveryRx>,
        buffer: Bytes,
        timeout: Option<Duration>,
        what: &'static str,
    ) -> Self {
        Self {
            buffer,
            rx,
            call,
            base,
            path: Vec::new(),
            timeout,
            sleep: None,
            eof: false,
            what,
        }
    }

    pub(crate) fn call(&self) -> &Arc<CallRoutes> {
        &self.call
    }

    pub(crate) fn is_empty_start(&self) -> bool {
        self.buffer.is_empty() && self.path.is_empty()
    }

    /// What is buffered and not yet read: after [`Self::prefetch_sync`], every synchronous
    /// value of the call.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buffer
    }

    pub(crate) fn set_eof(&mut self) {
        self.eof = true;
    }

    /// Reads the root stream ahead until it surely holds every synchronous value of the call:
    /// until it ends, or until a message arrives on a nested stream (every wRPC peer sends
    /// the synchronous values first; some close the root only after the nested ones). At
    /// most `limit` bytes are held; past that the call fails with `BufferOverflow`. The
    /// caller bounds the time.
    pub(crate) async fn prefetch_sync(&mut self, limit: usize) -> Result<(), TransportError> {
        if self.eof {
            return Ok(());
        }
        let Some(rx) = self.rx.as_mut() else {
            return Ok(());
        };
        let mut held = self.buffer.len();
        let mut chunks = vec![std::mem::take(&mut self.buffer)];
        // What one delivery does to the prefetch: `Some` ends it.
        let mut take = |delivery: Option<Delivery>, eof: &mut bool| match delivery {
            Some(Delivery::Data(payload)) => {
                self.call.consumed(payload.len());
                if payload.is_empty() {
                    *eof = true;
                    return Some(Ok(()));
                }
                held += payload.len();
                if held > limit {
                    *eof = true;
                    return Some(Err(TransportError::BufferOverflow { limit }));
                }
                chunks.push(payload);
                None
            }
            Some(Delivery::Fail(err)) => {
                *eof = true;
                Some(Err(err))
            }
            None => {
                *eof = true;
                Some(Ok(()))
            }
        };
        let mut eof = false;
        let result = loop {
            if self.call.budget().nested_started() {
                // Root messages queued before the nested one still belong to the synchronous
                // values: take them too, or a check of the values would find them cut short.
                let mut ended = None;
                while ended.is_none() {
                    match rx.try_recv() {
                        Some(delivery) => ended = take(Some(delivery), &mut eof),
                        None => break,
                    }
                }
                break ended.unwrap_or(Ok(()));
            }
            tokio::select! {
                biased;
                delivery = rx.recv() => if let Some(end) = take(delivery, &mut eof) {
                    break end;
                },
                () = self.call.budget().nested_notified() => {}
            }
        };
        self.eof |= eof;
        self.buffer = match chunks.len() {
            1 => chunks.pop().unwrap_or_default(),
            _ => {
                let mut all = bytes::BytesMut::with_capacity(held);
                for c in &chunks {
                    all.extend_from_slice(c);
                }
                all.freeze()
            }
        };
        result
    }

    fn subject(&self) -> std::borrow::Cow<'_, str> {
        if self.path.is_empty() {
            return std::borrow::Cow::Borrowed(&self.base);
        }
        let path: Vec<Option<usize>> = self.path.iter().copied().map(Some).collect();
        std::borrow::Cow::Owned(subjects::indexed(&self.base, &path))
    }

    /// Fails the read once the call has been silent for the timeout. The timer is armed the
    /// first time the stream waits and never moved on arrivals (that costs a timer-wheel
    /// update per message): when it fires, the call's last message says whether to wait on.
    fn poll_timeout(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        let Some(timeout) = self.timeout else {
            return Poll::Pending;
        };
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // Silent on this stream, but the peer may be busy with another of the call (a
            // trailer future waits for the whole body): only a silent call times out.
            let heard = Instant::from_std(self.call.last_heard());
            if heard + timeout > Instant::now() {
                sleep.as_mut().reset(heard + timeout);
                continue;
            }
            break;
        }
        Poll::Ready(
            TransportError::TimedOut {
                what: self.what,
                timeout,
            }
            .into_io(),
        )
    }
}

impl wrpc_transport::Index<Self> for Incoming {
    fn index(&self, path: &[usize]) -> anyhow::Result<Self> {
        anyhow::ensure!(!path.is_empty(), "cannot index with an empty path");
        let mut full = self.path.clone();
        full.extend_from_slice(path);
        let full_opt: Vec<Option<usize>> = full.iter().copied().map(Some).collect();
        let subject = subjects::indexed(&self.base, &full_opt);
        let rx = self.call.claim(&subject);
        Ok(Self {
            buffer: Bytes::new(),
            rx,
            call: Arc::clone(&self.call),
            base: Arc::clone(&self.base),
            path: full,
            timeout: self.timeout,
            sleep: None,
            eof: false,
            what: self.what,
        })
    }
}

impl AsyncRead for Incoming {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let cap = buf.remaining();
        if cap == 0 {
            return Poll::Ready(Ok(()));
        }
        if !this.buffer.is_empty() {
            let n = cap.min(this.buffer.len());
            buf.put_slice(&this.buffer.split_to(n));
            return Poll::Ready(Ok(()));
        }
        if this.eof {
            return Poll::Ready(Ok(()));
        }
        let Some(rx) = this.rx.as_mut() else {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no subscription for {}", this.subject()),
            )));
        };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(Delivery::Data(mut payload))) => {
                this.call.consumed(payload.len());
                if payload.is_empty() {
                    this.eof = true;
                    return Poll::Ready(Ok(()));
                }
                let n = cap.min(payload.len());
                buf.put_slice(&payload.split_to(n));
                this.buffer = payload;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Some(Delivery::Fail(err))) => {
                this.eof = true;
                Poll::Ready(Err(err.into_io()))
            }
            Poll::Ready(None) => {
                this.eof = true;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.poll_timeout(cx) {
                Poll::Ready(err) => Poll::Ready(Err(err)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            // Give back what was delivered but never read, then stop further deliveries.
            rx.close();
            while let Some(d) = rx.try_recv() {
                if let Delivery::Data(p) = d {
                    self.call.consumed(p.len());
                }
            }
            // The last holder of the call's routes unregisters them all when dropped just
            // after this; only a reader outlived by its call has to unregister itself.
            if Arc::strong_count(&self.call) > 1 {
                self.call.forget(&self.subject());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;

    use super::*;
    use crate::routes::Routes;

    const ROOT: &str = "in.x.params";

    fn msg(subject: &str, payload: &'static [u8]) -> async_nats::Message {
        async_nats::Message {
            subject: subject.into(),
            reply: None,
            payload: Bytes::from_static(payload),
            headers: None,
            status: None,
            description: None,
            length: payload.len(),
        }
    }

    /// A call's root parameter stream, with one nested stream (`….params.0`).
    fn call() -> (Arc<Routes>, Incoming) {
        let routes = Routes::new();
        let call = CallRoutes::new(&routes, 1 << 20);
        let rx = call.channel(Arc::from(ROOT), true);
        call.path(&format!("{ROOT}.0"), false);
        let incoming = Incoming::new(
            call,
            Arc::from(ROOT),
            rx,
            Bytes::from_static(b"ab"),
            Some(Duration::from_secs(30)),
            "parameters",
        );
        (routes, incoming)
    }

    async fn prefetch(incoming: &mut Incoming, limit: usize) -> Result<(), TransportError> {
        tokio::time::timeout(Duration::from_secs(5), incoming.prefetch_sync(limit))
            .await
            .expect("prefetch returns without waiting for the call's timeout")
    }

    async fn read_root(incoming: &mut Incoming) -> Vec<u8> {
        let mut out = Vec::new();
        incoming.read_to_end(&mut out).await.expect("read the root");
        out
    }

    #[test]
    fn dropped_readers_unregister_their_streams() {
        let nested = format!("{ROOT}.0");
        // Outlived by its call: the reader unregisters its own stream, the call keeps the rest.
        let (routes, incoming) = call();
        let held = Arc::clone(incoming.call());
        drop(incoming);
        assert!(!routes.routed(ROOT));
        assert!(routes.routed(&nested));
        drop(held);
        assert!(!routes.routed(&nested));
        // The last holder of its call: dropping it unregisters everything.
        let (routes, incoming) = call();
        drop(incoming);
        assert!(!routes.routed(ROOT) && !routes.routed(&nested));
    }

    #[tokio::test]
    async fn prefetch_reads_the_root_until_it_ends() {
        let (routes, mut incoming) = call();
        routes.deliver(msg(ROOT, b"cd"));
        routes.deliver(msg(ROOT, b"ef"));
        routes.deliver(msg(ROOT, b""));
        prefetch(&mut incoming, 1 << 20).await.expect("prefetched");
        assert_eq!(read_root(&mut incoming).await, b"abcdef");
    }

    /// The wasmtime runtime's calls close the root only after their nested streams: the
    /// first nested message says the root's synchronous bytes are all in.
    #[tokio::test]
    async fn prefetch_stops_when_a_nested_stream_speaks() {
        let (routes, mut incoming) = call();
        routes.deliver(msg(ROOT, b"cd"));
        routes.deliver(msg(&format!("{ROOT}.0"), b"nested"));
        prefetch(&mut incoming, 1 << 20).await.expect("prefetched");
        // The root is still open; what it holds so far is readable at once.
        let mut buf = [0u8; 4];
        incoming.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"abcd");
        routes.deliver(msg(ROOT, b""));
        assert_eq!(read_root(&mut incoming).await, b"");
    }

    #[tokio::test]
    async fn prefetch_is_bounded() {
        let (routes, mut incoming) = call();
        routes.deliver(msg(ROOT, b"cdef"));
        let err = prefetch(&mut incoming, 4)
            .await
            .expect_err("over the limit");
        assert!(
            matches!(err, TransportError::BufferOverflow { limit: 4 }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn prefetch_skips_a_complete_root() {
        let (_routes, mut incoming) = call();
        incoming.set_eof();
        prefetch(&mut incoming, 1 << 20)
            .await
            .expect("nothing to wait for");
        assert_eq!(read_root(&mut incoming).await, b"ab");
    }
}
