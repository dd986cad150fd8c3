//! Starting one component, in named steps: [`compile`] it, [`link`] its imports (local
//! ones answered by the host, every other routed over the lattice), find its [`Exports`],
//! make a [`store_factory`] (one store per invocation, under the limits), and serve its
//! exports ([`Serving`]). `Host::run_component` runs them in that order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::{debug, warn};
use trellis_wrpc_nats::Server;
use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Component, InstancePre, Linker, ResourceType};
use wasmtime::{Engine, Store};
use wrpc_runtime_wasmtime::ServeExt as _;

use crate::engine::Limits;
use crate::http::{IncomingHandler, MakeStore};
use crate::local::LocalState;
use crate::router::LinkRouter;
use crate::state::HostState;

/// Why a component could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// The bytes are not a valid component (or do not compile).
    #[error("not a valid component: {0:#}")]
    Invalid(wasmtime::Error),
    /// The compilation task died.
    #[error("compilation task failed: {0}")]
    CompileTask(tokio::task::JoinError),
    /// It imports a WASI interface this host does not provide.
    #[error("imports {0}, which this host cannot provide yet")]
    Unsupported(String),
    /// The host's own interfaces could not be added to its linker.
    #[error("cannot link the host's interfaces: {0:#}")]
    HostInterfaces(wasmtime::Error),
    /// An import could not be routed over the lattice.
    #[error("cannot link import {import}: {error:#}")]
    Link {
        /// The import.
        import: String,
        /// Why.
        error: wasmtime::Error,
    },
    /// Its imports are linked but it cannot be pre-instantiated.
    #[error("cannot prepare instances: {0:#}")]
    Prepare(wasmtime::Error),
    /// An export could not be served.
    #[error("cannot serve {export}: {error:#}")]
    Serve {
        /// The export (`instance.function`, or its HTTP handler).
        export: String,
        /// Why.
        error: anyhow::Error,
    },
}

/// A component the host serves; dropping it (or [`RunningComponent::stop`]) stops serving.
pub struct RunningComponent {
    pub(crate) id: String,
    pub(crate) tasks: Vec<JoinHandle<()>>,
    pub(crate) served: Arc<AtomicU64>,
}

impl RunningComponent {
    /// The component id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Invocations this host has accepted for the component.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Stops serving the component's exports.
    pub fn stop(self) {}
}

impl std::fmt::Debug for RunningComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningComponent")
            .field("id", &self.id)
            .field("served", &self.served())
            .finish()
    }
}

impl Drop for RunningComponent {
    fn drop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

/// Resource types the routed imports share (none are host-defined).
pub(crate) type HostResources =
    Arc<HashMap<Box<str>, HashMap<Box<str>, (ResourceType, ResourceType)>>>;

/// Compiles `wasm` off the async threads (wasmtime caches the result on disk).
pub(crate) async fn compile(engine: &Engine, wasm: Vec<u8>) -> Result<Component, ComponentError> {
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || Component::new(&engine, wasm))
        .await
        .map_err(ComponentError::CompileTask)?
        .map_err(ComponentError::Invalid)
}

/// Links `component`'s imports: WASI, config, logging, keyvalue, blobstore and HTTP types by
/// the host; every non-WASI import over wRPC to the target its link names.
pub(crate) fn link(
    engine: &Engine,
    id: &str,
    component: &Component,
) -> Result<(InstancePre<HostState>, HostResources), ComponentError> {
    let mut linker: Linker<HostState> = Linker::new(engine);
    add_host_interfaces(&mut linker).map_err(ComponentError::HostInterfaces)?;
    let host_resources = HostResources::default();
    for (name, item) in component.component_type().imports(engine) {
        if crate::imports::linked_by_host(name) {
            continue;
        }
        if crate::imports::served_by(name) == crate::imports::ServedBy::Nothing {
            return Err(ComponentError::Unsupported(name.to_string()));
        }
        debug!(
            component = id,
            import = name,
            "routing import over the lattice"
        );
        wrpc_runtime_wasmtime::link_item(
            engine,
            &mut linker.root(),
            Arc::<[ResourceType]>::from([]),
            Arc::clone(&host_resources),
            item,
            "",
            name,
        )
        .map_err(|error| ComponentError::Link {
            import: name.to_string(),
            error,
        })?;
    }
    let pre = linker
        .instantiate_pre(component)
        .map_err(ComponentError::Prepare)?;
    Ok((pre, host_resources))
}

