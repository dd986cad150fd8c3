//! Redis connections shared by links: one reconnecting, multiplexed connection per (server,
//! credentials, CA, database), created lazily so a link can be put before Redis is up;
//! `rediss://` goes over TLS (rustls), trusting the system's roots or the link's CA file.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::IntoConnectionInfo as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::settings::LinkSettings;

/// Why a connection could not be set up (the URL is never part of the message: it may hold
/// a password).
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The URL does not parse.
    #[error("invalid Redis URL: {0}")]
    BadUrl(String),
    /// The CA file cannot be read.
    #[error("cannot read tls_ca_file {path}: {reason}")]
    BadCa {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// (url, password, CA file, database): what one shared connection serves.
type PoolKey = (String, String, String, i64);

/// A client of `settings`' server and database `db` (for connections of their own, such as
/// a subscription's).
pub fn client(settings: &LinkSettings, db: i64) -> Result<redis::Client, PoolError> {
    let bad = |e: redis::RedisError| PoolError::BadUrl(format!("{:?}", e.kind()));
    let info = settings.url.expose().into_connection_info().map_err(bad)?;
    let mut redis = info.redis_settings().clone().set_db(db);
    if let Some(password) = &settings.password {
        redis = redis.set_password(password.expose());
    }
    let info = info.set_redis_settings(redis);
    match &settings.tls_ca_file {
        None => redis::Client::open(info).map_err(bad),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| PoolError::BadCa {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            redis::Client::build_with_tls(info, certs).map_err(bad)
        }
    }
}

/// Connections by (url, password, db); entries live as long as the provider.
#[derive(Clone, Default)]
pub struct Pool {
    conns: Arc<Mutex<HashMap<PoolKey, ConnectionManager>>>,
}

impl Pool {
    /// The connection for `settings` and database `db`, shared with every link that uses
    /// the same server and credentials.
    pub fn get(&self, settings: &LinkSettings, db: i64) -> Result<ConnectionManager, PoolError> {
        let password = settings
            .password
            .as_ref()
            .map(|p| p.expose().to_string())
            .unwrap_or_default();
        let ca = settings
            .tls_ca_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let key = (settings.url.expose().to_string(), password, ca, db);
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(conn) = conns.get(&key) {
            return Ok(conn.clone());
        }
        let client = client(settings, db)?;
        // Reconnect quickly (the backend must be usable within moments of coming back).
        // Every request is bounded by the link's timeout where it is made (`Bucket::run`),
        // reconnect waits included; a response timeout here would only arm a second timer
        // per request (a timed-out response does not make the manager reconnect anyway).
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(None)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_number_of_retries(3);
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| PoolError::BadUrl(format!("{:?}", e.kind())))?;
        conns.insert(key, conn.clone());
        Ok(conn)
    }
}
