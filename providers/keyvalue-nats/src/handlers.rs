//! `keyvalue::Handler` on JetStream KV: each call resolves its link's bucket
//! (`self.bucket(&cx, &name).await?`, opening it once; the interface's error when the link
//! does not map it), runs under the link's timeout, and maps failures to the interface's
//! errors.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use trellis_sdk::connect::{NatsAuth, NatsOptions};
use trellis_sdk::link::{LinkDefinition, LinkStates};
use trellis_sdk::provider::{HealthStatus, LinkConfig, Provider};
use trellis_sdk::runtime::CallContext;

use crate::backend::{Backend, Bucket};
use trellis_interfaces::keyvalue::{self, Error, Items, KeyPage};

use crate::settings::{LinkSettings, WatchSettings};
use crate::watch::{self, Watching};

/// Batch operations run this many backend requests at once.
const BATCH_CONCURRENCY: usize = 32;

struct LinkState {
    settings: LinkSettings,
    /// `None`: the lattice's own NATS.
    backend: Option<Arc<Backend>>,
}

/// The provider: per-link state, each watching link's watch, shared connections.
#[derive(Clone, Default)]
pub struct NatsKv {
    links: LinkStates<LinkState>,
    watches: LinkStates<Watching>,
    pool: Arc<Mutex<HashMap<String, Arc<Backend>>>>,
    lattice: Arc<OnceLock<async_nats::Client>>,
}

/// What identifies a shared connection (kept in memory only: it holds credentials).
fn pool_key(opts: &NatsOptions, domain: Option<&str>) -> String {
    let auth = match &opts.auth {
        NatsAuth::None => String::new(),
        NatsAuth::UserPassword { user, password } => format!("u:{user}:{}", password.expose()),
        NatsAuth::Token(t) => format!("t:{}", t.expose()),
        NatsAuth::NkeySeed(s) => format!("n:{}", s.expose()),
        NatsAuth::Jwt { jwt, seed } => format!("j:{}:{}", jwt.expose(), seed.expose()),
        NatsAuth::CredsFile(p) => format!("c:{}", p.display()),
    };
    format!(
        "{}|{auth}|{}|{}",
        opts.url,
        domain.unwrap_or(""),
        opts.tls
            .ca_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    )
}

impl NatsKv {
    /// The shared connection to the server `settings` names (`None`: the lattice's own).
    async fn server_backend(
        &self,
        settings: &LinkSettings,
    ) -> anyhow::Result<Option<Arc<Backend>>> {
        let Some(opts) = &settings.server else {
            return Ok(None);
        };
        let key = pool_key(opts, settings.js_domain.as_deref());
        let existing = self
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        if let Some(b) = existing {
            return Ok(Some(b));
        }
        let client = opts.connect().await?;
        let backend = Arc::new(Backend::new(client, settings.js_domain.as_deref()));
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Arc::clone(&backend));
        Ok(Some(backend))
    }

    /// The lattice's own connection, used by links that name no server.
    pub fn set_lattice_nats(&self, client: async_nats::Client) {
        let _ = self.lattice.set(client);
    }

    fn lattice_backend(&self, domain: Option<&str>) -> Result<Arc<Backend>, Error> {
        let client = self
            .lattice
            .get()
            .ok_or_else(|| Error::Other("the provider is still starting".into()))?;
        let key = format!("lattice|{}", domain.unwrap_or(""));
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        Ok(Arc::clone(pool.entry(key).or_insert_with(|| {
            Arc::new(Backend::new(client.clone(), domain))
        })))
    }

    /// The caller's bucket `name`, opened, with the deadline of the call: answers
    /// `no-such-store` when the link does not map `name`.
    async fn bucket(&self, cx: &CallContext, name: &str) -> Result<CallBucket, Error> {
        let link = self
            .links
            .get(&cx.link)
            .ok_or_else(|| Error::Other("this link has no keyvalue configuration (yet)".into()))?;
        let kv_bucket = link.settings.resolve(name).ok_or(Error::NoSuchStore)?;
        let backend = match &link.backend {
            Some(b) => Arc::clone(b),
            None => self.lattice_backend(link.settings.js_domain.as_deref())?,
        };
        // One deadline for opening the bucket and the operation, as the link's timeout says.
        let timeout = link.settings.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let open = backend.bucket(&kv_bucket, link.settings.auto_create);
        let kv = tokio::time::timeout_at(deadline, open)
            .await
            .unwrap_or_else(|_| Err(timed_out(timeout)))?;
        Ok(CallBucket {
            kv,
            deadline,
            timeout,
            page: link.settings.page,
        })
    }
}

/// A call's bucket: the opened JetStream bucket and what is left of the call's time.
struct CallBucket {
    kv: Arc<Bucket>,
    deadline: tokio::time::Instant,
    timeout: Duration,
    page: usize,
}

impl CallBucket {
    /// Runs `op` until the call's deadline.
    async fn run<T>(&self, op: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        tokio::time::timeout_at(self.deadline, op)
            .await
            .unwrap_or_else(|_| Err(timed_out(self.timeout)))
    }

    /// Runs `op` for every item, `BATCH_CONCURRENCY` at a time, answering in the items' order.
    async fn each<I, T, F, Fut>(&self, items: Vec<I>, op: F) -> Result<Vec<T>, Error>
    where
        F: Fn(Arc<Bucket>, I) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let ops = futures::stream::iter(items).map(|item| op(Arc::clone(&self.kv), item));
        self.run(ops.buffered(BATCH_CONCURRENCY).try_collect())
            .await
    }

    /// Runs `op` for every item, `BATCH_CONCURRENCY` at a time, in whatever order they
    /// finish (one slow item does not hold the others' places); the first failure fails all.
    async fn each_unordered<I, F, Fut>(&self, items: Vec<I>, op: F) -> Result<(), Error>
    where
        F: Fn(Arc<Bucket>, I) -> Fut,
        Fut: Future<Output = Result<(), Error>>,
    {
        let ops = futures::stream::iter(items).map(|item| op(Arc::clone(&self.kv), item));
        let all = ops
            .buffer_unordered(BATCH_CONCURRENCY)
            .try_collect::<Vec<()>>();
        self.run(all).await.map(|_| ())
    }
}