/// The interfaces the host answers itself.
fn add_host_interfaces(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    crate::local::add_to_linker(linker, |s: &mut HostState| &mut s.local)?;
    crate::keyvalue::add_to_linker(linker)?;
    crate::blobstore::add_to_linker(linker)?;
    crate::bus::add_to_linker(linker)?;
    crate::secrets::add_to_linker(linker)?;
    crate::target::add_to_linker(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
}

/// What a component exports: functions served as themselves, and whether it has an HTTP
/// handler (served as the wire's incoming handler).
pub(crate) struct Exports {
    /// (instance, function, type); the instance is empty for a root function.
    pub(crate) functions: Vec<(String, String, ComponentFunc)>,
    /// It exports `wasi:http/incoming-handler`.
    pub(crate) http: bool,
    /// It exports `wasi:keyvalue/watcher` (served as the wire's watcher).
    pub(crate) watcher: bool,
}

impl Exports {
    pub(crate) fn of(engine: &Engine, component: &Component) -> Self {
        let mut functions = Vec::new();
        let mut http = false;
        let mut watcher = false;
        for (export, item) in component.component_type().exports(engine) {
            if export.starts_with(crate::http::INCOMING_HANDLER) {
                http = true;
                continue;
            }
            if export == crate::watcher::EXPORT {
                watcher = true;
                continue;
            }
            match item {
                ComponentItem::ComponentFunc(f) => {
                    functions.push((String::new(), export.to_string(), f))
                }
                ComponentItem::ComponentInstance(instance) => {
                    for (name, item) in instance.exports(engine) {
                        if let ComponentItem::ComponentFunc(f) = item {
                            functions.push((export.to_string(), name.to_string(), f));
                        }
                    }
                }
                _ => {}
            }
        }
        Self {
            functions,
            http,
            watcher,
        }
    }
}

/// A fresh store per invocation: the component's id, config and secrets, its link router
/// (each invocation starting on the default link names), the memory limit, the epoch
/// deadline.
pub(crate) fn store_factory(
    engine: &Engine,
    local: LocalState,
    router: LinkRouter,
    limits: Limits,
    call_timeout: Duration,
) -> MakeStore {
    let engine = engine.clone();
    Arc::new(move || {
        let state = HostState::new(
            local.clone(),
            router.for_invocation(),
            limits.max_memory_bytes,
            call_timeout,
        );
        let mut store = Store::new(&engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(limits.deadline_ticks());
        store.epoch_deadline_trap();
        store
    })
}

/// Serving one component's exports: the calls it takes share `slots` (its instance limit)
/// and count into `served`.
pub(crate) struct Serving {
    pub(crate) id: Arc<str>,
    pub(crate) server: Server,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) served: Arc<AtomicU64>,
}

impl Serving {
    /// Serves the component's HTTP handler as `wrpc:http/incoming-handler@0.1.0`.
    pub(crate) async fn http(
        &self,
        pre: &InstancePre<HostState>,
        make_store: &MakeStore,
    ) -> Result<Vec<JoinHandle<()>>, ComponentError> {
        let serve_err = |error: anyhow::Error| ComponentError::Serve {
            export: "its HTTP handler".into(),
            error,
        };
        let proxy = wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre.clone())
            .map_err(|e| serve_err(e.into()))?;
        let handler = IncomingHandler {
            component_id: Arc::clone(&self.id),
            pre: proxy,
            make_store: Arc::clone(make_store),
        };
        let server = self
            .server
            .clone()
            .with_param_checks(trellis_interfaces::http::server::param_checks());
        let invocations = trellis_interfaces::http::server::serve(&server, handler)
            .await
            .map_err(|e| serve_err(e.error))?;
        Ok(invocations
            .into_iter()
            .map(|(instance, func, calls)| {
                let what = format!("{} {instance}.{func} (wasi:http)", self.id);
                self.spawn(what, calls.map(|r| r.map(|fut| ((), fut))))
            })
            .collect())
    }

    /// Serves the component's keyvalue watcher as `wrpc:keyvalue/watcher@0.2.0-draft`.
    pub(crate) async fn watcher(
        &self,
        pre: &InstancePre<HostState>,
        make_store: &MakeStore,
    ) -> Result<Vec<JoinHandle<()>>, ComponentError> {
        let serve_err = |error: anyhow::Error| ComponentError::Serve {
            export: crate::watcher::EXPORT.into(),
            error,
        };
        let watcher = crate::watcher::ComponentWatcher::new(
            Arc::clone(&self.id),
            pre,
            Arc::clone(make_store),
        )
        .map_err(|e| serve_err(e.into()))?;
        let invocations = trellis_interfaces::keyvalue::serve_watcher(&self.server, watcher)
            .await
            .map_err(|e| serve_err(e.error))?;
        Ok(invocations
            .into_iter()
            .map(|(instance, func, calls)| {
                let what = format!("{} {instance}.{func}", self.id);
                self.spawn(what, calls.map(|r| r.map(|fut| ((), fut))))
            })
            .collect())
    }

    /// Serves every exported function, its parameters checked before the runtime's reader
    /// sees them.
    pub(crate) async fn functions(
        &self,
        functions: Vec<(String, String, ComponentFunc)>,
        pre: &InstancePre<HostState>,
        host_resources: &HostResources,
        make_store: &MakeStore,
    ) -> Result<Vec<JoinHandle<()>>, ComponentError> {
        let checks = crate::shapes::param_checks(
            functions
                .iter()
                .map(|(instance, func, ty)| (instance.as_str(), func.as_str(), ty)),
        );
        let server = self.server.clone().with_param_checks(checks);
        let mut tasks = Vec::with_capacity(functions.len());
        for (instance, func, ty) in functions {
            let make_store = {
                let make_store = Arc::clone(make_store);
                move || make_store()
            };
            let invocations = server
                .serve_function(
                    make_store,
                    pre.clone(),
                    Arc::clone(host_resources),
                    ty,
                    &instance,
                    &func,
                )
                .await
                .map_err(|error| ComponentError::Serve {
                    export: format!("{instance}.{func}"),
                    error,
                })?;
            tasks.push(self.spawn(format!("{} {instance}.{func}", self.id), invocations));
        }
        Ok(tasks)
    }

    fn spawn<S, C, F>(&self, what: String, invocations: S) -> JoinHandle<()>
    where
        S: futures::Stream<Item = anyhow::Result<(C, F)>> + Send + 'static,
        C: Send + 'static,
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        tokio::spawn(serve_loop(
            what,
            Box::pin(invocations),
            Arc::clone(&self.slots),
            Arc::clone(&self.served),
        ))
    }
}

