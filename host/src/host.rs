//! The host: loads components, links their imports, serves their exports on the lattice.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use trellis_sdk::store::LatticeStore;
use trellis_sdk::subjects::LatticeSubjects;
use trellis_wrpc_nats::{Connection, TransportOptions};
use wasmtime::Store;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, InstancePre, Linker};
use wrpc_runtime_wasmtime::ServeExt as _;

use crate::engine::{HostEngine, Limits};
use crate::links::LinkView;
use crate::router::LinkRouter;
use crate::state::HostState;
use crate::supervisor::{
    ProviderSpec, SupervisedProvider, SupervisorEnv, SupervisorOptions, supervise,
};

/// How a host runs.
#[derive(Clone, Debug)]
pub struct HostOptions {
    /// Lattice name.
    pub lattice: String,
    /// This host's id.
    pub host_id: String,
    /// The NATS URL handed to the providers this host starts.
    pub nats_url: String,
    /// Limits of every instance.
    pub limits: Limits,
    /// Where compiled components are cached (none: compile every time).
    pub cache_dir: Option<PathBuf>,
    /// Timeout of calls components make over the lattice.
    pub call_timeout: Duration,
}

impl Default for HostOptions {
    fn default() -> Self {
        Self {
            lattice: "default".into(),
            host_id: format!("trellis-host-{}", std::process::id()),
            nats_url: "nats://127.0.0.1:4222".into(),
            limits: Limits::default(),
            cache_dir: None,
            call_timeout: Duration::from_secs(10),
        }
    }
}

/// Why the host could not do something.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A name is not a valid subject token.
    #[error(transparent)]
    InvalidName(#[from] trellis_sdk::error::InvalidName),
    /// The engine could not be built.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    /// The lattice store is unusable.
    #[error(transparent)]
    Store(#[from] trellis_sdk::store::StoreError),
    /// The component could not be read.
    #[error("cannot read component {source_ref}: {message}")]
    Read {
        /// Where it was read from.
        source_ref: String,
        /// What failed.
        message: String,
    },
    /// The component is not valid, or imports something the host cannot provide.
    #[error("component {id}: {message}")]
    Component {
        /// The component id.
        id: String,
        /// What is wrong.
        message: String,
    },
    /// The wRPC transport failed.
    #[error("wRPC transport: {0}")]
    Transport(String),
    /// Named config the component asks for does not exist.
    #[error("component {id} names config {name:?}, which does not exist")]
    MissingConfig {
        /// The component id.
        id: String,
        /// The missing name.
        name: String,
    },
}

struct HostInner {
    nats: async_nats::Client,
    engine: HostEngine,
    opts: HostOptions,
    subjects: LatticeSubjects,
    conn: Connection,
    links: LinkView,
    store: LatticeStore,
    registry: Arc<crate::inventory::Registry>,
    follower: JoinHandle<()>,
    responder: JoinHandle<()>,
}

impl Drop for HostInner {
    fn drop(&mut self) {
        self.follower.abort();
        self.responder.abort();
    }
}

/// A running host. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("opts", &self.inner.opts)
            .finish()
    }
}

/// A component the host serves; dropping it (or [`RunningComponent::stop`]) stops serving.
pub struct RunningComponent {
    id: String,
    tasks: Vec<JoinHandle<()>>,
    served: Arc<AtomicU64>,
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

/// Imports the host answers itself; every other import is routed over the lattice.
const LOCAL_PACKAGES: &[&str] = &[
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:io/",
    "wasi:random/",
    "wasi:filesystem/",
    "wasi:sockets/",
    "wasi:config/",
    "wasi:logging/",
    "wasi:keyvalue/",
    "wasi:blobstore/",
    "wasi:http/",
];

impl Host {
    /// Starts a host on `nats`: builds the engine and follows the lattice's links.
    pub async fn new(nats: async_nats::Client, opts: HostOptions) -> Result<Self, HostError> {
        let subjects = LatticeSubjects::new(&opts.lattice)?;
        let engine = HostEngine::new(opts.limits.clone(), opts.cache_dir.clone())?;
        let conn = Connection::new(
            nats.clone(),
            TransportOptions {
                timeout: opts.call_timeout,
                ..TransportOptions::default()
            },
        )
        .await
        .map_err(|e| HostError::Transport(format!("{e:#}")))?;
        trellis_sdk::subjects::validate_token("host id", &opts.host_id)?;
        let store = LatticeStore::open(&nats, &subjects).await?;
        let links = LinkView::default();
        links.reload(&store).await?;
        let follower = tokio::spawn(links.clone().follow(store.clone()));
        let registry = Arc::new(crate::inventory::Registry::default());
        let responder = crate::inventory::answer(
            nats.clone(),
            subjects.clone(),
            opts.host_id.clone(),
            Arc::clone(&registry),
        )
        .await
        .map_err(|e| HostError::Transport(format!("cannot answer host ping: {e}")))?;
        Ok(Self {
            inner: Arc::new(HostInner {
                nats,
                engine,
                opts,
                subjects,
                conn,
                links,
                store,
                registry,
                follower,
                responder,
            }),
        })
    }

