//! Joining a lattice's NATS: URL, credentials, TLS and reconnect policy.
//!
//! All the ways a provider can authenticate (none, user/password, token, nkey seed, JWT with
//! its seed as a 1.x host hands them over, a `.creds` file) end up in one
//! [`async_nats::ConnectOptions`]. Credentials are [`Secret`]s: the `Debug` of these types
//! never shows them, and connection errors name the URL, never the credentials.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::secret::Secret;

/// How to authenticate to NATS.
#[derive(Clone, Debug, Default)]
pub enum NatsAuth {
    /// No credentials.
    #[default]
    None,
    /// User name and password.
    UserPassword {
        /// User name.
        user: String,
        /// Password.
        password: Secret,
    },
    /// An authentication token.
    Token(Secret),
    /// An nkey seed (`SU…`), signing the server's nonce.
    NkeySeed(Secret),
    /// A user JWT and the nkey seed that signs for it (what a 1.x host passes in host data).
    Jwt {
        /// The user JWT.
        jwt: Secret,
        /// The user's nkey seed.
        seed: Secret,
    },
    /// A NATS `.creds` file (JWT and seed).
    CredsFile(PathBuf),
}

/// A NATS `.creds` file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    /// It cannot be read.
    #[error("cannot read the credentials file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It lacks the user JWT or the seed.
    #[error("the credentials file {path} has no {missing}")]
    Incomplete {
        /// The file.
        path: PathBuf,
        /// What is missing.
        missing: &'static str,
    },
}

/// The user JWT and nkey seed of a NATS `.creds` file (the first line inside each of its
/// `-----BEGIN NATS USER JWT-----` and `-----BEGIN USER NKEY SEED-----` blocks).
pub fn read_creds(path: &std::path::Path) -> Result<(Secret, Secret), CredsError> {
    let text = std::fs::read_to_string(path).map_err(|source| CredsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let block = |marker: &str| {
        let mut lines = text.lines().skip_while(|l| !l.contains(marker));
        lines.next()?;
        lines
            .map(str::trim)
            .find(|l| !l.is_empty())
            .filter(|l| !l.starts_with("---"))
            .map(Secret::new)
    };
    let missing = |missing| CredsError::Incomplete {
        path: path.to_path_buf(),
        missing,
    };
    let jwt = block("BEGIN NATS USER JWT").ok_or_else(|| missing("user JWT"))?;
    let seed = block("BEGIN USER NKEY SEED").ok_or_else(|| missing("nkey seed"))?;
    Ok((jwt, seed))
}

/// TLS settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Require TLS even if the URL does not say `tls://`.
    pub required: bool,
    /// PEM file of root certificates to trust.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for mutual TLS (with `client_key`).
    pub client_cert: Option<PathBuf>,
    /// PEM client key, for mutual TLS (with `client_cert`).
    pub client_key: Option<PathBuf>,
}

/// Everything needed to connect to a lattice's NATS.
#[derive(Clone, Debug)]
pub struct NatsOptions {
    /// Server URL(s), comma separated (`nats://127.0.0.1:4222`).
    pub url: String,
    /// Credentials.
    pub auth: NatsAuth,
    /// TLS.
    pub tls: TlsOptions,
    /// Connection name shown by the server (`nats-server` monitoring).
    pub name: Option<String>,
    /// How long the first connection attempt may take.
    pub connect_timeout: Duration,
    /// Upper bound of the exponential backoff between reconnect attempts.
    pub max_reconnect_delay: Duration,
    /// Where replies to this connection's requests arrive (`_INBOX` when none): on a lattice
    /// whose authorization gives each identity its own inboxes, its prefix.
    pub inbox_prefix: Option<String>,
}

impl NatsOptions {
    /// Another NATS server than the lattice's, as a link's config names it: `url`, and its
    /// credentials (`creds_file`, `jwt` + `seed`, `nkey`, `token`, or `user` + `password`)
    /// and `tls_ca_file`; `None` when the config has no `url` (the link uses the lattice's
    /// connection). `name` is the connection name the server shows. Secrets stay out of
    /// errors and `Debug`.
    pub fn from_link_config(
        values: &crate::config::ConfigValues<'_>,
        name: &str,
    ) -> Result<Option<Self>, crate::config::ConfigValueError> {
        let get = |key: &str| values.get(key);
        let auth = if let Some(path) = get("creds_file") {
            NatsAuth::CredsFile(path.into())
        } else if let (Some(jwt), Some(seed)) = (get("jwt"), get("seed")) {
            NatsAuth::Jwt {
                jwt: jwt.into(),
                seed: seed.into(),
            }
        } else if let Some(seed) = get("nkey") {
            NatsAuth::NkeySeed(seed.into())
        } else if let Some(token) = get("token") {
            NatsAuth::Token(token.into())
        } else if let Some(user) = get("user") {
            NatsAuth::UserPassword {
                user,
                password: get("password").unwrap_or_default().into(),
            }
        } else {
            NatsAuth::None
        };
        let Some(url) = get("url") else {
            if matches!(auth, NatsAuth::None) {
                return Ok(None);
            }
            return Err(crate::config::ConfigValueError::new(
                "url",
                "credentials are given but no url",
            ));
        };
        let mut opts = NatsOptions {
            url,
            auth,
            name: Some(name.to_string()),
            // Reconnect quickly: the backend must be usable within moments of coming back.
            max_reconnect_delay: Duration::from_millis(250),
            ..NatsOptions::default()
        };
        if let Some(ca) = get("tls_ca_file") {
            opts.tls.required = true;
            opts.tls.ca_file = Some(ca.into());
        }
        Ok(Some(opts))
    }
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_string(),
            auth: NatsAuth::None,
            tls: TlsOptions::default(),
            name: None,
            connect_timeout: Duration::from_secs(5),
            max_reconnect_delay: Duration::from_secs(5),
            inbox_prefix: None,
        }
    }
}