fn timed_out(timeout: Duration) -> Error {
    Error::Other(format!("NATS did not answer within {timeout:?}"))
}

impl Provider for NatsKv {
    async fn receive_link_config_as_target(&self, link: LinkConfig<'_>) -> anyhow::Result<()> {
        let settings = LinkSettings::parse(link.config)?;
        let backend = self.server_backend(&settings).await?;
        self.links
            .insert(link.link, LinkState { settings, backend });
        Ok(())
    }

    /// A link from this provider to a component's watcher (`watch` in its config).
    async fn receive_link_config_as_source(&self, link: LinkConfig<'_>) -> anyhow::Result<()> {
        let settings = WatchSettings::parse(link.config)?;
        // A changed link: the old watch stops before the new one starts.
        self.watches.remove(link.link);
        let backend = match self.server_backend(&settings.server).await? {
            Some(b) => b,
            None => {
                self.set_lattice_nats(link.handle.nats().clone());
                self.lattice_backend(settings.server.js_domain.as_deref())?
            }
        };
        let bucket = backend
            .bucket(&settings.kv_bucket, settings.server.auto_create)
            .await
            .map_err(|e| anyhow::anyhow!("watch bucket {:?}: {e}", settings.kv_bucket))?;
        let watching = watch::start(
            settings,
            bucket,
            link.linked_client(),
            link.delivery_stats(),
        )
        .await?;
        self.watches.insert(link.link, watching);
        Ok(())
    }

    async fn delete_link_as_source(&self, link: &LinkDefinition) -> anyhow::Result<()> {
        self.watches.remove(link);
        Ok(())
    }

    async fn shutdown(&self) -> anyhow::Result<()> {
        self.watches.clear();
        Ok(())
    }

    /// Healthy when every link naming its own NATS server is connected to it; otherwise
    /// unhealthy, naming each link whose server is not. (A link on the lattice's own NATS
    /// shares the connection this answer travels on.)
    async fn health(&self) -> anyhow::Result<HealthStatus> {
        // The URL is not named: it may carry credentials.
        let checks = self.links.all().into_iter().map(|(key, link)| {
            let up = link.backend.as_ref().is_none_or(|b| b.connected());
            (
                key,
                up.then_some(())
                    .ok_or_else(|| "its NATS server is not connected".to_string()),
            )
        });
        Ok(HealthStatus::of_links(checks))
    }

    async fn delete_link_as_target(&self, link: &LinkDefinition) -> anyhow::Result<()> {
        self.links.remove(link);
        Ok(())
    }
}

impl keyvalue::Handler<CallContext> for NatsKv {
    async fn get(
        &self,
        cx: CallContext,
        bucket: String,
        key: String,
    ) -> Result<Option<Bytes>, Error> {
        let b = self.bucket(&cx, &bucket).await?;
        b.run(b.kv.get(&key)).await
    }

    async fn set(
        &self,
        cx: CallContext,
        bucket: String,
        key: String,
        value: Bytes,
    ) -> Result<(), Error> {
        let b = self.bucket(&cx, &bucket).await?;
        b.run(b.kv.set(&key, &value)).await
    }

    async fn delete(&self, cx: CallContext, bucket: String, key: String) -> Result<(), Error> {
        let b = self.bucket(&cx, &bucket).await?;
        b.run(b.kv.delete(&key)).await
    }

    async fn exists(&self, cx: CallContext, bucket: String, key: String) -> Result<bool, Error> {
        let b = self.bucket(&cx, &bucket).await?;
        b.run(b.kv.exists(&key)).await
    }

    async fn list_keys(
        &self,
        cx: CallContext,
        bucket: String,
        cursor: Option<u64>,
    ) -> Result<KeyPage, Error> {
        let b = self.bucket(&cx, &bucket).await?;
        let (keys, cursor) = b.run(b.kv.list(cursor, b.page)).await?;
        Ok(KeyPage { keys, cursor })
    }

    async fn increment(
        &self,
        cx: CallContext,
        bucket: String,
        key: String,
        delta: u64,
    ) -> Result<u64, Error> {
        let b = self.bucket(&cx, &bucket).await?;
        b.run(b.kv.increment(&key, delta)).await
    }

    async fn get_many(
        &self,
        cx: CallContext,
        bucket: String,
        keys: Vec<String>,
    ) -> Result<Items, Error> {
        let b = self.bucket(&cx, &bucket).await?;
        b.each(keys, |kv, k| async move {
            Ok(kv.get(&k).await?.map(|v| (k, v)))
        })
        .await
    }

    async fn set_many(
        &self,
        cx: CallContext,
        bucket: String,
        items: Vec<(String, Bytes)>,
    ) -> Result<(), Error> {
        let b = self.bucket(&cx, &bucket).await?;
        b.each_unordered(items, |kv, (k, v)| async move { kv.set(&k, &v).await })
            .await
    }

    async fn delete_many(
        &self,
        cx: CallContext,
        bucket: String,
        keys: Vec<String>,
    ) -> Result<(), Error> {
        let b = self.bucket(&cx, &bucket).await?;
        b.each_unordered(keys, |kv, k| async move { kv.delete(&k).await })
            .await
    }
}