    /// Starts provider `spec` as a child process with host data on stdin, and supervises it.
    pub fn start_provider(
        &self,
        spec: ProviderSpec,
        opts: SupervisorOptions,
    ) -> Result<SupervisedProvider, HostError> {
        trellis_sdk::subjects::validate_token("provider id", &spec.id)?;
        let inner = &self.inner;
        let env = SupervisorEnv {
            nats: inner.nats.clone(),
            nats_url: inner.opts.nats_url.clone(),
            subjects: inner.subjects.clone(),
            store: inner.store.clone(),
            host_id: inner.opts.host_id.clone(),
            rpc_timeout: inner.opts.call_timeout,
        };
        let image_ref = spec.path.display().to_string();
        let provider = supervise(env, spec, opts);
        inner
            .registry
            .provider(provider.id(), &image_ref, provider.status_handle());
        Ok(provider)
    }

    /// Validated link and config changes in this host's lattice.
    pub fn admin(&self) -> crate::lattice::LatticeAdmin {
        crate::lattice::LatticeAdmin::new(
            self.inner.store.clone(),
            self.inner.nats.clone(),
            self.inner.subjects.clone(),
            self.inner.opts.host_id.clone(),
        )
    }

    /// The lattice store this host reads links and config from.
    pub fn store(&self) -> &LatticeStore {
        &self.inner.store
    }

    /// Loads the component at `reference` (a path or a `file://`, `http://` or `https://`
    /// URL; see [`crate::load_component`]) and starts it as [`Host::start_component`] does,
    /// remembering where it came from for the inventory.
    pub async fn start_component_from(
        &self,
        id: &str,
        reference: &str,
        config_names: &[String],
    ) -> Result<RunningComponent, HostError> {
        let wasm = crate::fetch::load_component(reference).await?;
        self.run_component(id, wasm, config_names, reference).await
    }

    /// Compiles `wasm` (cached), links its imports and serves its exports as `id`, with the
    /// merged named config `config_names`.
    pub async fn start_component(
        &self,
        id: &str,
        wasm: Vec<u8>,
        config_names: &[String],
    ) -> Result<RunningComponent, HostError> {
        self.run_component(id, wasm, config_names, "").await
    }

    async fn run_component(
        &self,
        id: &str,
        wasm: Vec<u8>,
        config_names: &[String],
        image_ref: &str,
    ) -> Result<RunningComponent, HostError> {
        trellis_sdk::subjects::validate_token("component id", id)?;
        let inner = &self.inner;
        let component_err = |message: String| HostError::Component {
            id: id.to_string(),
            message,
        };
        let engine = inner.engine.engine().clone();
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, wasm))
            .await
            .map_err(|e| component_err(format!("compilation task failed: {e}")))?
            .map_err(|e| component_err(format!("not a valid component: {e:#}")))?;
        let engine = inner.engine.engine();

