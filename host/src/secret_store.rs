//! The lattice's secret store: named secrets in JetStream KV (`SECRETDATA_{lattice}`), each
//! sealed to the store's xkey, with the ids allowed to read it.
//!
//! The operator holds the store's key (an xkey seed in a file, never on the lattice); its
//! public half is published in the bucket, so anyone allowed to write the bucket can *put* a
//! secret (sealed from a throw-away key to the store's public key) but only a holder of the
//! seed — a host given `--secrets-key` — can read one. A record keeps in the clear only what
//! `trellis secret list` shows: the kind, the readers, the version and the times. The sealed
//! payload repeats the name and the readers, so a sealed value copied into another record,
//! or a record whose readers were edited, does not open as that record.

use std::time::{SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use base64::Engine as _;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use trellis_sdk::host_data::SecretValue;
use trellis_sdk::sealing::{SealError, XKeyPair};
use trellis_sdk::secret::Secret;
use trellis_sdk::subjects::LatticeSubjects;

/// Where the store's public key is kept in the bucket.
const PUBLIC_KEY_KEY: &str = "meta.xkey";
/// The prefix of every secret's key in the bucket.
const SECRET_KEY_PREFIX: &str = "secret.";
/// The longest secret value accepted (a secret is a password, a key, a certificate).
pub const MAX_SECRET_BYTES: usize = 64 << 10;

/// Why the secret store could not do something. No variant ever holds a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretStoreError {
    /// JetStream refused or failed.
    #[error("secret store {bucket}: {message}")]
    JetStream {
        /// The bucket.
        bucket: String,
        /// What failed.
        message: String,
    },
    /// The store has no key yet.
    #[error(
        "the secret store of lattice {lattice} has no key yet: `trellis up` creates one, or run \
         `trellis secret init`"
    )]
    NoKey {
        /// The lattice.
        lattice: String,
    },
    /// A host or CLI holds another key than the one the store is sealed to.
    #[error(
        "the secret store is sealed to key {store}, but the key given is {given}: use the key \
         file the store was created with"
    )]
    WrongKey {
        /// The store's public key.
        store: String,
        /// The given key's public half.
        given: String,
    },
    /// No secret of that name.
    #[error("no secret named {0:?} in the secret store")]
    NotFound(String),
    /// The policy does not let `reader` read the secret.
    #[error(
        "secret {name:?} may not be read by {reader} (its readers: {readers}); grant it with `trellis secret put {name} --reader {reader}`"
    )]
    Denied {
        /// The secret.
        name: String,
        /// Who asked.
        reader: String,
        /// Who may.
        readers: String,
    },
    /// A name that cannot be a secret's.
    #[error("{kind} {value:?} is not valid: {why}")]
    InvalidName {
        /// What the name is of.
        kind: &'static str,
        /// The name (cut to 64 characters).
        value: String,
        /// Why.
        why: &'static str,
    },
    /// The value is larger than [`MAX_SECRET_BYTES`].
    #[error("secret {name:?} is {size} bytes; at most {MAX_SECRET_BYTES} are accepted")]
    TooLarge {
        /// The secret.
        name: String,
        /// Its size.
        size: usize,
    },
    /// A record does not open or does not have the record shape.
    #[error("secret {name:?} is unreadable: {why}")]
    Corrupt {
        /// The secret.
        name: String,
        /// Why.
        why: String,
    },
    /// Sealing or a key failed.
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// A secret as listed: everything but its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SecretInfo {
    /// Its name.
    pub name: String,
    /// `string` or `bytes`.
    pub kind: String,
    /// The component and provider ids that may read it.
    pub readers: Vec<String>,
    /// How many times it was put.
    pub version: u64,
    /// When it was first put (ms since the epoch).
    pub created_ms: u64,
    /// When it was last put (ms since the epoch).
    pub updated_ms: u64,
}

/// A record in the bucket.
#[derive(Serialize, Deserialize)]
struct Record {
    kind: String,
    readers: Vec<String>,
    version: u64,
    created_ms: u64,
    updated_ms: u64,
    /// The throw-away key the payload was sealed from.
    sender: String,
    /// base64 of the sealed [`Payload`].
    sealed: String,
}

/// What is sealed: the value, bound to its name and readers.
#[derive(Serialize, Deserialize)]
struct Payload {
    name: String,
    readers: Vec<String>,
    value: SecretValue,
}

