//! Serving exports with per-link context, and calling linked components.
//!
//! [`ProviderServer`] is a [`wrpc_transport::Serve`] whose context is a [`CallContext`]: before
//! a call is accepted, its `source-id` and `link-name` headers are matched against the link
//! table. A call over no link, a failed link or a purged link is refused during the handshake
//! with the reason, so the caller gets a clear error at once instead of a timeout.
//!
//! A call reaches its handler only once its synchronous parameters are all here (see
//! [`transport::Server`]), so a caller that stalls mid-call holds up no other call.
//!
//! [`ProviderHandle::serve`] drives the invocation streams that `wit-bindgen-wrpc` generates:
//! bounded concurrency (calls past the limit wait in NATS), a deadline per call, a span per
//! call carrying the caller's trace context, and draining on shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_nats::HeaderMap;
use async_nats::header::IntoHeaderName;
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt as _};
use tracing::{Instrument as _, debug, warn};

use super::{Inner, ProviderHandle, RuntimeError};
use crate::link::{LinkDefinition, LinkRefusal};
use crate::subjects::{
    LINK_NAME_HEADER, SOURCE_ID_HEADER, SOURCE_PROOF_HEADER, TARGET_ID_HEADER, TRACEPARENT_HEADER,
};
use trellis_wrpc_nats::{self as transport, Incoming, Outgoing, ServeContext, first_header};

/// What a served call knows about where it came from.
#[derive(Clone, Debug)]
pub struct CallContext {
    /// The caller (`source-id` header).
    pub source_id: String,
    /// The link name (`link-name` header, `default` if absent).
    pub link_name: String,
    /// The link the call came over.
    pub link: Arc<LinkDefinition>,
    /// All headers of the invocation.
    pub headers: Option<HeaderMap>,
    /// A span for the call, carrying the caller, the link and the caller's `traceparent`;
    /// instrument the handler's work with it to tie logs to the caller's trace.
    pub span: tracing::Span,
    /// Paces the call's streamed results to the caller's reading.
    pacer: transport::Pacer,
}

impl transport::CallPacer for CallContext {
    fn pacer(&self) -> &transport::Pacer {
        &self.pacer
    }
}

impl CallContext {
    /// The target-side config of the link the call came over.
    pub fn config(&self) -> &HashMap<String, String> {
        &self.link.target_config
    }

    /// The first value of header `name`. Pass a constant such as
    /// [`SOURCE_ID_HEADER`](crate::subjects::SOURCE_ID_HEADER) where you can: a `&str` name
    /// is parsed each time.
    pub fn header(&self, name: impl IntoHeaderName) -> Option<&str> {
        first_header(&self.headers, name)
    }

    /// The W3C `traceparent` of the caller, if it sent one.
    pub fn traceparent(&self) -> Option<&str> {
        self.header(TRACEPARENT_HEADER)
    }

    /// The trace-context headers (`traceparent`, `tracestate`) to pass on to calls made on
    /// behalf of this one.
    pub fn trace_headers(&self) -> HeaderMap {
        let mut out = HeaderMap::new();
        for name in ["traceparent", "tracestate"] {
            if let Some(v) = self.header(name) {
                out.insert(name, v);
            }
        }
        out
    }
}

/// Serves this provider's exports on the lattice, admitting calls by link. Implements
/// [`wrpc_transport::Serve`] with [`CallContext`] as context.
#[derive(Clone, Debug)]
pub struct ProviderServer {
    handle: ProviderHandle,
    server: transport::Server,
}

impl ProviderServer {
    pub(crate) fn new(handle: ProviderHandle) -> Self {
        let inner = &handle.inner;
        let id = &inner.config.provider_id;
        let server = inner
            .wrpc
            .server(
                inner.subjects.wrpc_prefix(id),
                Some(inner.subjects.wrpc_queue_group(id).into()),
            )
            .with_max_accepting(inner.config.max_concurrent_calls);
        Self { handle, server }
    }