        let mut linker: Linker<HostState> = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| component_err(format!("{e:#}")))?;
        crate::local::add_to_linker(&mut linker, |s: &mut HostState| &mut s.local)
            .map_err(|e| component_err(format!("{e:#}")))?;
        crate::keyvalue::add_to_linker(&mut linker).map_err(|e| component_err(format!("{e:#}")))?;
        crate::blobstore::add_to_linker(&mut linker)
            .map_err(|e| component_err(format!("{e:#}")))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| component_err(format!("{e:#}")))?;
        let ty = component.component_type();
        let host_resources: Arc<HashMap<Box<str>, HashMap<Box<str>, _>>> = Arc::default();
        for (name, item) in ty.imports(engine) {
            if LOCAL_PACKAGES.iter().any(|p| name.starts_with(p)) {
                continue;
            }
            if name.starts_with("wasi:") {
                return Err(component_err(format!(
                    "imports {name}, which this host cannot provide yet"
                )));
            }
            debug!(
                component = id,
                import = name,
                "routing import over the lattice"
            );
            wrpc_runtime_wasmtime::link_item(
                engine,
                &mut linker.root(),
                Arc::<[wasmtime::component::ResourceType]>::from([]),
                Arc::clone(&host_resources),
                item,
                "",
                name,
            )
            .map_err(|e| component_err(format!("cannot link import {name}: {e:#}")))?;
        }
        let pre: InstancePre<HostState> = linker
            .instantiate_pre(&component)
            .map_err(|e| component_err(format!("{e:#}")))?;

        let mut config = HashMap::new();
        for name in config_names {
            let values =
                inner
                    .store
                    .config(name)
                    .await?
                    .ok_or_else(|| HostError::MissingConfig {
                        id: id.to_string(),
                        name: name.clone(),
                    })?;
            config.extend(values);
        }
        let config = Arc::new(config);

        let prefix = inner.subjects.wrpc_prefix(id);
        let server = inner
            .conn
            .server(prefix, Some(inner.subjects.wrpc_queue_group(id).into()));
        let limits = inner.engine.limits().clone();
        let slots = Arc::new(Semaphore::new(limits.max_concurrent_instances));
        let component_id: Arc<str> = Arc::from(id);
        let mut tasks = Vec::new();
        let served = Arc::new(AtomicU64::new(0));

        let mut functions = Vec::new();
        let mut serves_http = false;
        for (export, item) in ty.exports(engine) {
            if export.starts_with(crate::http::INCOMING_HANDLER) {
                serves_http = true;
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
        let make_store: crate::http::MakeStore = {
            let engine = engine.clone();
            let component_id = Arc::clone(&component_id);
            let config = Arc::clone(&config);
            let router = LinkRouter::new(
                Arc::clone(&component_id),
                inner.links.clone(),
                inner.conn.clone(),
                inner.subjects.clone(),
                inner.opts.call_timeout,
            );
            let limits = limits.clone();
            let call_timeout = inner.opts.call_timeout;
            Arc::new(move || {
                let state = HostState::new(
                    Arc::clone(&component_id),
                    Arc::clone(&config),
                    router.clone(),
                    limits.max_memory_bytes,
                    call_timeout,
                );
                let mut store = Store::new(&engine, state);
                store.limiter(|s| &mut s.limits);
                store.set_epoch_deadline(limits.deadline_ticks());
                store.epoch_deadline_trap();
                store
            })
        };
        if serves_http {
            let proxy = wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre.clone())
                .map_err(|e| component_err(format!("cannot serve its HTTP handler: {e:#}")))?;
            let handler = crate::http::IncomingHandler {
                component_id: Arc::clone(&component_id),
                pre: proxy,
                make_store: Arc::clone(&make_store),
            };
            for (instance_name, func_name, invocations) in
                trellis_interfaces::http::server::serve(&server, handler)
                    .await
                    .map_err(|e| component_err(format!("cannot serve its HTTP handler: {e:#}")))?
            {
                let what = format!("{id} {instance_name}.{func_name} (wasi:http)");
                let invocations = invocations.map(|r| r.map(|fut| ((), fut)));
                tasks.push(tokio::spawn(serve_loop(
                    what,
                    Box::pin(invocations),
                    Arc::clone(&slots),
                    Arc::clone(&served),
                )));
            }
        }
        // Every export's parameters are checked before the runtime's reader sees them.
        let checks = crate::shapes::param_checks(
            functions
                .iter()
                .map(|(instance, func, ty)| (instance.as_str(), func.as_str(), ty)),
        );
        let server = server.with_param_checks(checks);
        for (instance_name, func_name, func_ty) in functions {
            let make_store = {
                let make_store = Arc::clone(&make_store);
                move || make_store()
            };
            let invocations = server
                .serve_function(
                    make_store,
                    pre.clone(),
                    Arc::clone(&host_resources),
                    func_ty,
                    &instance_name,
                    &func_name,
                )
                .await
                .map_err(|e| {
                    component_err(format!("cannot serve {instance_name}.{func_name}: {e:#}"))
                })?;
            let slots = Arc::clone(&slots);
            let what = format!("{id} {instance_name}.{func_name}");
            tasks.push(tokio::spawn(serve_loop(
                what,
                Box::pin(invocations),
                slots,
                Arc::clone(&served),
            )));
        }
        info!(component = id, "component started");
        inner.registry.component(id, image_ref, &served);
        Ok(RunningComponent {
            id: id.to_string(),
            tasks,
            served,
        })
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
