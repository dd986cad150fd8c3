//! Host data: what a host tells a provider it starts (*1.x* format).
//!
//! A 1.x host (and the Trellis host) writes one line to the provider's stdin:
//! `base64(JSON(HostData))`, then closes stdin. Reading is bounded in size and time, so a
//! provider started by hand without host data fails with a clear message instead of waiting
//! forever or reading unbounded input.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, BufReader};

use crate::connect::{NatsAuth, TlsOptions};
use crate::link::LinkDefinition;
use crate::secret::Secret;

/// The largest host data line accepted (links and config included).
pub const MAX_HOST_DATA_BYTES: u64 = 16 << 20;

/// The host data a host passes to a provider on stdin (*1.x* `HostData`).
///
/// Unknown fields are ignored and missing ones take their defaults, so host data from any 1.x
/// host version parses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostData {
    /// The host that started the provider.
    pub host_id: String,
    /// The lattice name.
    pub lattice_rpc_prefix: String,
    /// The NATS URL of the lattice.
    pub lattice_rpc_url: String,
    /// User JWT for NATS (empty for none).
    pub lattice_rpc_user_jwt: Secret,
    /// The nkey seed signing for the JWT (empty for none).
    pub lattice_rpc_user_seed: Secret,
    /// The provider id.
    pub provider_key: String,
    /// Unique id of this start of the provider.
    pub instance_id: String,
    /// Every current link where the provider is source or target, config resolved.
    pub link_definitions: Vec<LinkDefinition>,
    /// The provider's merged named config.
    pub config: HashMap<String, String>,
    /// Secrets for the provider (plain text in host data, as 1.x sends them).
    pub secrets: HashMap<String, SecretValue>,
    /// The host's xkey public key (for sealed secrets).
    pub host_xkey_public_key: String,
    /// This instance's xkey private key (for sealed secrets). A 1.x host addresses link puts
    /// to the matching public key.
    pub provider_xkey_private_key: Secret,
    /// Default timeout of outgoing calls, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_rpc_timeout_ms: Option<u64>,
    /// Whether logs should be JSON.
    pub structured_logging: bool,
    /// Log level the host asks for (`trace` … `error`, `critical`; lowercase).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// OpenTelemetry settings of the host, passed through untouched (an object; 1.x readers
    /// require one).
    #[serde(default = "empty_object")]
    pub otel_config: serde_json::Value,
    /// Legacy: link name of the provider start.
    pub link_name: String,
    /// Legacy: environment values.
    pub env_values: HashMap<String, String>,
    /// Legacy: cluster issuers.
    pub cluster_issuers: Vec<String>,
    /// *Trellis*: the lattice credentials and TLS settings 1.x host data has no field for
    /// (1.x providers ignore it; JWT and seed travel in the 1.x fields).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trellis_nats: Option<NatsExtras>,
}

/// The NATS settings a Trellis host passes beyond 1.x's JWT and seed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NatsExtras {
    /// User name (with `password`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Password of `user`.
    #[serde(skip_serializing_if = "Secret::is_empty")]
    pub password: Secret,
    /// Authentication token.
    #[serde(skip_serializing_if = "Secret::is_empty")]
    pub token: Secret,
    /// TLS is required.
    pub tls_required: bool,
    /// PEM roots to trust.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate (mutual TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_cert: Option<PathBuf>,
    /// PEM client key (mutual TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_key: Option<PathBuf>,
    /// The inbox prefix the provider's identity may subscribe to (a lattice whose
    /// authorization gives each identity its own inboxes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbox_prefix: Option<String>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// A secret value as 1.x carries it: `{"kind": "String", "value": "…"}` or
