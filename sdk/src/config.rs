//! How a provider is configured at start: from host data on stdin, or standalone.
//!
//! A provider started by a host (1.x or Trellis) reads [`HostData`] from stdin. A provider
//! started by itself — an external service joining the lattice as a "virtual component" —
//! takes the same facts from flags or `TRELLIS_*` environment variables ([`StandaloneArgs`]).
//! Both end as one [`ProviderConfig`], so nothing downstream cares how the provider started.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use crate::connect::{NatsArgs, NatsOptions};
use crate::error::InvalidName;
use crate::host_data::{HostData, HostDataError, SecretValue};
use crate::link::LinkDefinition;
use crate::sealing::XKeyPair;
use crate::subjects::validate_token;

/// Everything a provider needs to join its lattice and serve.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    /// Lattice name.
    pub lattice: String,
    /// Provider id (the target id components link to).
    pub provider_id: String,
    /// Unique id of this instance.
    pub instance_id: String,
    /// The host that started the provider, if any. A shutdown request naming another host is
    /// ignored.
    pub host_id: Option<String>,
    /// How to reach NATS.
    pub nats: NatsOptions,
    /// The provider's own config (merged named config).
    pub config: HashMap<String, String>,
    /// Links known at start (from host data).
    pub initial_links: Vec<LinkDefinition>,
    /// Secrets passed by the host.
    pub secrets: HashMap<String, SecretValue>,
    /// The keys that open link secrets: this instance's xkey and the public xkey of the host
    /// that sealed them (`None` standalone, or from a host that sends none).
    pub secret_keys: Option<SecretKeys>,
    /// Default timeout of calls the provider makes, and of waits inside a served call.
    pub rpc_timeout: Duration,
    /// Most calls served at once; further calls wait in NATS.
    pub max_concurrent_calls: usize,
    /// Longest a served call may run before it is cancelled; `None`: the provider's own
    /// default ([`crate::provider::Provider::call_deadline`]).
    pub call_deadline: Option<Duration>,
    /// Longest graceful shutdown waits for in-flight calls.
    pub shutdown_deadline: Duration,
    /// Whether links are pulled from the lattice store (and followed live).
    pub pull_links: bool,
    /// Whether logs should be JSON (a host's wish).
    pub structured_logging: bool,
    /// Log level a host asked for.
    pub log_level: Option<String>,
}

/// Why the provider configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Host data could not be read.
    #[error(transparent)]
    HostData(#[from] HostDataError),
    /// A name is not a valid subject token.
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    /// Command-line or environment arguments are wrong (or `--help` was asked).
    #[error(transparent)]
    Args(#[from] clap::Error),
    /// A `--config key=value` pair has no `=`.
    #[error("config entry {0:?} is not of the form key=value")]
    BadConfigEntry(String),
    /// The host data's xkeys are not valid.
    #[error("host data: {0}")]
    XKey(#[from] crate::sealing::SealError),
}

/// The keys that open the link secrets a host sealed for this provider instance.
#[derive(Clone, Debug)]
pub struct SecretKeys {
    /// This instance's key pair (1.x `provider_xkey_private_key`).
    pub instance: Arc<XKeyPair>,
    /// The sealing host's public key (1.x `host_xkey_public_key`).
    pub host_public: String,
}

/// Flags and environment of a provider started standalone (without a host).
#[derive(Clone, Debug, Parser)]
#[command(about = "A Trellis capability provider", long_about = None)]
pub struct StandaloneArgs {
    /// Lattice to join.
    #[arg(long, env = "TRELLIS_LATTICE", default_value = "default")]
    pub lattice: String,
    /// Provider id: the target id links point at.
    #[arg(long, env = "TRELLIS_PROVIDER_ID")]
    pub provider_id: String,
    /// How to reach NATS.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Provider config entries, `key=value` (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// Instance id (random if not given).
    #[arg(long, env = "TRELLIS_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Default call timeout, in milliseconds.
    #[arg(long, env = "TRELLIS_RPC_TIMEOUT_MS", default_value_t = 10_000)]
    pub rpc_timeout_ms: u64,
    /// Most calls served at once.
    #[arg(long, env = "TRELLIS_MAX_CONCURRENT_CALLS", default_value_t = 1024)]
    pub max_concurrent_calls: usize,
    /// Longest a served call may run, in milliseconds (default: the provider's own, 30 s for
    /// most; longer for providers whose calls stream whole objects).
    #[arg(long, env = "TRELLIS_CALL_DEADLINE_MS")]
    pub call_deadline_ms: Option<u64>,
    /// Longest graceful shutdown waits for in-flight calls, in milliseconds.
    #[arg(long, env = "TRELLIS_SHUTDOWN_DEADLINE_MS", default_value_t = 10_000)]
    pub shutdown_deadline_ms: u64,
    /// Do not pull links from the lattice store (only pushes reach the provider).
    #[arg(long, env = "TRELLIS_NO_PULL_LINKS")]
    pub no_pull_links: bool,
}

fn parse_entries(entries: &[String]) -> Result<HashMap<String, String>, ConfigError> {
    entries
        .iter()
        .map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| ConfigError::BadConfigEntry(e.clone()))
        })
        .collect()
}