/// NATS connection flags (and their `TRELLIS_NATS_*` environment variables), shared by
/// standalone providers, the host and the CLI. Secrets are hidden from `--help`.
#[derive(Clone, Debug, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL(s).
    #[arg(
        long,
        global = true,
        env = "TRELLIS_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// NATS user (with --nats-password).
    #[arg(long, global = true, env = "TRELLIS_NATS_USER")]
    pub nats_user: Option<String>,
    /// NATS password.
    #[arg(
        long,
        global = true,
        env = "TRELLIS_NATS_PASSWORD",
        hide_env_values = true
    )]
    pub nats_password: Option<String>,
    /// NATS token.
    #[arg(
        long,
        global = true,
        env = "TRELLIS_NATS_TOKEN",
        hide_env_values = true
    )]
    pub nats_token: Option<String>,
    /// NATS nkey seed.
    #[arg(long, global = true, env = "TRELLIS_NATS_NKEY", hide_env_values = true)]
    pub nats_nkey: Option<String>,
    /// NATS user JWT (with --nats-seed).
    #[arg(long, global = true, env = "TRELLIS_NATS_JWT", hide_env_values = true)]
    pub nats_jwt: Option<String>,
    /// nkey seed signing for --nats-jwt.
    #[arg(long, global = true, env = "TRELLIS_NATS_SEED", hide_env_values = true)]
    pub nats_seed: Option<String>,
    /// NATS .creds file.
    #[arg(long, global = true, env = "TRELLIS_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// Require TLS.
    #[arg(long, global = true, env = "TRELLIS_NATS_TLS")]
    pub nats_tls: bool,
    /// PEM root certificates to trust.
    #[arg(long, global = true, env = "TRELLIS_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// PEM client certificate (mutual TLS).
    #[arg(long, global = true, env = "TRELLIS_NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,
    /// PEM client key (mutual TLS).
    #[arg(long, global = true, env = "TRELLIS_NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,
}

impl NatsArgs {
    /// The connection these flags describe. Credentials are tried in this order: creds file,
    /// JWT + seed, nkey, token, user/password.
    pub fn into_options(self) -> NatsOptions {
        let auth = if let Some(creds) = self.nats_creds {
            NatsAuth::CredsFile(creds)
        } else if let (Some(jwt), Some(seed)) = (self.nats_jwt, self.nats_seed) {
            NatsAuth::Jwt {
                jwt: jwt.into(),
                seed: seed.into(),
            }
        } else if let Some(seed) = self.nats_nkey {
            NatsAuth::NkeySeed(seed.into())
        } else if let Some(token) = self.nats_token {
            NatsAuth::Token(token.into())
        } else if let Some(user) = self.nats_user {
            NatsAuth::UserPassword {
                user,
                password: self.nats_password.unwrap_or_default().into(),
            }
        } else {
            NatsAuth::None
        };
        NatsOptions {
            url: self.nats_url,
            auth,
            tls: TlsOptions {
                required: self.nats_tls,
                ca_file: self.nats_tls_ca,
                client_cert: self.nats_tls_cert,
                client_key: self.nats_tls_key,
            },
            ..NatsOptions::default()
        }
    }
}

/// Why a NATS connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The credentials could not be used (bad seed, unreadable creds file, …).
    #[error("invalid NATS credentials: {0}")]
    Credentials(String),
    /// The server could not be reached or refused us.
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// The URL tried.
        url: String,
        /// What went wrong.
        #[source]
        source: async_nats::ConnectError,
    },
}

/// How long a process that is leaving the lattice waits for its last messages to reach
/// NATS (see [`final_flush`]).
pub const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a final flush did not complete.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// The client could not flush (the connection is closed, say).
    #[error("NATS flush failed: {0}")]
    Failed(#[from] async_nats::client::FlushError),
    /// NATS did not take the messages in time; the server is probably gone.
    #[error("NATS did not take the last messages within {0:?}")]
    TimedOut(Duration),
}