/// `{"kind": "Bytes", "value": [1, 2, 3]}`. Never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value")]
pub enum SecretValue {
    /// A text secret.
    String(Secret),
    /// A binary secret.
    Bytes(Vec<u8>),
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Why host data could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HostDataError {
    /// Nothing arrived in time.
    #[error(
        "no host data on stdin within {0:?}: start the provider from a host, or standalone \
         (see --help)"
    )]
    Timeout(Duration),
    /// stdin closed without a line.
    #[error(
        "stdin closed without host data: start the provider from a host, or standalone (see --help)"
    )]
    Empty,
    /// The line is larger than [`MAX_HOST_DATA_BYTES`].
    #[error("host data is larger than {MAX_HOST_DATA_BYTES} bytes")]
    TooLarge,
    /// Reading stdin failed.
    #[error("cannot read host data from stdin: {0}")]
    Io(#[from] std::io::Error),
    /// The line is not base64.
    #[error("host data is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// The JSON does not have the host data shape.
    #[error("host data is not valid JSON host data: {0}")]
    Json(#[from] serde_json::Error),
}

impl HostData {
    /// Encodes host data the way a host writes it (base64 of JSON, no line ending).
    pub fn encode(&self) -> Result<String, serde_json::Error> {
        let json = serde_json::to_vec(self)?;
        Ok(base64::engine::general_purpose::STANDARD.encode(json))
    }

    /// Decodes one host data line (surrounding white space ignored).
    pub fn decode(line: &str) -> Result<Self, HostDataError> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(line.trim())?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// Sets the credentials and TLS settings a provider joins the lattice with: JWT and seed
    /// in the 1.x fields (a `.creds` file is read into them, so 1.x providers can use it
    /// too), the rest in [`HostData::trellis_nats`].
    pub fn set_nats_credentials(
        &mut self,
        auth: &NatsAuth,
        tls: &TlsOptions,
    ) -> Result<(), crate::connect::CredsError> {
        let mut extras = NatsExtras {
            tls_required: tls.required,
            tls_ca_file: tls.ca_file.clone(),
            tls_client_cert: tls.client_cert.clone(),
            tls_client_key: tls.client_key.clone(),
            ..NatsExtras::default()
        };
        match auth {
            NatsAuth::None => {}
            NatsAuth::UserPassword { user, password } => {
                extras.user = Some(user.clone());
                extras.password = password.clone();
            }
            NatsAuth::Token(token) => extras.token = token.clone(),
            NatsAuth::NkeySeed(seed) => self.lattice_rpc_user_seed = seed.clone(),
            NatsAuth::Jwt { jwt, seed } => {
                self.lattice_rpc_user_jwt = jwt.clone();
                self.lattice_rpc_user_seed = seed.clone();
            }
            NatsAuth::CredsFile(path) => {
                let (jwt, seed) = crate::connect::read_creds(path)?;
                self.lattice_rpc_user_jwt = jwt;
                self.lattice_rpc_user_seed = seed;
            }
        }
        self.trellis_nats = (extras != NatsExtras::default()).then_some(extras);
        Ok(())
    }

    /// The credentials and TLS settings host data gives: 1.x's JWT (with its seed) or seed
    /// first, then the Trellis extension's user/password or token.
    pub fn nats_credentials(&self) -> (NatsAuth, TlsOptions) {
        let extras = self.trellis_nats.clone().unwrap_or_default();
        let auth = if !self.lattice_rpc_user_jwt.is_empty() {
            NatsAuth::Jwt {
                jwt: self.lattice_rpc_user_jwt.clone(),
                seed: self.lattice_rpc_user_seed.clone(),
            }
        } else if !self.lattice_rpc_user_seed.is_empty() {
            NatsAuth::NkeySeed(self.lattice_rpc_user_seed.clone())
        } else if let Some(user) = extras.user {
            NatsAuth::UserPassword {
                user,
                password: extras.password,
            }
        } else if !extras.token.is_empty() {
            NatsAuth::Token(extras.token)
        } else {
            NatsAuth::None
        };
        let tls = TlsOptions {
            required: extras.tls_required,
            ca_file: extras.tls_ca_file,
            client_cert: extras.tls_client_cert,
            client_key: extras.tls_client_key,
        };
        (auth, tls)
    }

    /// Sets the inbox prefix the provider's identity may subscribe to.
    pub fn set_inbox_prefix(&mut self, prefix: Option<String>) {
        if prefix.is_none() && self.trellis_nats.is_none() {
            return;
        }
        self.trellis_nats
            .get_or_insert_with(NatsExtras::default)
            .inbox_prefix = prefix;
    }

    /// The inbox prefix the host gave, if any.
    pub fn inbox_prefix(&self) -> Option<String> {
        self.trellis_nats.as_ref()?.inbox_prefix.clone()
    }

    /// Host data with every field a 1.x reader requires present.
    pub fn new() -> Self {
        Self {
            link_name: crate::link::DEFAULT_LINK_NAME.to_string(),
            otel_config: empty_object(),
            ..Self::default()
        }
    }

    /// Reads one host data line from `reader`, waiting at most `timeout`.
    pub async fn read_from(
        reader: impl AsyncRead + Unpin,
        timeout: Duration,
    ) -> Result<Self, HostDataError> {
        let mut line = String::new();
        let mut limited = BufReader::new(reader.take(MAX_HOST_DATA_BYTES + 1));
        let n = tokio::time::timeout(timeout, limited.read_line(&mut line))
            .await
            .map_err(|_| HostDataError::Timeout(timeout))??;
        if n == 0 || line.trim().is_empty() {
            return Err(HostDataError::Empty);
        }
        if n as u64 > MAX_HOST_DATA_BYTES {
            return Err(HostDataError::TooLarge);
        }
        Self::decode(&line)
    }

    /// Reads host data from this process's stdin.
    pub async fn read_stdin(timeout: Duration) -> Result<Self, HostDataError> {
        Self::read_from(tokio::io::stdin(), timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_a_1x_host_sends() {
        let json = r#"{"host_id":"NHOST","lattice_rpc_prefix":"default","link_name":"default",
            "lattice_rpc_user_jwt":"","lattice_rpc_user_seed":"","lattice_rpc_url":"nats://127.0.0.1:4222",
            "provider_key":"my-provider","env_values":{},"instance_id":"5f0c","link_definitions":[
              {"source_id":"c","target":"my-provider","name":"default","wit_namespace":"wasi",
               "wit_package":"keyvalue","interfaces":["store"],"source_config":{},"target_config":{"k":"v"},
               "source_secrets":null,"target_secrets":[1,2,3]}],
            "cluster_issuers":[],"config":{"k":"v"},
            "secrets":{"token":{"kind":"String","value":"s3cr3t"},"blob":{"kind":"Bytes","value":[1,2]}},
            "host_xkey_public_key":"XAB","provider_xkey_private_key":"SXA",
            "default_rpc_timeout_ms":2000,"structured_logging":false,"log_level":"info",
            "otel_config":{"enable_observability":false,"protocol":"Http","additional_ca_paths":[],"trace_level":"info"}}"#;
        let hd: HostData = serde_json::from_str(json).unwrap();
        assert_eq!(hd.link_definitions[0].target_config["k"], "v");
        assert_eq!(hd.default_rpc_timeout_ms, Some(2000));
        let dbg = format!("{hd:?}");
        assert!(!dbg.contains("s3cr3t") && !dbg.contains("SXA"), "{dbg}");
        // What we write carries every field a 1.x reader requires.
        let out = serde_json::to_value(HostData::new()).unwrap();
        for field in ["env_values", "link_definitions", "otel_config"] {
            assert!(out.get(field).is_some(), "{field} missing");
        }
        assert!(out["otel_config"].is_object());
    }

    #[tokio::test]
    async fn reads_a_1x_line_and_rejects_garbage() {
        let hd = HostData {
            host_id: "NHOST".into(),
            lattice_rpc_prefix: "default".into(),
            provider_key: "prov".into(),
            lattice_rpc_user_seed: "SUSECRET".into(),
            ..HostData::new()
        };
        let line = format!("{}\r\n", hd.encode().unwrap());
        let back = HostData::read_from(line.as_bytes(), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(back, hd);
        assert!(!format!("{back:?}").contains("SUSECRET"));

        let err = HostData::read_from(&b"not base64!\n"[..], Duration::from_secs(1)).await;
        assert!(matches!(err, Err(HostDataError::Base64(_))), "{err:?}");
        let err = HostData::read_from(&b""[..], Duration::from_secs(1)).await;
        assert!(matches!(err, Err(HostDataError::Empty)), "{err:?}");
        let not_json = base64::engine::general_purpose::STANDARD.encode("[1,2]");
        let err = HostData::read_from(not_json.as_bytes(), Duration::from_secs(1)).await;
        assert!(matches!(err, Err(HostDataError::Json(_))), "{err:?}");
    }

    #[test]
    fn credentials_travel_in_1x_fields_and_the_extension() {
        let dir = std::env::temp_dir().join(format!("trellis-hd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let creds = dir.join("u.creds");
        std::fs::write(
            &creds,
            "-----BEGIN NATS USER JWT-----\neyJhbGc.x.y\n------END NATS USER JWT------\n\n\
             ***** IMPORTANT *****\n\n-----BEGIN USER NKEY SEED-----\nSUAEXAMPLE\n\
             ------END USER NKEY SEED------\n",
        )
        .unwrap();
        let tls = TlsOptions {
            required: true,
            ca_file: Some("/ca.pem".into()),
            ..TlsOptions::default()
        };
        let mut hd = HostData::new();
        hd.set_nats_credentials(&NatsAuth::CredsFile(creds.clone()), &tls)
            .unwrap();
        assert_eq!(hd.lattice_rpc_user_jwt.expose(), "eyJhbGc.x.y");
        assert_eq!(hd.lattice_rpc_user_seed.expose(), "SUAEXAMPLE");
        let back = HostData::decode(&hd.encode().unwrap()).unwrap();
        let (auth, tls_back) = back.nats_credentials();
        assert!(matches!(auth, NatsAuth::Jwt { .. }));
        assert_eq!(tls_back, tls);

        let mut hd = HostData::new();
        let auth = NatsAuth::UserPassword {
            user: "app".into(),
            password: Secret::new("pw"),
        };
        hd.set_nats_credentials(&auth, &TlsOptions::default())
            .unwrap();
        let back = HostData::decode(&hd.encode().unwrap()).unwrap();
        match back.nats_credentials().0 {
            NatsAuth::UserPassword { user, password } => {
                assert_eq!((user.as_str(), password.expose()), ("app", "pw"))
            }
            other => panic!("{other:?}"),
        }
        // Nothing to add: no extension at all (what a 1.x host sends).
        let mut hd = HostData::new();
        hd.set_nats_credentials(&NatsAuth::None, &TlsOptions::default())
            .unwrap();
        assert!(hd.trellis_nats.is_none());

        std::fs::write(&creds, "no blocks here").unwrap();
        let err = crate::connect::read_creds(&creds).unwrap_err().to_string();
        assert!(err.contains("has no user JWT"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