/// Drives one export function's invocations: at most `slots` instances at once per
/// component, each call's failure logged with its cause.
async fn serve_loop<S, C, F>(
    what: String,
    mut invocations: S,
    slots: Arc<Semaphore>,
    served: Arc<AtomicU64>,
) where
    S: futures::Stream<Item = anyhow::Result<(C, F)>> + Unpin,
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut calls = FuturesUnordered::new();
    let mut waiting = None;
    loop {
        tokio::select! {
            next = invocations.next(), if waiting.is_none() => match next {
                Some(Ok((_cx, fut))) => {
                    served.fetch_add(1, Ordering::Relaxed);
                    waiting = Some(fut);
                }
                Some(Err(err)) => warn!(export = what, error = %format!("{err:#}"), "failed to accept a call"),
                None => break,
            },
            permit = Arc::clone(&slots).acquire_owned(), if waiting.is_some() => {
                let (Ok(permit), Some(fut)) = (permit, waiting.take()) else { break };
                let what = what.clone();
                calls.push(async move {
                    if let Err(err) = fut.await {
                        warn!(export = what, error = %format!("{err:#}"), "call failed");
                    }
                    drop(permit);
                });
            }
            Some(()) = calls.next(), if !calls.is_empty() => {}
        }
    }
    while calls.next().await.is_some() {}
}
