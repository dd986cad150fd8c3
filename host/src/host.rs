//! The host: loads components, links their imports, serves their exports on the lattice.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use trellis_sdk::connect::{NatsAuth, TlsOptions};

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::info;
use trellis_sdk::store::LatticeStore;
use trellis_sdk::subjects::LatticeSubjects;
use trellis_wrpc_nats::{Connection, TransportOptions};

pub use crate::component::RunningComponent;
use crate::component::{self, ComponentError, Exports, Serving};
use crate::engine::{HostEngine, Limits};
use crate::link_secrets::{self, LinkSealer, StoreAccess};
use crate::links::LinkView;
use crate::local::LocalState;
use crate::router::LinkRouter;
use crate::secret_store::{SecretStore, SecretStoreError};
use crate::secrets::{SecretValue, Secrets};
use crate::supervisor::{
    ProviderSpec, ProviderState, ProviderStatus, SupervisedProvider, SupervisorEnv,
    SupervisorOptions, supervise,
};
use trellis_sdk::config::ProviderConfig;
use trellis_sdk::sealing::XKeyPair;
use trellis_sdk::source_proof::ProofSigner;

/// How a host runs.
#[derive(Clone, Debug)]
pub struct HostOptions {
    /// Lattice name.
    pub lattice: String,
    /// This host's id.
    pub host_id: String,
    /// The NATS URL handed to the providers this host starts.
    pub nats_url: String,
    /// The credentials handed to the providers this host starts (in their host data: JWT
    /// and seed as 1.x passes them, the rest as Trellis's extension). Usually the host's own.
    pub nats_auth: NatsAuth,
    /// The TLS settings handed to the providers this host starts.
    pub nats_tls: TlsOptions,
    /// Limits of every instance.
    pub limits: Limits,
    /// Where compiled components are cached (none: compile every time).
    pub cache_dir: Option<PathBuf>,
    /// Timeout of calls components make over the lattice.
    pub call_timeout: Duration,
    /// The key of the lattice's secret store (an xkey the operator holds): with it the host
    /// reads secrets for its components and seals link secrets for its providers. Without
    /// it, a component granted a secret or a link naming one is refused.
    pub secrets_key: Option<Arc<XKeyPair>>,
    /// The nkey seed of the host's NATS identity, when the lattice records it as the key
    /// that speaks for the host's components: their calls then carry a source proof.
    pub source_key: Option<trellis_sdk::secret::Secret>,
}

impl Default for HostOptions {
    fn default() -> Self {
        Self {
            lattice: "default".into(),
            host_id: format!("trellis-host-{}", std::process::id()),
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_auth: NatsAuth::None,
            nats_tls: TlsOptions::default(),
            limits: Limits::default(),
            cache_dir: None,
            call_timeout: Duration::from_secs(10),
            secrets_key: None,
            source_key: None,
        }
    }
}

/// Refuses a call into component `id` naming a source whose recorded keys its proof does
/// not verify with (see `trellis_sdk::source_proof`).
fn proven_sources(
    proofs: Arc<trellis_sdk::source_proof::ProofChecker>,
    lattice: &str,
    id: &str,
) -> trellis_wrpc_nats::Admission {
    let (lattice, id) = (lattice.to_string(), id.to_string());
    Arc::new(move |cx: &trellis_wrpc_nats::ServeContext| {
        let Some(source) = cx.header(trellis_sdk::subjects::SOURCE_ID_HEADER) else {
            return Ok(());
        };
        let proof = cx.header(trellis_sdk::subjects::SOURCE_PROOF_HEADER);
        proofs
            .check(&lattice, source, &id, proof)
            .map_err(|e| e.to_string())
    })
}