/// The secret store of one lattice.
#[derive(Clone)]
pub struct SecretStore {
    kv: kv::Store,
    bucket: String,
    lattice: String,
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretStore")
            .field("bucket", &self.bucket)
            .finish()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Checks a secret name or reader id: 1 to 128 of `A-Z a-z 0-9 _ -`.
pub fn validate_name(kind: &'static str, value: &str) -> Result<(), SecretStoreError> {
    let why = if value.is_empty() {
        Some("it is empty")
    } else if value.len() > 128 {
        Some("it is longer than 128 bytes")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Some("only letters, digits, '_' and '-' are allowed")
    } else {
        None
    };
    match why {
        Some(why) => Err(SecretStoreError::InvalidName {
            kind,
            value: value.chars().take(64).collect(),
            why,
        }),
        None => Ok(()),
    }
}

impl SecretStore {
    /// Opens (creating if needed) the secret store of `subjects`' lattice.
    pub async fn open(
        nats: &async_nats::Client,
        subjects: &LatticeSubjects,
    ) -> Result<Self, SecretStoreError> {
        let bucket = subjects.secret_data_bucket();
        let js = jetstream::new(nats.clone());
        let kv = match js.get_key_value(&bucket).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: bucket.clone(),
                    description: "Trellis secrets, sealed to the store's xkey".into(),
                    history: 1,
                    ..Default::default()
                })
                .await
                .map_err(|e| SecretStoreError::JetStream {
                    bucket: bucket.clone(),
                    message: e.to_string(),
                })?,
        };
        Ok(Self {
            kv,
            bucket,
            lattice: subjects.lattice().to_string(),
        })
    }

    fn js_err(&self, e: impl std::fmt::Display) -> SecretStoreError {
        SecretStoreError::JetStream {
            bucket: self.bucket.clone(),
            message: e.to_string(),
        }
    }

    /// The store's public key, once one is set.
    pub async fn public_key(&self) -> Result<Option<String>, SecretStoreError> {
        let value = self
            .kv
            .get(PUBLIC_KEY_KEY)
            .await
            .map_err(|e| self.js_err(e))?;
        Ok(value.map(|v| String::from_utf8_lossy(&v).trim().to_string()))
    }

    /// Makes `key` the store's key: sets its public half when the store has none, and checks
    /// it when it has one (a host with another key could open nothing).
    pub async fn init(&self, key: &XKeyPair) -> Result<(), SecretStoreError> {
        let given = key.public_key();
        match self.public_key().await? {
            Some(store) if store == given => Ok(()),
            Some(store) => Err(SecretStoreError::WrongKey { store, given }),
            None => {
                // `create` fails if another process set a key meanwhile: check that one.
                if self
                    .kv
                    .create(PUBLIC_KEY_KEY, given.clone().into())
                    .await
                    .is_err()
                {
                    return match self.public_key().await? {
                        Some(store) if store == given => Ok(()),
                        Some(store) => Err(SecretStoreError::WrongKey { store, given }),
                        None => Err(self.js_err("cannot set the store's key")),
                    };
                }
                Ok(())
            }
        }
    }

    /// Puts secret `name` (a new version), readable by `readers`.
    pub async fn put(
        &self,
        name: &str,
        value: &SecretValue,
        readers: &[String],
    ) -> Result<SecretInfo, SecretStoreError> {
        validate_name("secret name", name)?;
        for r in readers {
            validate_name("reader id", r)?;
        }
        let size = match value {
            SecretValue::String(s) => s.expose().len(),
            SecretValue::Bytes(b) => b.len(),
        };
        if size > MAX_SECRET_BYTES {
            return Err(SecretStoreError::TooLarge {
                name: name.into(),
                size,
            });
        }
        let store_key = self
            .public_key()
            .await?
            .ok_or_else(|| SecretStoreError::NoKey {
                lattice: self.lattice.clone(),
            })?;
        let mut readers = readers.to_vec();
        readers.sort();
        readers.dedup();
        let payload = Payload {
            name: name.into(),
            readers: readers.clone(),
            value: value.clone(),
        };
        let plain = serde_json::to_vec(&payload).map_err(|e| SealError::Seal(e.to_string()))?;
        let sender = XKeyPair::generate();
        let sealed = sender.seal(&plain, &store_key)?;
        let previous = self.info(name).await?;
        let now = now_ms();
        let record = Record {
            kind: match value {
                SecretValue::String(_) => "string".into(),
                SecretValue::Bytes(_) => "bytes".into(),
            },
            readers,
            version: previous.as_ref().map_or(1, |p| p.version + 1),
            created_ms: previous.as_ref().map_or(now, |p| p.created_ms),
            updated_ms: now,
            sender: sender.public_key(),
            sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
        };
        let body = serde_json::to_vec(&record).map_err(|e| SealError::Seal(e.to_string()))?;
        self.kv
            .put(format!("{SECRET_KEY_PREFIX}{name}"), body.into())
            .await
            .map_err(|e| self.js_err(e))?;
        Ok(info(name, &record))
    }

    /// Deletes secret `name`; whether it existed.
    pub async fn delete(&self, name: &str) -> Result<bool, SecretStoreError> {
        validate_name("secret name", name)?;
        let existed = self.info(name).await?.is_some();
        if existed {
            self.kv
                .purge(format!("{SECRET_KEY_PREFIX}{name}"))
                .await
                .map_err(|e| self.js_err(e))?;
        }
        Ok(existed)
    }

    async fn record(&self, name: &str) -> Result<Option<Record>, SecretStoreError> {
        let Some(bytes) = self
            .kv
            .get(format!("{SECRET_KEY_PREFIX}{name}"))
            .await
            .map_err(|e| self.js_err(e))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| SecretStoreError::Corrupt {
                name: name.into(),
                why: e.to_string(),
            })
    }

    /// Secret `name` without its value.
    pub async fn info(&self, name: &str) -> Result<Option<SecretInfo>, SecretStoreError> {
        Ok(self.record(name).await?.map(|r| info(name, &r)))
    }

    /// Every secret, without values, by name.
    pub async fn list(&self) -> Result<Vec<SecretInfo>, SecretStoreError> {
        let mut keys = self.kv.keys().await.map_err(|e| self.js_err(e))?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| self.js_err(e))?;
            if let Some(name) = key.strip_prefix(SECRET_KEY_PREFIX) {
                names.push(name.to_string());
            }
        }
        names.sort();
        let mut out = Vec::new();
        for name in names {
            if let Some(i) = self.info(&name).await? {
                out.push(i);
            }
        }
        Ok(out)
    }

    /// Secret `name`'s value for `reader`, opened with the store's `key`, if the policy lets
    /// `reader` read it.
    pub async fn read(
        &self,
        key: &XKeyPair,
        name: &str,
        reader: &str,
    ) -> Result<SecretValue, SecretStoreError> {
        validate_name("secret name", name)?;
        let record = self
            .record(name)
            .await?
            .ok_or_else(|| SecretStoreError::NotFound(name.into()))?;
        let corrupt = |why: String| SecretStoreError::Corrupt {
            name: name.into(),
            why,
        };
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&record.sealed)
            .map_err(|e| corrupt(e.to_string()))?;
        let plain = key.open(&sealed, &record.sender).map_err(|e| match e {
            SealError::Open(_) => corrupt(format!(
                "it does not open with key {} (sealed to another store key, or altered)",
                key.public_key()
            )),
            other => other.into(),
        })?;
        let payload: Payload =
            serde_json::from_slice(&plain).map_err(|e| corrupt(e.to_string()))?;
        if payload.name != name || payload.readers != record.readers {
            return Err(corrupt(
                "its sealed name or readers differ from the record's (copied or edited)".into(),
            ));
        }
        if !payload.readers.iter().any(|r| r == reader) {
            return Err(SecretStoreError::Denied {
                name: name.into(),
                reader: reader.into(),
                readers: if payload.readers.is_empty() {
                    "none".into()
                } else {
                    payload.readers.join(", ")
                },
            });
        }
        Ok(payload.value)
    }
}