    /// The same server checking the parameters of the functions in `checks` before their
    /// calls are decoded: see [`transport::Server::with_param_checks`].
    pub fn with_param_checks(mut self, checks: trellis_wrpc_nats::wire_shape::ParamChecks) -> Self {
        self.server = self.server.with_param_checks(checks);
        self
    }
}

impl wrpc_transport::Serve for ProviderServer {
    type Context = CallContext;
    type Outgoing = Outgoing;
    type Incoming = Incoming;

    async fn serve(
        &self,
        instance: &str,
        func: &str,
        paths: impl Into<Arc<[Box<[Option<usize>]>]>> + Send,
    ) -> anyhow::Result<
        impl Stream<Item = anyhow::Result<(Self::Context, Self::Outgoing, Self::Incoming)>>
        + Send
        + 'static,
    > {
        let inner = Arc::clone(&self.handle.inner);
        let instance_name = instance.to_string();
        self.server
            .serve_admitted(instance, func, paths, move |cx: ServeContext| {
                let id = &inner.config.provider_id;
                if !inner.accepting() {
                    return Err(format!("provider {id} is shutting down"));
                }
                let Some(source_id) = cx.header(SOURCE_ID_HEADER).map(str::to_string) else {
                    return Err(format!(
                        "call to provider {id} has no source-id header, so no link can be found"
                    ));
                };
                let proof = cx.header(SOURCE_PROOF_HEADER);
                if let Err(refused) =
                    inner
                        .proofs
                        .check(&inner.config.lattice, &source_id, id, proof)
                {
                    return Err(refused.to_string());
                }
                let link_name = cx
                    .header(LINK_NAME_HEADER)
                    .unwrap_or(crate::link::DEFAULT_LINK_NAME)
                    .to_string();
                admit(
                    &inner,
                    source_id,
                    link_name,
                    &instance_name,
                    cx.headers,
                    cx.pacer.clone(),
                )
            })
            .await
    }
}

/// Admits a call of `instance` from `source_id` over its link `link_name`: the context the
/// handler gets, or why the call is refused (no such link, a link that failed or was purged).
fn admit(
    inner: &Inner,
    source_id: String,
    link_name: String,
    instance: &str,
    headers: Option<HeaderMap>,
    pacer: transport::Pacer,
) -> Result<CallContext, String> {
    let id = &inner.config.provider_id;
    match inner.table().admit(&source_id, &link_name, instance) {
        Ok(link) => {
            let traceparent = first_header(&headers, TRACEPARENT_HEADER).unwrap_or_default();
            let span = tracing::debug_span!(
                "provider.call",
                instance = %instance,
                source_id = %source_id,
                link_name = %link_name,
                traceparent = %traceparent,
            );
            Ok(CallContext {
                pacer,
                source_id,
                link_name,
                link,
                headers,
                span,
            })
        }
        Err(refusal) => Err(match refusal {
            LinkRefusal::NoLink => format!(
                "no link named {link_name:?} from {source_id} to provider {id} covers {instance}"
            ),
            LinkRefusal::Failed(error) => format!(
                "link {link_name:?} from {source_id} to provider {id} failed to set up: {error}"
            ),
            LinkRefusal::Purged => format!(
                "link {link_name:?} from {source_id} to provider {id} was purged; put it again to use it"
            ),
        }),
    }
}

impl ProviderHandle {
    /// The context of a call of wire instance `instance` made in this process (a host running
    /// the provider in-process calls its handler directly, with no wRPC): admitted by link
    /// exactly as a call from the lattice is — refused when the provider is stopping, when
    /// `proof` does not prove the caller speaks for `source_id` (where the lattice records
    /// keys for it, see [`crate::source_proof`]), when `source_id` has no link named
    /// `link_name` covering `instance`, or that link failed or was purged.
    pub fn admit_local(
        &self,
        source_id: &str,
        link_name: &str,
        instance: &str,
        proof: Option<&str>,
    ) -> Result<CallContext, String> {
        let inner = &self.inner;
        let id = &inner.config.provider_id;
        if !inner.accepting() {
            return Err(format!("provider {id} is shutting down"));
        }
        inner
            .proofs
            .check(&inner.config.lattice, source_id, id, proof)
            .map_err(|refused| refused.to_string())?;
        admit(
            inner,
            source_id.to_string(),
            link_name.to_string(),
            instance,
            None,
            transport::Pacer::new(),
        )
    }
}