/// A provider's own NATS identity, as a lattice's authorization issued it.
#[derive(Clone, Debug)]
pub struct ProviderIdentity {
    /// Its credentials (a JWT and seed: 1.x providers join with them too).
    pub auth: NatsAuth,
    /// The inbox prefix it may subscribe to.
    pub inbox_prefix: String,
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
    /// The component could not be read or downloaded.
    #[error(transparent)]
    Fetch(#[from] crate::fetch::FetchError),
    /// The component could not be started (the reason is part of the message).
    #[error("component {id}: {error}")]
    Component {
        /// The component id.
        id: String,
        /// What is wrong.
        error: ComponentError,
    },
    /// A provider could not be started in the host's process.
    #[error("in-process provider {id}: {error:#}")]
    InProcess {
        /// The provider id.
        id: String,
        /// Why it did not start.
        error: anyhow::Error,
    },
    /// The host's wRPC connection or its inventory responder could not be set up.
    #[error("{what}: {error:#}")]
    Transport {
        /// What was being set up.
        what: &'static str,
        /// The transport's reason.
        error: anyhow::Error,
    },
    /// The host's source key is unusable.
    #[error(transparent)]
    SourceKey(#[from] trellis_sdk::source_proof::ProofError),
    /// The secret store refused (a component's grant, or the host's key).
    #[error(transparent)]
    Secrets(#[from] SecretStoreError),
    /// A component is granted secrets, but the host has no secret store key.
    #[error(
        "component {id} is granted secrets, but this host has no secret store key (--secrets-key)"
    )]
    NoSecretsKey {
        /// The component id.
        id: String,
    },
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
    sealer: Arc<LinkSealer>,
    signer: Option<Arc<ProofSigner>>,
    /// The targets each component may pick with `trellis:routing/target`.
    target_policy: std::sync::RwLock<HashMap<String, Arc<[String]>>>,
    /// The providers running in this process (`crate::in_process`).
    local: crate::in_process::LocalProviders,
    follower: JoinHandle<()>,
    responder: JoinHandle<()>,
    sealing: JoinHandle<()>,
}

impl Drop for HostInner {
    fn drop(&mut self) {
        self.follower.abort();
        self.responder.abort();
        self.sealing.abort();
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
        .map_err(|error| HostError::Transport {
            what: "cannot set up the wRPC connection",
            error,
        })?;
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
        .map_err(|error| HostError::Transport {
            what: "cannot answer host ping",
            error: error.into(),
        })?;
        let secrets = match &opts.secrets_key {
            Some(key) => {
                let store = SecretStore::open(&nats, &subjects).await?;
                store.init(key).await?;
                Some(StoreAccess {
                    store,
                    key: Arc::clone(key),
                })
            }
            None => None,
        };
        let sealer = Arc::new(LinkSealer::new(store.clone(), secrets));
        let signer = match &opts.source_key {
            Some(seed) => Some(Arc::new(ProofSigner::new(seed, &opts.lattice)?)),
            None => None,
        };
        let sealing =
            link_secrets::answer(nats.clone(), &subjects, &opts.host_id, Arc::clone(&sealer))
                .await
                .map_err(|error| HostError::Transport {
                    what: "cannot answer link secrets requests",
                    error: error.into(),
                })?;
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
                sealer,
                signer,
                target_policy: Default::default(),
                local: Default::default(),
                follower,
                responder,
                sealing,
            }),
        })
    }

    /// Starts provider `spec` as a child process with host data on stdin, and supervises it.
    pub fn start_provider(
        &self,
        spec: ProviderSpec,
        opts: SupervisorOptions,
    ) -> Result<SupervisedProvider, HostError> {
        self.start_provider_as(spec, opts, None)
    }

    /// What a provider started by this host joins the lattice with: the host's NATS
    /// credentials, or the identity of its own given.
    fn supervisor_env(&self, identity: Option<ProviderIdentity>) -> SupervisorEnv {
        let inner = &self.inner;
        let (nats_auth, inbox_prefix) = match identity {
            Some(id) => (id.auth, Some(id.inbox_prefix)),
            None => (inner.opts.nats_auth.clone(), None),
        };
        SupervisorEnv {
            inbox_prefix,
            nats: inner.nats.clone(),
            nats_url: inner.opts.nats_url.clone(),
            nats_auth,
            nats_tls: inner.opts.nats_tls.clone(),
            subjects: inner.subjects.clone(),
            store: inner.store.clone(),
            host_id: inner.opts.host_id.clone(),
            rpc_timeout: inner.opts.call_timeout,
            sealer: Arc::clone(&inner.sealer),
        }
    }

    /// Starts provider `kind` as `id` in this host's own process (see `crate::in_process`):
    /// given the host data a child process would get (its links, their sealed secrets, the
    /// host's NATS credentials or `identity`), it joins the lattice as that child would, and
    /// this host's components reach it over their links with no NATS round trip.
    pub async fn start_in_process(
        &self,
        id: &str,
        kind: crate::in_process::InProcessKind,
        config: HashMap<String, String>,
        identity: Option<ProviderIdentity>,
    ) -> Result<crate::in_process::InProcessProvider, HostError> {
        trellis_sdk::subjects::validate_token("provider id", id)?;
        let failed = |error: anyhow::Error| HostError::InProcess {
            id: id.to_string(),
            error,
        };
        let env = self.supervisor_env(identity);
        let spec = ProviderSpec {
            id: id.to_string(),
            path: std::path::PathBuf::from(kind.name()),
            config,
        };
        let data = crate::supervisor::host_data(&env, &spec)
            .await
            .map_err(|e| failed(e.into()))?;
        let config = ProviderConfig::from_host_data(data).map_err(|e| failed(e.into()))?;
        let status = Arc::new(std::sync::Mutex::new(ProviderStatus {
            state: ProviderState::Starting,
            restarts: 0,
            health: None,
        }));
        let inner = &self.inner;
        inner
            .registry
            .provider(id, &format!("in-process: {}", kind.name()), &status);
        crate::in_process::start(kind, config, &inner.local, status)
            .await
            .map_err(failed)
    }

    /// [`Host::start_provider`] with a NATS identity of the provider's own (credentials and
    /// inbox prefix) instead of the host's.
    pub fn start_provider_as(
        &self,
        spec: ProviderSpec,
        opts: SupervisorOptions,
        identity: Option<ProviderIdentity>,
    ) -> Result<SupervisedProvider, HostError> {
        trellis_sdk::subjects::validate_token("provider id", &spec.id)?;
        let inner = &self.inner;
        let env = self.supervisor_env(identity);
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

    /// The secrets of `grants` (the name the component asks for → the secret's name in the
    /// store), read for component `id` under the store's policy.
    pub async fn component_secrets(
        &self,
        id: &str,
        grants: &std::collections::BTreeMap<String, String>,
    ) -> Result<Secrets, HostError> {
        let mut secrets = Secrets::new();
        if grants.is_empty() {
            return Ok(secrets);
        }
        let access = self
            .inner
            .sealer
            .store_access()
            .ok_or_else(|| HostError::NoSecretsKey { id: id.to_string() })?;
        for (asked_as, name) in grants {
            let value = access.store.read(&access.key, name, id).await?;
            let value = match value {
                trellis_sdk::host_data::SecretValue::String(s) => {
                    SecretValue::String(s.expose().to_string())
                }
                trellis_sdk::host_data::SecretValue::Bytes(b) => SecretValue::Bytes(b),
            };
            secrets.insert(asked_as.clone(), value);
        }
        Ok(secrets)
    }

    /// Lets component `id` pick any of `targets` with `trellis:routing/target` (from its next
    /// start on; none: it may pick none).
    pub fn allow_targets(&self, id: &str, targets: Vec<String>) {
        self.inner
            .target_policy
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), Arc::from(targets));
    }

    /// The public key its components' calls prove their source with, if it signs them.
    pub fn source_public_key(&self) -> Option<String> {
        self.inner.signer.as_ref().map(|s| s.public_key())
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
        self.start_component_granted(id, reference, config_names, Secrets::new())
            .await
    }

    /// [`Host::start_component_from`], granting the component `secrets`
    /// (`wasmcloud:secrets`).
    pub async fn start_component_granted(
        &self,
        id: &str,
        reference: &str,
        config_names: &[String],
        secrets: Secrets,
    ) -> Result<RunningComponent, HostError> {
        let wasm = crate::fetch::load_component(reference).await?;
        self.start_component_loaded(id, wasm, reference, config_names, secrets)
            .await
    }

    /// [`Host::start_component_granted`] with `wasm` loaded from `reference` already (by a
    /// caller that inspected it first).
    pub async fn start_component_loaded(
        &self,
        id: &str,
        wasm: Vec<u8>,
        reference: &str,
        config_names: &[String],
        secrets: Secrets,
    ) -> Result<RunningComponent, HostError> {
        self.run_component(id, wasm, config_names, secrets, reference)
            .await
    }

    /// Compiles `wasm` (cached), links its imports and serves its exports as `id`, with the
    /// merged named config `config_names`.
    pub async fn start_component(
        &self,
        id: &str,
        wasm: Vec<u8>,
        config_names: &[String],
    ) -> Result<RunningComponent, HostError> {
        self.run_component(id, wasm, config_names, Secrets::new(), "")
            .await
    }

    /// Starts component `id`: the steps of [`crate::component`], in order.
    async fn run_component(
        &self,
        id: &str,
        wasm: Vec<u8>,
        config_names: &[String],
        secrets: Secrets,
        image_ref: &str,
    ) -> Result<RunningComponent, HostError> {
        trellis_sdk::subjects::validate_token("component id", id)?;
        let inner = &self.inner;
        let failed = |error| HostError::Component {
            id: id.to_string(),
            error,
        };
        let engine = inner.engine.engine();
        let parts = crate::imports::composition_parts(&wasm);
        let component = component::compile(engine, wasm).await.map_err(failed)?;
        let (pre, host_resources) = component::link(engine, id, &component).map_err(failed)?;
        let config = Arc::new(self.merged_config(id, config_names).await?);
        let exports = Exports::of(engine, &component);

        let component_id: Arc<str> = Arc::from(id);
        let router = LinkRouter::new(
            Arc::clone(&component_id),
            inner.links.clone(),
            inner.conn.clone(),
            inner.subjects.clone(),
            inner.opts.call_timeout,
            inner.signer.clone(),
            inner.local.clone(),
        );
        let limits = inner.engine.limits().clone();
        let serving = Serving {
            server: inner
                .conn
                .server(
                    inner.subjects.wrpc_prefix(id),
                    Some(inner.subjects.wrpc_queue_group(id).into()),
                )
                .with_admission(proven_sources(
                    Arc::clone(inner.links.proofs()),
                    inner.subjects.lattice(),
                    id,
                )),
            slots: Arc::new(Semaphore::new(limits.max_concurrent_instances)),
            served: Arc::new(AtomicU64::new(0)),
            id: Arc::clone(&component_id),
        };
        let targets = inner
            .target_policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()));
        let local = LocalState {
            component_id: Arc::clone(&component_id),
            config,
            secrets: Arc::new(secrets),
            targets,
        };
        let make_store =
            component::store_factory(engine, local, router, limits, inner.opts.call_timeout);
        let mut tasks = Vec::new();
        if exports.http {
            tasks.extend(serving.http(&pre, &make_store).await.map_err(failed)?);
        }
        if exports.watcher {
            tasks.extend(serving.watcher(&pre, &make_store).await.map_err(failed)?);
        }
        let functions = serving.functions(exports.functions, &pre, &host_resources, &make_store);
        tasks.extend(functions.await.map_err(failed)?);

        info!(component = id, "component started");
        inner
            .registry
            .component(id, image_ref, parts, &serving.served);
        Ok(RunningComponent {
            id: id.to_string(),
            tasks,
            served: serving.served,
        })
    }

    /// The named config `names`, merged in order; a missing name fails.
    async fn merged_config(
        &self,
        id: &str,
        names: &[String],
    ) -> Result<HashMap<String, String>, HostError> {
        let mut config = HashMap::new();
        for name in names {
            let values =
                self.inner
                    .store
                    .config(name)
                    .await?
                    .ok_or_else(|| HostError::MissingConfig {
                        id: id.to_string(),
                        name: name.clone(),
                    })?;
            config.extend(values);
        }
        Ok(config)
    }
}
