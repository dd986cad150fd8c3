//! The incoming byte stream of one call (results on the client, parameters on the server).
//!
//! A reader drains the channel the demultiplexer fills for its subject. An empty message is
//! the wRPC end-of-stream marker. Reads are guarded by an idle timeout, so a peer that goes
//! silent fails the call with a clear error instead of leaving it waiting forever.

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

    pub(crate) fn set_eof(&mut self) {
        self.eof = true;
    }

    fn subject(&self) -> String {
        let path: Vec<Option<usize>> = self.path.iter().copied().map(Some).collect();
        subjects::indexed(&self.base, &path)
    }

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

    fn data_arrived(&mut self) {
        if let (Some(sleep), Some(timeout)) = (self.sleep.as_mut(), self.timeout) {
            sleep.as_mut().reset(Instant::now() + timeout);
        }
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
                this.data_arrived();
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
            while let Ok(d) = rx.try_recv() {
                if let Delivery::Data(p) = d {
                    self.call.consumed(p.len());
                }
            }
            self.call.forget(&self.subject());
        }
    }
}
