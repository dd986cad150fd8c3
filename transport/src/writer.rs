//! The outgoing byte stream of one call (parameters on the client, results on the server).
//!
//! Every write becomes one NATS message of at most the server's max payload; an empty message
//! closes the stream. A client's parameter subject is only known once the server has answered
//! the handshake, so client writers wait for it — except the root writer of a call whose
//! parameters all fit in the first message, which has nothing left to send and closes at once:
//! small calls cost no extra round trip.

use core::future::Future as _;
use core::pin::Pin;
use core::task::{Context, Poll, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::Subject;
use async_nats::message::OutboundMessage;
use bytes::{Buf as _, Bytes};
use futures::SinkExt as _;
use tokio::io::AsyncWrite;
use tokio::sync::oneshot;
use tokio::time::Sleep;
use tracing::{debug, trace};

use super::flow::Flow;
use super::routes::{CallRoutes, Handshake, HandshakeResult};
use crate::error::TransportError;
use crate::subjects;

enum Target {
    /// The subject to publish on.
    Ready(Subject),
    /// Waiting for the client call's handshake; `path` is appended to the server's
    /// parameter subject once known.
    Waiting {
        handshake: Arc<Handshake>,
        rx: Option<oneshot::Receiver<HandshakeResult>>,
        sleep: Option<Pin<Box<Sleep>>>,
    },
    Failed(TransportError),
}

/// Outgoing multiplexed byte stream of a wRPC call over NATS.
pub struct Outgoing {
    /// The connection's client, shared until this stream first publishes: publishing
    /// through the client's `Sink` needs a client of our own, and cloning one allocates, so
    /// it is made (`Arc::make_mut`) only when needed. Most client root streams never publish
    /// (their parameters went in the invocation).
    nats: Arc<async_nats::Client>,
    target: Target,
    path: Vec<usize>,
    /// Parameters that did not fit in the first message; sent first once the handshake is done.
    pending: Bytes,
    /// Whether this stream must be closed with an empty message. Root streams carry one
    /// self-delimiting value, which a reader decodes without waiting for the close, so they
    /// only close when the reader could not otherwise finish: when the value is empty (a
    /// function without parameters or results), or when part of it went out after the first
    /// message. Nested (async) streams always close.
    must_close: bool,
    /// Whether this is the root result stream of a served call.
    root_results: bool,
    /// Whether anything was published on this stream.
    wrote: bool,
    /// Whether nested streams were derived from this one (see [`Outgoing::needs_close`]).
    indexed: AtomicBool,
    closed: bool,
    timeout: Duration,
    /// The call's flow state: when the peer grants credit, writes wait for it.
    flow: Option<Arc<Flow>>,
    /// How long we have been waiting for credit.
    flow_sleep: Option<Pin<Box<Sleep>>>,
    /// Keeps the call's routes — the subject credit arrives on — registered while writing,
    /// even after the call's readers are gone.
    _call: Option<Arc<CallRoutes>>,
}

impl Outgoing {
    /// The root result writer of a served call.
    pub(crate) fn server_root(
        nats: Arc<async_nats::Client>,
        subject: Subject,
        timeout: Duration,
        flow: Option<(Arc<Flow>, Arc<CallRoutes>)>,
    ) -> Self {
        let (flow, call) = flow.unzip();
        Self {
            nats,
            target: Target::Ready(subject),
            path: Vec::new(),
            pending: Bytes::new(),
            must_close: true,
            root_results: true,
            wrote: false,
            indexed: AtomicBool::new(false),
            closed: false,
            timeout,
            flow,
            flow_sleep: None,
            _call: call,
        }
    }

    /// The root parameter writer of a client call. `first_was_empty` says the invocation
    /// message carried no bytes (a function without parameters): a 1.x server then reads on
    /// until the stream is closed, so it must be.
    pub(crate) fn client_root(
        nats: Arc<async_nats::Client>,
        handshake: Arc<Handshake>,
        pending: Bytes,
        first_was_empty: bool,
        timeout: Duration,
        flow: Option<(Arc<Flow>, Arc<CallRoutes>)>,
    ) -> Self {
        let (flow, call) = flow.unzip();
        let must_close = first_was_empty || !pending.is_empty();
        Self {
            nats,
            target: Target::Waiting {
                handshake,
                rx: None,
                sleep: None,
            },
            path: Vec::new(),
            pending,
            must_close,
            root_results: false,
            wrote: false,
            indexed: AtomicBool::new(false),
            closed: false,
            timeout,
            flow,
            flow_sleep: None,
            _call: call,
        }
    }

    /// Waits until the peer's credit leaves room (at once when it grants none). A peer that
    /// grants nothing for a whole timeout fails the write instead of stalling it for ever.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let Some(flow) = &self.flow else {
            return Poll::Ready(Ok(()));
        };
        if flow.poll_room(cx).is_ready() {
            self.flow_sleep = None;
            return Poll::Ready(Ok(()));
        }
        let timeout = self.timeout;
        let sleep = self
            .flow_sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Err(TransportError::TimedOut {
            what: "the peer to read what was sent (flow-control credit)",
            timeout,
        }
        .into_io()))
    }

    fn subject_for(&self, server_rx: &str) -> Subject {
        let path: Vec<Option<usize>> = self.path.iter().copied().map(Some).collect();
        Subject::from(subjects::indexed(&subjects::params(server_rx), &path))
    }

    /// Resolves the subject, waiting for the handshake if needed.
    fn poll_target(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<Subject>> {
        loop {
            match &mut self.target {
                Target::Ready(s) => return Poll::Ready(Ok(s.clone())),
                Target::Failed(err) => return Poll::Ready(Err(err.clone().into_io())),
                Target::Waiting {
                    handshake,
                    rx,
                    sleep,
                } => {
                    let outcome = match rx {
                        Some(rx) => match Pin::new(rx).poll(cx) {
                            Poll::Ready(Ok(res)) => res,
                            Poll::Ready(Err(_)) => Err(TransportError::Disconnected(
                                "call was torn down before the handshake".into(),
                            )),
                            Poll::Pending => {
                                let timeout = self.timeout;
                                let sleep = sleep
                                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                                ready!(sleep.as_mut().poll(cx));
                                Err(TransportError::TimedOut {
                                    what: "the server to accept the call",
                                    timeout,
                                })
                            }
                        },
                        None => match handshake.wait() {
                            Ok(res) => res,
                            Err(new_rx) => {
                                *rx = Some(new_rx);
                                continue;
                            }
                        },
                    };
                    self.target = match outcome {
                        Ok(server_rx) => Target::Ready(self.subject_for(&server_rx)),
                        Err(err) => Target::Failed(err),
                    };
                }
            }
        }
    }

    /// Publishes one message of at most max-payload bytes from `buf`; returns how many bytes
    /// were taken.
    fn poll_publish(
        &mut self,
        cx: &mut Context<'_>,
        subject: Subject,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        ready!(self.poll_room(cx))?;
        if let Some(call) = &self._call {
            // Credit for what we send now must find the call.
            call.route_credit();
        }
        let nats = Arc::make_mut(&mut self.nats);
        ready!(nats.poll_ready_unpin(cx))
            .map_err(|err| TransportError::Disconnected(err.to_string()).into_io())?;
        let mut max = nats.max_payload().max(1);
        if let Some(flow) = &self.flow {
            // A message never overruns the window: the receiver may hold only that much.
            max = max.min(flow.room());
        }
        let n = buf.len().min(max);
        trace!(subject = subject.as_str(), n, "publishing chunk");
        nats.start_send_unpin(OutboundMessage {
            subject,
            reply: None,
            payload: Bytes::copy_from_slice(&buf[..n]),
            headers: None,
        })
        .map_err(|err| TransportError::Disconnected(err.to_string()).into_io())?;
        self.wrote = true;
        if let Some(flow) = &self.flow {
            flow.sent(n);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>, subject: &Subject) -> Poll<std::io::Result<()>> {
        while !self.pending.is_empty() {
            let pending = self.pending.clone();
            let n = ready!(self.poll_publish(cx, subject.clone(), &pending))?;
            self.pending.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl wrpc_transport::Index<Self> for Outgoing {
    fn index(&self, path: &[usize]) -> anyhow::Result<Self> {
        anyhow::ensure!(!path.is_empty(), "cannot index with an empty path");
        self.indexed.store(true, Ordering::Relaxed);
        let mut full = self.path.clone();
        full.extend_from_slice(path);
        let target = match &self.target {
            Target::Ready(s) => {
                let rel: Vec<Option<usize>> = path.iter().copied().map(Some).collect();
                Target::Ready(Subject::from(subjects::indexed(s.as_str(), &rel)))
            }
            Target::Waiting { handshake, .. } => Target::Waiting {
                handshake: Arc::clone(handshake),
                rx: None,
                sleep: None,
            },
            Target::Failed(err) => Target::Failed(err.clone()),
        };
        Ok(Self {
            nats: Arc::clone(&self.nats),
            target,
            path: full,
            pending: Bytes::new(),
            must_close: true,
            root_results: false,
            wrote: false,
            indexed: AtomicBool::new(false),
            closed: false,
            timeout: self.timeout,
            flow: self.flow.clone(),
            flow_sleep: None,
            _call: self._call.clone(),
        })
    }
}

impl AsyncWrite for Outgoing {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let subject = ready!(this.poll_target(cx))?;
        ready!(this.poll_drain(cx, &subject))?;
        // Client root: bytes beyond the first message need the close. Server root: a
        // non-empty result is self-delimiting and needs none.
        this.must_close = !this.root_results;
        this.poll_publish(cx, subject, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // `start_send` hands each message to the client's connection task at once, so only
        // a client of our own can have anything to flush; a shared one has none of ours.
        match Arc::get_mut(&mut self.nats) {
            Some(nats) => nats
                .poll_flush_unpin(cx)
                .map_err(|err| TransportError::Disconnected(err.to_string()).into_io()),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.closed {
            return Poll::Ready(Ok(()));
        }
        if !this.must_close {
            // Everything went out in the first message: nothing to close, no need to wait.
            this.closed = true;
            return Poll::Ready(Ok(()));
        }
        let subject = ready!(this.poll_target(cx))?;
        ready!(this.poll_drain(cx, &subject))?;
        let nats = Arc::make_mut(&mut this.nats);
        ready!(nats.poll_ready_unpin(cx))
            .map_err(|err| TransportError::Disconnected(err.to_string()).into_io())?;
        nats.start_send_unpin(OutboundMessage {
            subject,
            reply: None,
            payload: Bytes::new(),
            headers: None,
        })
        .map_err(|err| TransportError::Disconnected(err.to_string()).into_io())?;
        this.closed = true;
        nats.poll_flush_unpin(cx)
            .map_err(|err| TransportError::Disconnected(err.to_string()).into_io())
    }
}

impl Outgoing {
    /// Whether dropping this stream unclosed must close it.
    ///
    /// The encoders of `wrpc-transport` never shut nested streams down: they write a value
    /// and drop the writer, so this is the usual way a nested stream ends. A stream that was
    /// only a step towards nested ones (a record whose fields are async, say) carries nothing
    /// itself and nobody reads it, so it is not closed: that saves a message per level.
    fn needs_close(&self) -> bool {
        if self.closed || !self.must_close && !self.root_results {
            return false;
        }
        self.wrote
            || self.root_results
            || !self.pending.is_empty()
            || !self.indexed.load(Ordering::Relaxed)
    }

    /// Publishes the close right away when the subject is known and the NATS client has
    /// room: no task to spawn. `false` if it has to wait.
    fn close_now(&mut self) -> bool {
        let (Target::Ready(subject), true) = (&self.target, self.pending.is_empty()) else {
            return false;
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let nats = Arc::make_mut(&mut self.nats);
        if !matches!(nats.poll_ready_unpin(&mut cx), Poll::Ready(Ok(()))) {
            return false;
        }
        let headers = self.root_results.then(|| {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(super::REFUSAL_HEADER, ABANDONED);
            headers
        });
        let sent = nats.start_send_unpin(OutboundMessage {
            subject: subject.clone(),
            reply: None,
            payload: Bytes::new(),
            headers,
        });
        if let Err(err) = sent {
            debug!(%err, "failed to close a stream");
        }
        true
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        if !self.needs_close() {
            return;
        }
        // The stream ended without a shutdown: a nested value written in full, or a stream
        // abandoned (an error, a trap, a dropped future). Close it so the peer's reader ends
        // instead of waiting for its timeout. An abandoned result stream says so (Trellis
        // extension): a Trellis client fails the call with that reason instead of a decoding
        // error; to a 1.x client it is an ordinary close.
        if self.close_now() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let nats = Arc::clone(&self.nats);
        let path: Vec<Option<usize>> = self.path.iter().copied().map(Some).collect();
        let timeout = self.timeout;
        let pending = std::mem::take(&mut self.pending);
        let abandoned_results = self.root_results;
        let target = std::mem::replace(
            &mut self.target,
            Target::Failed(TransportError::NoReplySubject),
        );
        rt.spawn(async move {
            let subject = match target {
                Target::Ready(s) => s,
                Target::Failed(_) => return,
                Target::Waiting { handshake, .. } => {
                    let res = match handshake.wait() {
                        Ok(res) => res,
                        Err(rx) => match tokio::time::timeout(timeout, rx).await {
                            Ok(Ok(res)) => res,
                            _ => return,
                        },
                    };
                    let Ok(server_rx) = res else { return };
                    Subject::from(subjects::indexed(&subjects::params(&server_rx), &path))
                }
            };
            let max = nats.max_payload().max(1);
            let mut pending = pending;
            while !pending.is_empty() {
                let chunk = pending.split_to(pending.len().min(max));
                if nats.publish(subject.clone(), chunk).await.is_err() {
                    return;
                }
            }
            let res = if abandoned_results {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(super::REFUSAL_HEADER, ABANDONED);
                nats.publish_with_headers(subject, headers, Bytes::new())
                    .await
            } else {
                nats.publish(subject, Bytes::new()).await
            };
            if let Err(err) = res {
                debug!(%err, "failed to close an abandoned stream");
            }
        });
    }
}

/// What the caller of an abandoned call is told.
const ABANDONED: &str = "the server failed or cancelled the call before sending its results";