impl ProviderConfig {
    fn defaults(lattice: String, provider_id: String, nats: NatsOptions) -> Self {
        Self {
            lattice,
            provider_id,
            instance_id: uuid::Uuid::new_v4().to_string(),
            host_id: None,
            nats,
            config: HashMap::new(),
            initial_links: Vec::new(),
            secrets: HashMap::new(),
            secret_keys: None,
            rpc_timeout: Duration::from_secs(10),
            max_concurrent_calls: 1024,
            call_deadline: None,
            shutdown_deadline: Duration::from_secs(10),
            pull_links: true,
            structured_logging: false,
            log_level: None,
        }
    }

    /// A standalone configuration with defaults, for tests and embedding.
    pub fn standalone(
        lattice: &str,
        provider_id: &str,
        nats_url: &str,
    ) -> Result<Self, ConfigError> {
        validate_token("lattice name", lattice)?;
        validate_token("provider id", provider_id)?;
        let nats = NatsOptions {
            url: nats_url.to_string(),
            ..NatsOptions::default()
        };
        Ok(Self::defaults(lattice.into(), provider_id.into(), nats))
    }

    /// The configuration described by host data.
    pub fn from_host_data(hd: HostData) -> Result<Self, ConfigError> {
        validate_token("lattice name", &hd.lattice_rpc_prefix)?;
        validate_token("provider id", &hd.provider_key)?;
        let (auth, tls) = hd.nats_credentials();
        let inbox_prefix = hd.inbox_prefix();
        let url = if hd.lattice_rpc_url.is_empty() {
            NatsOptions::default().url
        } else {
            hd.lattice_rpc_url.clone()
        };
        let nats = NatsOptions {
            url,
            auth,
            tls,
            inbox_prefix,
            name: Some(hd.provider_key.clone()),
            ..NatsOptions::default()
        };
        let mut cfg = Self::defaults(hd.lattice_rpc_prefix, hd.provider_key, nats);
        if !hd.instance_id.is_empty() {
            cfg.instance_id = hd.instance_id;
        }
        cfg.host_id = Some(hd.host_id).filter(|h| !h.is_empty());
        cfg.config = hd.config;
        cfg.initial_links = hd.link_definitions;
        cfg.secrets = hd.secrets;
        if !hd.provider_xkey_private_key.is_empty() && !hd.host_xkey_public_key.is_empty() {
            let instance = XKeyPair::from_seed(&hd.provider_xkey_private_key)?;
            XKeyPair::from_public_key(&hd.host_xkey_public_key)?;
            cfg.secret_keys = Some(SecretKeys {
                instance: Arc::new(instance),
                host_public: hd.host_xkey_public_key,
            });
        }
        if let Some(ms) = hd.default_rpc_timeout_ms.filter(|ms| *ms > 0) {
            cfg.rpc_timeout = Duration::from_millis(ms);
        }
        cfg.structured_logging = hd.structured_logging;
        cfg.log_level = hd.log_level;
        Ok(cfg)
    }

