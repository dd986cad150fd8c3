//! The wire interfaces on JetStream KV: each call resolves its link's bucket (opening it
//! once), runs under the link's timeout, and maps failures to the interface's errors.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use trellis_sdk::connect::{NatsAuth, NatsOptions};
use trellis_sdk::link::{LinkDefinition, LinkStates};
use trellis_sdk::provider::{LinkConfig, Provider};
use trellis_sdk::runtime::CallContext;

use crate::backend::{Backend, Bucket};
use crate::bindings::exports::wrpc::keyvalue::{atomics, batch, store};
use crate::settings::LinkSettings;

use store::Error;

/// Batch operations run this many backend requests at once.
const BATCH_CONCURRENCY: usize = 32;

struct LinkState {
    settings: LinkSettings,
    /// `None`: the lattice's own NATS.
    backend: Option<Arc<Backend>>,
}

/// The provider: per-link state, shared connections.
#[derive(Clone, Default)]
pub struct NatsKv {
    links: LinkStates<LinkState>,
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

    /// Runs `op` on bucket `name` of the caller's link, under the link's timeout.
    async fn with_bucket<T, F, Fut>(
        &self,
        cx: &CallContext,
        name: &str,
        op: F,
    ) -> anyhow::Result<Result<T, Error>>
    where
        F: FnOnce(Arc<Bucket>) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let link = self.links.get(&cx.link);
        let Some(link) = link else {
            return Ok(Err(Error::Other(
                "this link has no keyvalue configuration (yet)".into(),
            )));
        };
        let Some(kv_bucket) = link.settings.resolve(name) else {
            return Ok(Err(Error::NoSuchStore));
        };
        let backend = match &link.backend {
            Some(b) => Arc::clone(b),
            None => match self.lattice_backend(link.settings.js_domain.as_deref()) {
                Ok(b) => b,
                Err(e) => return Ok(Err(e)),
            },
        };
        let timeout = link.settings.timeout;
        let work = async move {
            let bucket = backend
                .bucket(&kv_bucket, link.settings.auto_create)
                .await?;
            op(bucket).await
        };
        Ok(tokio::time::timeout(timeout, work)
            .await
            .unwrap_or_else(|_| Err(timed_out(timeout))))
    }
}

fn timed_out(timeout: Duration) -> Error {
    Error::Other(format!("NATS did not answer within {timeout:?}"))
}

impl Provider for NatsKv {
    async fn receive_link_config_as_target(&self, link: LinkConfig<'_>) -> anyhow::Result<()> {
        let settings = LinkSettings::parse(link.config)?;
        let backend = match &settings.server {
            None => None,
            Some(opts) => {
                let key = pool_key(opts, settings.js_domain.as_deref());
                let existing = self
                    .pool
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&key)
                    .cloned();
                match existing {
                    Some(b) => Some(b),
                    None => {
                        let client = opts.connect().await?;
                        let backend = Arc::new(Backend::new(client, settings.js_domain.as_deref()));
                        self.pool
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(key, Arc::clone(&backend));
                        Some(backend)
                    }
                }
            }
        };
        self.links
            .insert(link.link, LinkState { settings, backend });
        Ok(())
    }

    async fn delete_link_as_target(&self, link: &LinkDefinition) -> anyhow::Result<()> {
        self.links.remove(link);
        Ok(())
    }
}

impl store::Handler<CallContext> for NatsKv {
    async fn get(
        &self,
        cx: CallContext,
        bucket: String,
        key: String,
    ) -> anyhow::Result<Result<Option<Bytes>, Error>> {
        self.with_bucket(&cx, &bucket, |b| async move { b.get(&key).await })
            .await
    }

    async fn set(
        &self,
        cx: CallContext,
        bucket: String,
        key: String,
        value: Bytes,
    ) -> anyhow::Result<Result<(), Error>> {
        self.with_bucket(&cx, &bucket, |b| async move { b.set(&key, &value).await })
            .await
    }

    async fn delete(
        &self,
        cx: CallContext,
        bucket: String,
        key: String,
    ) -> anyhow::Result<Result<(), Error>> {
        self.with_bucket(&cx, &bucket, |b| async move { b.delete(&key).await })
            .await
    }

    async fn exists(
        &self,
        cx: CallContext,
        bucket: String,
        key: String,
    ) -> anyhow::Result<Result<bool, Error>> {
        self.with_bucket(&cx, &bucket, |b| async move { b.exists(&key).await })
            .await
    }

    async fn list_keys(
        &self,
        cx: CallContext,
        bucket: String,
        cursor: Option<u64>,
    ) -> anyhow::Result<Result<store::KeyResponse, Error>> {
        let page = self
            .links
            .get(&cx.link)
            .map_or(crate::settings::DEFAULT_PAGE, |l| l.settings.page);
        self.with_bucket(&cx, &bucket, |b| async move {
            let (keys, cursor) = b.list(cursor, page).await?;
            Ok(store::KeyResponse { keys, cursor })
        })
        .await
    }
}

impl atomics::Handler<CallContext> for NatsKv {
    async fn increment(
        &self,
        cx: CallContext,
        bucket: String,
        key: String,
        delta: u64,
    ) -> anyhow::Result<Result<u64, Error>> {
        self.with_bucket(
            &cx,
            &bucket,
            |b| async move { b.increment(&key, delta).await },
        )
        .await
    }
}

impl batch::Handler<CallContext> for NatsKv {
    async fn get_many(
        &self,
        cx: CallContext,
        bucket: String,
        keys: Vec<String>,
    ) -> anyhow::Result<Result<Vec<Option<(String, Bytes)>>, Error>> {
        self.with_bucket(&cx, &bucket, |b| async move {
            futures::stream::iter(keys)
                .map(|k| {
                    let b = Arc::clone(&b);
                    async move { Ok(b.get(&k).await?.map(|v| (k, v))) }
                })
                .buffered(BATCH_CONCURRENCY)
                .try_collect()
                .await
        })
        .await
    }

    async fn set_many(
        &self,
        cx: CallContext,
        bucket: String,
        key_values: Vec<(String, Bytes)>,
    ) -> anyhow::Result<Result<(), Error>> {
        self.with_bucket(&cx, &bucket, |b| async move {
            futures::stream::iter(key_values)
                .map(|(k, v)| {
                    let b = Arc::clone(&b);
                    async move { b.set(&k, &v).await }
                })
                .buffer_unordered(BATCH_CONCURRENCY)
                .try_collect::<Vec<()>>()
                .await
                .map(|_| ())
        })
        .await
    }

    async fn delete_many(
        &self,
        cx: CallContext,
        bucket: String,
        keys: Vec<String>,
    ) -> anyhow::Result<Result<(), Error>> {
        self.with_bucket(&cx, &bucket, |b| async move {
            futures::stream::iter(keys)
                .map(|k| {
                    let b = Arc::clone(&b);
                    async move { b.delete(&k).await }
                })
                .buffer_unordered(BATCH_CONCURRENCY)
                .try_collect::<Vec<()>>()
                .await
                .map(|_| ())
        })
        .await
    }
}