impl ProviderHandle {
    /// Drives the invocation streams of generated `serve` functions until shutdown: at most
    /// `max_concurrent_calls` at once, each cancelled after `call_deadline`.
    ///
    /// Calls of one function run concurrently inside that function's serving task (no task
    /// spawn per call, which costs more than a small call itself). Handlers must therefore not
    /// block the thread: use `tokio::task::spawn_blocking` for blocking or CPU-heavy work.
    /// On shutdown the task stops taking calls and finishes the ones in flight.
    ///
    /// ```ignore
    /// let invocations = bindings::serve(&handle.server(), MyHandler).await?;
    /// handle.serve(invocations)?;
    /// ```
    pub fn serve<S, F>(
        &self,
        invocations: impl IntoIterator<Item = (&'static str, &'static str, S)>,
    ) -> Result<(), RuntimeError>
    where
        S: Stream<Item = anyhow::Result<F>> + Send + Unpin + 'static,
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        for (instance, func, stream) in invocations {
            let inner = Arc::clone(&self.inner);
            self.inner
                .spawn(serve_function(inner, instance, func, stream));
        }
        Ok(())
    }
}

/// One function's serving loop.
async fn serve_function<S, F>(
    inner: Arc<super::Inner>,
    instance: &'static str,
    func: &'static str,
    mut stream: S,
) where
    S: Stream<Item = anyhow::Result<F>> + Send + Unpin + 'static,
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut stop = inner.shutdown.subscribe();
    // One future for the whole loop: a fresh one per turn would subscribe to the watch anew
    // for every call.
    let stopped = stop.wait_for(|s| *s);
    tokio::pin!(stopped);
    let mut calls = FuturesUnordered::new();
    // An accepted call waiting for a slot. Slots are shared by every function, so an idle
    // function must not hold one: take the call first, then wait for a slot while the calls
    // in flight keep running. Past the limit, further calls wait in NATS, not in memory.
    let mut waiting: Option<F> = None;
    loop {
        // Biased: stopping first, then finishing calls (which frees slots), then new calls.
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            Some(()) = calls.next(), if !calls.is_empty() => {}
            permit = Arc::clone(&inner.slots).acquire_owned(), if waiting.is_some() => {
                let (Ok(permit), Some(fut)) = (permit, waiting.take()) else { break };
                calls.push(run_call(&inner, instance, func, permit, fut));
            }
            next = stream.next(), if waiting.is_none() => match next {
                // A free slot, the usual case, is taken at once: no turn of the loop to wait.
                Some(Ok(fut)) => match Arc::clone(&inner.slots).try_acquire_owned() {
                    Ok(permit) => calls.push(run_call(&inner, instance, func, permit, fut)),
                    Err(tokio::sync::TryAcquireError::NoPermits) => waiting = Some(fut),
                    Err(tokio::sync::TryAcquireError::Closed) => break,
                },
                Some(Err(err)) => {
                    warn!(instance, func, error = %format!("{err:#}"), "failed to accept a call");
                }
                None => break,
            },
        }
    }
    // Stop taking calls, finish those in flight (the runtime's stop bounds how long).
    while calls.next().await.is_some() {}
    debug!(instance, func, "stopped serving");
}

/// Runs one call holding its slot: within the call deadline, in a span, counted in flight.
fn run_call<F>(
    inner: &Arc<super::Inner>,
    instance: &'static str,
    func: &'static str,
    permit: tokio::sync::OwnedSemaphorePermit,
    fut: F,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    inner.inflight.fetch_add(1, Ordering::AcqRel);
    let inner = Arc::clone(inner);
    let deadline = inner
        .config
        .call_deadline
        .unwrap_or(crate::provider::DEFAULT_CALL_DEADLINE);
    let span = tracing::debug_span!("wrpc.call", instance, func);
    async move {
        match tokio::time::timeout(deadline, fut).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => warn!(error = %format!("{err:#}"), "call failed"),
            Err(_) => warn!(?deadline, "call cancelled at its deadline"),
        }
        inner.inflight.fetch_sub(1, Ordering::AcqRel);
        drop(permit);
    }
    .instrument(span)
}