fn info(name: &str, r: &Record) -> SecretInfo {
    SecretInfo {
        name: name.into(),
        kind: r.kind.clone(),
        readers: r.readers.clone(),
        version: r.version,
        created_ms: r.created_ms,
        updated_ms: r.updated_ms,
    }
}

/// Reads an xkey seed from `path`; with `create`, a missing file is made with a new key
/// (readable by its owner only).
pub fn load_key(path: &std::path::Path, create: bool) -> Result<XKeyPair, KeyFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => XKeyPair::from_seed(&Secret::new(text.trim())).map_err(|e| KeyFileError {
            path: path.to_path_buf(),
            why: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let key = XKeyPair::generate();
            let seed = key.seed().ok_or_else(|| KeyFileError {
                path: path.to_path_buf(),
                why: "a new key has no seed".into(),
            })?;
            write_private(path, seed.expose()).map_err(|e| KeyFileError {
                path: path.to_path_buf(),
                why: e.to_string(),
            })?;
            Ok(key)
        }
        Err(e) => Err(KeyFileError {
            path: path.to_path_buf(),
            why: e.to_string(),
        }),
    }
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")
}

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("secret store key {}: {why}", path.display())]
pub struct KeyFileError {
    /// The file.
    pub path: std::path::PathBuf,
    /// Why.
    pub why: String,
}