    /// The configuration described by standalone flags and environment.
    pub fn from_args(args: StandaloneArgs) -> Result<Self, ConfigError> {
        validate_token("lattice name", &args.lattice)?;
        validate_token("provider id", &args.provider_id)?;
        let mut nats = args.nats.into_options();
        nats.name = Some(args.provider_id.clone());
        // Its own inboxes: on a lattice that gives each identity its own (an external
        // service joining with the credentials `trellis up` issued it), the only ones it may
        // read; elsewhere, as good as any.
        nats.inbox_prefix = Some(crate::subjects::inbox_prefix(&args.provider_id));
        let mut cfg = Self::defaults(args.lattice, args.provider_id, nats);
        if let Some(id) = args.instance_id {
            cfg.instance_id = id;
        }
        cfg.config = parse_entries(&args.config)?;
        cfg.rpc_timeout = Duration::from_millis(args.rpc_timeout_ms.max(1));
        cfg.max_concurrent_calls = args.max_concurrent_calls.max(1);
        cfg.call_deadline = args
            .call_deadline_ms
            .map(|ms| Duration::from_millis(ms.max(1)));
        cfg.shutdown_deadline = Duration::from_millis(args.shutdown_deadline_ms);
        cfg.pull_links = !args.no_pull_links;
        Ok(cfg)
    }

    /// Chooses how the provider was started: standalone when it was given arguments or
    /// `TRELLIS_PROVIDER_ID` is set, otherwise from host data on stdin (what a host does: it
    /// passes no arguments and clears the environment).
    pub async fn load(args: Vec<OsString>) -> Result<Self, ConfigError> {
        let standalone = args.len() > 1 || std::env::var_os("TRELLIS_PROVIDER_ID").is_some();
        if standalone {
            let args = StandaloneArgs::try_parse_from(args)?;
            Self::from_args(args)
        } else {
            let hd = HostData::read_stdin(Duration::from_secs(10)).await?;
            Self::from_host_data(hd)
        }
    }
}

/// A config value that does not parse: which key, and why (never the value, which may be a
/// secret).
#[derive(Debug, thiserror::Error)]
#[error("config key {key:?}: {message}")]
pub struct ConfigValueError {
    /// The offending key.
    pub key: String,
    /// Why it is unusable.
    pub message: String,
}

impl ConfigValueError {
    /// An error about `key`.
    pub fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// Typed reads of a link's (or provider's) string config, with keys matched
/// case-insensitively (1.x providers used upper-case keys such as `URL`).
///
/// ```
/// # use std::collections::HashMap;
/// # use std::time::Duration;
/// use trellis_sdk::config::ConfigValues;
/// let map = HashMap::from([("TIMEOUT_MS".to_string(), "250".to_string())]);
/// let cfg = ConfigValues::new(&map);
/// assert_eq!(cfg.millis("timeout_ms", Duration::from_secs(5)).unwrap(), Duration::from_millis(250));
/// assert!(!cfg.flag("auto_create").unwrap());
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ConfigValues<'a>(&'a HashMap<String, String>);

impl<'a> ConfigValues<'a> {
    /// Reads `map`.
    pub fn new(map: &'a HashMap<String, String>) -> Self {
        Self(map)
    }

    /// The trimmed value of `key`, if set and not empty.
    pub fn get(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// `true`/`false` (unset: `false`).
    pub fn flag(&self, key: &str) -> Result<bool, ConfigValueError> {
        match self.get(key).as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(ConfigValueError::new(
                key,
                format!("{other:?} is not true/false"),
            )),
        }
    }