/// A client for calling one linked target, adding the 1.x headers to every call:
/// `source-id` and `link-name`, and `target-id` when made [`with_target`](Self::with_target).
/// Implements [`wrpc_transport::Invoke`] with `()` as context. Cheap to clone.
///
/// Every header is parsed and copied by each process a call passes through (NATS, the
/// callee), a few microseconds a call in all, so a client sends only those its callee reads.
#[derive(Clone, Debug)]
pub struct LinkedClient {
    client: transport::Client,
    /// Shared by clones: copying a header map is an allocation per header.
    headers: Arc<HeaderMap>,
    /// Signs a fresh source proof into each call (proofs expire; see
    /// [`crate::source_proof`]), with the callee's id.
    proof: Option<(Arc<crate::source_proof::ProofSigner>, Arc<str>)>,
}

impl LinkedClient {
    /// A client calling through `client` as `source_id` over link `link_name`: the headers a
    /// 1.x host sends for a component calling a provider (tests use it to act as one).
    pub fn new(client: transport::Client, source_id: &str, link_name: &str) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(SOURCE_ID_HEADER, source_id);
        headers.insert(LINK_NAME_HEADER, link_name);
        Self {
            client,
            headers: Arc::new(headers),
            proof: None,
        }
    }

    /// The same client proving, with `signer`'s key, that it speaks for its source when it
    /// calls `target`.
    pub fn with_proof(
        mut self,
        signer: Arc<crate::source_proof::ProofSigner>,
        target: &str,
    ) -> Self {
        self.proof = Some((signer, Arc::from(target)));
        self
    }

    /// The same client also naming its callee `target` (`target-id`), as a 1.x provider
    /// does calling a component.
    pub fn with_target(mut self, target: &str) -> Self {
        Arc::make_mut(&mut self.headers).insert(TARGET_ID_HEADER, target);
        self
    }

    /// The same client with another call timeout.
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.client = self.client.with_timeout(timeout);
        self
    }

    /// The same client sending `headers` too with every call (for instance the W3C trace
    /// context of the request being handled).
    pub fn with_headers<V: async_nats::header::IntoHeaderValue>(
        mut self,
        headers: impl IntoIterator<Item = (&'static str, V)>,
    ) -> Self {
        let map = Arc::make_mut(&mut self.headers);
        for (name, value) in headers {
            map.insert(name, value);
        }
        self
    }

    /// The same client passing on the trace context of `cx` (the call being served), so the
    /// component's work joins the caller's trace.
    pub fn with_trace(mut self, cx: &CallContext) -> Self {
        let map = Arc::make_mut(&mut self.headers);
        for (name, values) in cx.trace_headers().iter() {
            for v in values {
                map.insert(name.clone(), v.clone());
            }
        }
        self
    }
}

impl wrpc_transport::Invoke for LinkedClient {
    type Context = ();
    type Outgoing = Outgoing;
    type Incoming = Incoming;

    async fn invoke<P>(
        &self,
        _cx: (),
        instance: &str,
        func: &str,
        params: bytes::Bytes,
        paths: impl AsRef<[P]> + Send,
    ) -> anyhow::Result<(Self::Outgoing, Self::Incoming)>
    where
        P: AsRef<[Option<usize>]> + Send + Sync,
    {
        // The transport hands NATS an owned map.
        let mut headers = HeaderMap::clone(&self.headers);
        if let Some((signer, target)) = &self.proof {
            let source = headers
                .get(SOURCE_ID_HEADER)
                .map(|v| v.as_str().to_string())
                .unwrap_or_default();
            headers.insert(SOURCE_PROOF_HEADER, signer.proof(&source, target).as_str());
        }
        self.client
            .invoke(Some(headers), instance, func, params, paths)
            .await
    }
}
