//! `keyvalue::Handler` on Redis: each call resolves its link's bucket to a connection and a
//! key prefix (`self.bucket(&cx, &name)?`, which answers the interface's error when the link
//! does not map it), runs one command (or one pipeline) under the link's timeout, and maps
//! Redis errors to the interface's error variants.

use std::collections::HashMap;

use std::time::Duration;

use bytes::Bytes;
use redis::aio::ConnectionManager;
use trellis_sdk::link::{LinkDefinition, LinkStates};
use trellis_sdk::provider::{HealthStatus, LinkConfig, Provider};
use trellis_sdk::runtime::CallContext;

use trellis_interfaces::keyvalue::{self, Error, Items, KeyPage};

use crate::backend::Pool;
use crate::settings::{LinkSettings, WatchSettings};
use crate::watch::{self, Watching};

/// One link: its settings and the connections of the databases its buckets use.
struct LinkState {
    settings: LinkSettings,
    conns: HashMap<i64, ConnectionManager>,
}

/// The provider: per-link state, each watching link's subscription, and the shared pool.
#[derive(Clone, Default)]
pub struct RedisKv {
    links: LinkStates<LinkState>,
    watches: LinkStates<Watching>,
    pool: Pool,
}

/// A resolved bucket.
struct Bucket {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    page: usize,
}

impl Bucket {
    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Runs `cmd` under the link's timeout.
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Error> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, cmd.query_async(&mut conn)).await {
            Ok(result) => result.map_err(map_error),
            Err(_) => Err(Error::Other(format!(
                "Redis did not answer within {:?}",
                self.timeout
            ))),
        }
    }
}

fn map_error(e: redis::RedisError) -> Error {
    use redis::ErrorKind;
    let detail = e
        .detail()
        .map(str::to_string)
        .unwrap_or_else(|| e.to_string());
    match e.kind() {
        ErrorKind::AuthenticationFailed => Error::AccessDenied,
        _ if e.code() == Some("NOPERM")
            || e.code() == Some("NOAUTH")
            || e.code() == Some("WRONGPASS") =>
        {
            Error::AccessDenied
        }
        _ if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout() =>
        {
            Error::Other(format!("Redis unavailable: {detail}"))
        }
        _ => Error::Other(format!("Redis: {detail}")),
    }
}

impl RedisKv {
    fn bucket(&self, cx: &CallContext, name: &str) -> Result<Bucket, Error> {
        let link = self.links.get(&cx.link).ok_or_else(|| {
            Error::Other("this link has no Redis configuration (yet)".to_string())
        })?;
        let target = link.settings.resolve(name).ok_or(Error::NoSuchStore)?;
        let conn = match link.conns.get(&target.db) {
            Some(c) => c.clone(),
            None => self
                .pool
                .get(&link.settings, target.db)
                .map_err(|e| Error::Other(e.to_string()))?,
        };
        Ok(Bucket {
            conn,
            prefix: target.prefix,
            timeout: link.settings.timeout,
            page: link.settings.page,
        })
    }
}

impl Provider for RedisKv {
    async fn receive_link_config_as_target(&self, link: LinkConfig<'_>) -> anyhow::Result<()> {
        let settings = LinkSettings::parse(link.config)?;
        let mut conns = HashMap::new();
        let mut dbs: Vec<i64> = settings.buckets.values().map(|t| t.db).collect();
        if settings.auto_create {
            dbs.push(settings.url_db);
        }
        for db in dbs {
            if let std::collections::hash_map::Entry::Vacant(slot) = conns.entry(db) {
                slot.insert(self.pool.get(&settings, db)?);
            }
        }
        self.links.insert(link.link, LinkState { settings, conns });
        Ok(())
    }

    async fn delete_link_as_target(&self, link: &LinkDefinition) -> anyhow::Result<()> {
        self.links.remove(link);
        Ok(())
    }