/// Flushes what `nats` has buffered, waiting at most `within`: a process that is stopping
/// must not wait for a NATS server that is gone (async-nats's own flush waits for it to come
/// back, without a bound).
///
/// ```no_run
/// # async fn demo(nats: async_nats::Client) {
/// use trellis_sdk::connect::{FINAL_FLUSH_TIMEOUT, final_flush};
/// if let Err(err) = final_flush(&nats, FINAL_FLUSH_TIMEOUT).await {
///     tracing::warn!(%err, "some messages may not have left");
/// }
/// # }
/// ```
pub async fn final_flush(nats: &async_nats::Client, within: Duration) -> Result<(), FlushError> {
    match tokio::time::timeout(within, nats.flush()).await {
        Ok(res) => Ok(res?),
        Err(_) => Err(FlushError::TimedOut(within)),
    }
}

/// Backoff between reconnect attempts: 100 ms doubling up to `max`, with no delay for the
/// first attempt so a blip costs nothing.
pub fn reconnect_delay(attempts: usize, max: Duration) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(attempts.saturating_sub(2))
        .unwrap_or(u32::MAX)
        .min(16);
    Duration::from_millis(100u64.saturating_mul(1 << exp)).min(max)
}

impl NatsOptions {
    /// Builds the `async-nats` options.
    pub async fn to_connect_options(&self) -> Result<async_nats::ConnectOptions, ConnectError> {
        let mut opts = match &self.auth {
            NatsAuth::None => async_nats::ConnectOptions::new(),
            NatsAuth::UserPassword { user, password } => {
                async_nats::ConnectOptions::with_user_and_password(
                    user.clone(),
                    password.expose().to_string(),
                )
            }
            NatsAuth::Token(token) => {
                async_nats::ConnectOptions::with_token(token.expose().to_string())
            }
            NatsAuth::NkeySeed(seed) => {
                nkeys::KeyPair::from_seed(seed.expose())
                    .map_err(|e| ConnectError::Credentials(format!("nkey seed: {e}")))?;
                async_nats::ConnectOptions::with_nkey(seed.expose().to_string())
            }
            NatsAuth::Jwt { jwt, seed } => {
                let key = Arc::new(
                    nkeys::KeyPair::from_seed(seed.expose())
                        .map_err(|e| ConnectError::Credentials(format!("JWT seed: {e}")))?,
                );
                async_nats::ConnectOptions::with_jwt(jwt.expose().to_string(), move |nonce| {
                    let key = Arc::clone(&key);
                    async move { key.sign(&nonce).map_err(async_nats::AuthError::new) }
                })
            }
            NatsAuth::CredsFile(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| {
                    ConnectError::Credentials(format!("creds file {}: {e}", path.display()))
                })?,
        };
        if self.tls.required {
            opts = opts.require_tls(true);
        }
        if let Some(ca) = &self.tls.ca_file {
            opts = opts.add_root_certificates(ca.clone());
        }
        match (&self.tls.client_cert, &self.tls.client_key) {
            (Some(cert), Some(key)) => {
                opts = opts.add_client_certificate(cert.clone(), key.clone());
            }
            (None, None) => {}
            _ => {
                return Err(ConnectError::Credentials(
                    "TLS client certificate and key must be given together".into(),
                ));
            }
        }
        if let Some(name) = &self.name {
            opts = opts.name(name);
        }
        if let Some(prefix) = &self.inbox_prefix {
            opts = opts.custom_inbox_prefix(prefix);
        }
        let max = self.max_reconnect_delay;
        Ok(opts
            .connection_timeout(self.connect_timeout)
            .max_reconnects(None)
            .reconnect_delay_callback(move |attempts| reconnect_delay(attempts, max))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Disconnected => tracing::warn!("NATS disconnected"),
                    async_nats::Event::Connected => tracing::info!("NATS connected"),
                    // A permissions violation, say: what the server refused, for the log.
                    async_nats::Event::ServerError(err) => {
                        tracing::warn!(error = %err, "NATS server error")
                    }
                    other => tracing::debug!(%other, "NATS event"),
                }
            }))
    }

    /// Connects, failing after [`NatsOptions::connect_timeout`] if the server is not there.
    pub async fn connect(&self) -> Result<async_nats::Client, ConnectError> {
        let opts = self.to_connect_options().await?;
        opts.connect(self.url.as_str())
            .await
            .map_err(|source| ConnectError::Connect {
                url: self.url.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_exponential() {
        let max = Duration::from_secs(5);
        assert_eq!(reconnect_delay(1, max), Duration::ZERO);
        assert_eq!(reconnect_delay(2, max), Duration::from_millis(100));
        assert_eq!(reconnect_delay(3, max), Duration::from_millis(200));
        assert_eq!(reconnect_delay(50, max), max);
    }

    #[test]
    fn debug_hides_credentials() {
        let opts = NatsOptions {
            auth: NatsAuth::Jwt {
                jwt: "eyJ0eXAi.secret-jwt".into(),
                seed: "SUAM-secret-seed".into(),
            },
            ..NatsOptions::default()
        };
        let dbg = format!("{opts:?}");
        assert!(!dbg.contains("secret"), "{dbg}");
    }
}