    /// A positive number of milliseconds (unset: `default`).
    pub fn millis(&self, key: &str, default: Duration) -> Result<Duration, ConfigValueError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis)
                .ok_or_else(|| ConfigValueError::new(key, "not a positive number of milliseconds")),
        }
    }

    /// A number in `range` (unset: `default`).
    pub fn number_in(
        &self,
        key: &str,
        range: std::ops::RangeInclusive<usize>,
        default: usize,
    ) -> Result<usize, ConfigValueError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| {
                    ConfigValueError::new(
                        key,
                        format!("not a number in {}..={}", range.start(), range.end()),
                    )
                }),
        }
    }

    /// A list: comma-separated (`a, b`) or a JSON array of strings (`["a","b"]`, the 1.x
    /// form). Unset: empty. Items are trimmed; empty items are dropped.
    pub fn list(&self, key: &str) -> Result<Vec<String>, ConfigValueError> {
        let Some(v) = self.get(key) else {
            return Ok(Vec::new());
        };
        let items: Vec<String> = if v.starts_with('[') {
            serde_json::from_str(&v)
                .map_err(|_| ConfigValueError::new(key, "not a JSON array of strings"))?
        } else {
            v.split(',').map(str::to_string).collect()
        };
        Ok(items
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect())
    }

    /// A size in bytes: a number with an optional `K`, `M`, `G` or `T` suffix (powers of
    /// 1024, `KiB`/`MB`-style spellings accepted). Unset: `None`.
    pub fn byte_size(&self, key: &str) -> Result<Option<u64>, ConfigValueError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let bad = || ConfigValueError::new(key, "not a size such as 1048576, 512K, 100M or 1G");
        let digits = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
        let (number, unit) = v.split_at(digits);
        let number: u64 = number.parse().map_err(|_| bad())?;
        let shift = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 0,
            "K" | "KB" | "KIB" => 10,
            "M" | "MB" | "MIB" => 20,
            "G" | "GB" | "GIB" => 30,
            "T" | "TB" | "TIB" => 40,
            _ => return Err(bad()),
        };
        number.checked_mul(1u64 << shift).map(Some).ok_or_else(bad)
    }

    /// Every `{prefix}NAME` entry as (full key, NAME, trimmed value); the prefix is matched
    /// case-insensitively.
    pub fn with_prefix(
        &self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str, &'a str)> + 'a {
        self.0.iter().filter_map(move |(k, v)| {
            let head = k.get(..prefix.len())?;
            head.eq_ignore_ascii_case(prefix)
                .then(|| (k.as_str(), &k[prefix.len()..], v.trim()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::NatsAuth;

    #[test]
    fn lists_and_sizes_parse() {
        let map = HashMap::from([
            ("A".to_string(), " x, y ,,z".to_string()),
            ("b".to_string(), r#"["GET", "POST"]"#.to_string()),
            ("c".to_string(), "[oops".to_string()),
            ("s1".to_string(), "100M".to_string()),
            ("s2".to_string(), "1 GiB".to_string()),
            ("s3".to_string(), "12".to_string()),
            ("s4".to_string(), "12Q".to_string()),
            ("s5".to_string(), "99999999999T".to_string()),
        ]);
        let v = ConfigValues::new(&map);
        assert_eq!(v.list("a").unwrap(), ["x", "y", "z"]);
        assert_eq!(v.list("B").unwrap(), ["GET", "POST"]);
        assert_eq!(v.list("c").unwrap_err().key, "c");
        assert!(v.list("none").unwrap().is_empty());
        assert_eq!(v.byte_size("s1").unwrap(), Some(100 << 20));
        assert_eq!(v.byte_size("s2").unwrap(), Some(1 << 30));
        assert_eq!(v.byte_size("s3").unwrap(), Some(12));
        assert!(v.byte_size("s4").is_err());
        assert!(v.byte_size("s5").is_err());
        assert_eq!(v.byte_size("none").unwrap(), None);
    }

    #[test]
    fn standalone_flags_become_a_config() {
        let args = StandaloneArgs::try_parse_from([
            "prov",
            "--lattice",
            "lat",
            "--provider-id",
            "kv",
            "--nats-user",
            "u",
            "--nats-password",
            "p4ss",
            "--config",
            "bucket=a=b",
        ])
        .unwrap();
        let cfg = ProviderConfig::from_args(args).unwrap();
        assert_eq!(cfg.lattice, "lat");
        assert_eq!(cfg.config["bucket"], "a=b");
        assert!(matches!(cfg.nats.auth, NatsAuth::UserPassword { .. }));
        assert!(!format!("{cfg:?}").contains("p4ss"));
    }

    #[test]
    fn bad_names_are_rejected() {
        assert!(ProviderConfig::standalone("a.b", "p", "nats://x").is_err());
        let hd = HostData {
            lattice_rpc_prefix: "default".into(),
            provider_key: "bad id".into(),
            ..HostData::default()
        };
        assert!(matches!(
            ProviderConfig::from_host_data(hd),
            Err(ConfigError::InvalidName(_))
        ));
    }
}