    /// A link from this provider to a component's watcher (`watch` in its config).
    async fn receive_link_config_as_source(&self, link: LinkConfig<'_>) -> anyhow::Result<()> {
        let settings = WatchSettings::parse(link.config)?;
        // A changed link: the old subscription stops before the new one starts.
        self.watches.remove(link.link);
        let watching = watch::start(
            settings,
            &self.pool,
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

    /// Healthy when every link's Redis answers `PING` within a second (or its timeout, if
    /// shorter); otherwise unhealthy, naming each link whose Redis does not and why.
    async fn health(&self) -> anyhow::Result<HealthStatus> {
        let checks = self.links.all().into_iter().map(|(key, link)| async move {
            let limit = link.settings.timeout.min(Duration::from_secs(1));
            for conn in link.conns.values() {
                let mut conn = conn.clone();
                let cmd = redis::cmd("PING");
                let ping = cmd.query_async::<String>(&mut conn);
                match tokio::time::timeout(limit, ping).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return (key, Err(map_error(e).to_string())),
                    Err(_) => {
                        return (
                            key,
                            Err(format!("Redis did not answer PING within {limit:?}")),
                        );
                    }
                }
            }
            (key, Ok(()))
        });
        Ok(HealthStatus::of_links(
            futures::future::join_all(checks).await,
        ))
    }
}

/// Escapes glob characters so a prefix matches only itself in `SCAN … MATCH`.
pub(crate) fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 2);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl keyvalue::Handler<CallContext> for RedisKv {
    async fn get(
        &self,
        cx: CallContext,
        bucket: String,
        key: String,
    ) -> Result<Option<Bytes>, Error> {
        let b = self.bucket(&cx, &bucket)?;
        let value: Option<Vec<u8>> = b.run(redis::cmd("GET").arg(b.key(&key))).await?;
        Ok(value.map(Bytes::from))
    }

    async fn set(
        &self,
        cx: CallContext,
        bucket: String,
        key: String,
        value: Bytes,
    ) -> Result<(), Error> {
        let b = self.bucket(&cx, &bucket)?;
        b.run(redis::cmd("SET").arg(b.key(&key)).arg(value.as_ref()))
            .await
    }

    async fn delete(&self, cx: CallContext, bucket: String, key: String) -> Result<(), Error> {
        let b = self.bucket(&cx, &bucket)?;
        b.run::<i64>(redis::cmd("DEL").arg(b.key(&key)))
            .await
            .map(|_| ())
    }

    async fn exists(&self, cx: CallContext, bucket: String, key: String) -> Result<bool, Error> {
        let b = self.bucket(&cx, &bucket)?;
        b.run::<i64>(redis::cmd("EXISTS").arg(b.key(&key)))
            .await
            .map(|n| n > 0)
    }

    async fn list_keys(
        &self,
        cx: CallContext,
        bucket: String,
        cursor: Option<u64>,
    ) -> Result<KeyPage, Error> {
        let b = self.bucket(&cx, &bucket)?;
        // SCAN's own cursor: every key present for the whole listing is returned; Redis may
        // return a key twice while its table is resized, so each page is de-duplicated.
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor.unwrap_or(0));
        if !b.prefix.is_empty() {
            cmd.arg("MATCH").arg(format!("{}*", glob_escape(&b.prefix)));
        }
        cmd.arg("COUNT").arg(b.page);
        let (next, keys): (u64, Vec<Vec<u8>>) = b.run(&cmd).await?;
        let mut seen = std::collections::HashSet::new();
        let keys = keys
            .into_iter()
            .filter_map(|k| {
                let k = k.strip_prefix(b.prefix.as_bytes())?.to_vec();
                String::from_utf8(k).ok()
            })
            .filter(|k| seen.insert(k.clone()))
            .collect();
        Ok(KeyPage {
            keys,
            cursor: (next != 0).then_some(next),
        })
    }

    async fn increment(
        &self,
        cx: CallContext,
        bucket: String,
        key: String,
        delta: u64,
    ) -> Result<u64, Error> {
        let b = self.bucket(&cx, &bucket)?;
        let Ok(delta) = i64::try_from(delta) else {
            return Err(Error::Other(format!(
                "increment {delta} is larger than Redis allows"
            )));
        };
        let n: i64 = b
            .run(redis::cmd("INCRBY").arg(b.key(&key)).arg(delta))
            .await?;
        u64::try_from(n).map_err(|_| Error::Other(format!("the value is negative ({n})")))
    }

    async fn get_many(
        &self,
        cx: CallContext,
        bucket: String,
        keys: Vec<String>,
    ) -> Result<Items, Error> {
        let b = self.bucket(&cx, &bucket)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for k in &keys {
            cmd.arg(b.key(k));
        }
        let values: Vec<Option<Vec<u8>>> = b.run(&cmd).await?;
        Ok(keys
            .into_iter()
            .zip(values)
            .map(|(k, v)| v.map(|v| (k, Bytes::from(v))))
            .collect())
    }

    async fn set_many(
        &self,
        cx: CallContext,
        bucket: String,
        key_values: Vec<(String, Bytes)>,
    ) -> Result<(), Error> {
        let b = self.bucket(&cx, &bucket)?;
        if key_values.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("MSET");
        for (k, v) in &key_values {
            cmd.arg(b.key(k)).arg(v.as_ref());
        }
        b.run(&cmd).await
    }

    async fn delete_many(
        &self,
        cx: CallContext,
        bucket: String,
        keys: Vec<String>,
    ) -> Result<(), Error> {
        let b = self.bucket(&cx, &bucket)?;
        if keys.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("DEL");
        for k in &keys {
            cmd.arg(b.key(k));
        }
        b.run::<i64>(&cmd).await.map(|_| ())
    }
}
