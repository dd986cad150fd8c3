//! Secrets on the wire: references to them in named config, sealed maps of them for one
//! provider instance, and the request a provider sends its host for a link's secrets.
//!
//! A secret's value never travels in the clear. A host that starts a provider gives it an
//! x25519 key pair of its own (an *xkey*, in 1.x host data as `provider_xkey_private_key`)
//! and the host's public xkey (`host_xkey_public_key`); the host seals each link's secrets
//! (`source_secrets`/`target_secrets`, the JSON map 1.x sends) from its key to the
//! provider's, so only that provider instance can open them — the same format a 1.x host
//! uses, so 1.x providers open them too.
//!
//! Links name secrets the 1.x way: a config name starting with `SECRET_` in a link's
//! `source_config`/`target_config` is a [`SecretReference`] (stored as named config), whose
//! `name` is the key the provider sees the value under and whose `key` names the secret in
//! the lattice's secret store.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::host_data::SecretValue;
use crate::link::LinkKey;
use crate::secret::Secret;

/// A secret map as sealed for a provider: what it sees each secret as → the value (*1.x*).
pub type SecretMap = HashMap<String, SecretValue>;

/// *1.x*: the `type` of a secret reference in named config.
pub const SECRET_REFERENCE_TYPE: &str = "secret.wasmcloud.dev/v1alpha1";

/// The secret backend Trellis hosts serve: the lattice's own secret store.
pub const TRELLIS_BACKEND: &str = "trellis";

/// *1.x*: the `policy` field of a reference that carries no backend policy (a JSON string).
const EMPTY_POLICY: &str = r#"{"type":"properties.secret.wasmcloud.dev/v1alpha1","properties":{}}"#;

/// Why secrets could not be sealed, opened or referenced.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// A key is not a valid xkey.
    #[error("invalid {what}: {message}")]
    Key {
        /// Which key.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// Sealing failed.
    #[error("cannot seal secrets: {0}")]
    Seal(String),
    /// The sealed bytes do not open with these keys.
    #[error(
        "cannot open sealed secrets: they were sealed for another key, by another sender, or altered ({0})"
    )]
    Open(String),
    /// Opened bytes are not a secret map.
    #[error("sealed secrets do not hold a secret map: {0}")]
    Shape(String),
    /// Named config that should be a secret reference is not one.
    #[error("named config {name} is not a secret reference: {why}")]
    Reference {
        /// The config name.
        name: String,
        /// What is missing or wrong.
        why: String,
    },
}

/// An x25519 key pair (or only a public key) for sealing; the private half is never printed.
pub struct XKeyPair(nkeys::XKey);

impl std::fmt::Debug for XKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "XKeyPair({})", self.0.public_key())
    }
}

impl XKeyPair {
    /// A new random key pair.
    pub fn generate() -> Self {
        Self(nkeys::XKey::new())
    }

    /// The key pair of a seed (`SX…`).
    pub fn from_seed(seed: &Secret) -> Result<Self, SealError> {
        nkeys::XKey::from_seed(seed.expose().trim())
            .map(Self)
            .map_err(|e| SealError::Key {
                what: "xkey seed",
                message: e.to_string(),
            })
    }

    /// A public key only (`X…`): can be sealed to, cannot open.
    pub fn from_public_key(public: &str) -> Result<Self, SealError> {
        nkeys::XKey::from_public_key(public.trim())
            .map(Self)
            .map_err(|e| SealError::Key {
                what: "xkey public key",
                message: e.to_string(),
            })
    }

    /// The public key (`X…`), safe to show.
    pub fn public_key(&self) -> String {
        self.0.public_key()
    }

    /// The seed (`SX…`); `None` for a public key only.
    pub fn seed(&self) -> Option<Secret> {
        self.0.seed().ok().map(Secret::new)
    }

    /// Seals `plain` from this key pair to `recipient`'s public key.
    pub fn seal(&self, plain: &[u8], recipient: &str) -> Result<Vec<u8>, SealError> {
        let to = Self::from_public_key(recipient)?;
        self.0
            .seal(plain, &to.0)
            .map_err(|e| SealError::Seal(e.to_string()))
    }

    /// Opens what `sender` (a public key) sealed to this key pair.
    pub fn open(&self, sealed: &[u8], sender: &str) -> Result<Vec<u8>, SealError> {
        let from = Self::from_public_key(sender)?;
        self.0
            .open(sealed, &from.0)
            .map_err(|e| SealError::Open(e.to_string()))
    }

    /// Seals a secret map (its 1.x JSON) to `recipient`.
    pub fn seal_map(&self, map: &SecretMap, recipient: &str) -> Result<Vec<u8>, SealError> {
        let json = serde_json::to_vec(map).map_err(|e| SealError::Seal(e.to_string()))?;
        self.seal(&json, recipient)
    }

    /// Opens a secret map `sender` sealed to this key pair.
    pub fn open_map(&self, sealed: &[u8], sender: &str) -> Result<SecretMap, SealError> {
        let json = self.open(sealed, sender)?;
        serde_json::from_slice(&json).map_err(|e| SealError::Shape(e.to_string()))
    }
}

/// *1.x*: a secret reference, stored as named config under a `SECRET_` name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretReference {
    /// What the component or provider sees the secret as (the key in its secret map).
    pub name: String,
    /// The backend holding it ([`TRELLIS_BACKEND`] for the lattice's secret store).
    pub backend: String,
    /// Its name in the backend.
    pub key: String,
}

impl SecretReference {
    /// A reference to `key` in the lattice's secret store, seen as `name`.
    pub fn to_store(name: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            backend: TRELLIS_BACKEND.into(),
            key: key.into(),
        }
    }

    /// The named config holding this reference (the 1.x string map).
    pub fn to_config(&self) -> HashMap<String, String> {
        HashMap::from([
            ("name".into(), self.name.clone()),
            ("type".into(), SECRET_REFERENCE_TYPE.into()),
            ("backend".into(), self.backend.clone()),
            ("key".into(), self.key.clone()),
            ("policy".into(), EMPTY_POLICY.into()),
        ])
    }

    /// The reference stored as named config `config_name`.
    pub fn from_config(
        config_name: &str,
        config: &HashMap<String, String>,
    ) -> Result<Self, SealError> {
        let field = |f: &str| {
            config
                .get(f)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or_else(|| SealError::Reference {
                    name: config_name.into(),
                    why: format!("it has no {f:?}"),
                })
        };
        Ok(Self {
            name: field("name")?,
            backend: field("backend")?,
            key: field("key")?,
        })
    }
}

/// What a provider asks its host for: the secrets of its side of one link, sealed to the
/// instance's xkey.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSecretsRequest {
    /// The asking provider.
    pub provider_id: String,
    /// The link.
    pub link: LinkKey,
}

/// The host's answer: the sealed map, or why not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSecretsReply {
    /// The provider's side of the link, sealed from the host's xkey to the instance's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<Vec<u8>>,
    /// Why the secrets were not given (no value in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> SecretMap {
        HashMap::from([
            (
                "password".into(),
                SecretValue::String(Secret::new("hunter2")),
            ),
            ("cert".into(), SecretValue::Bytes(vec![0, 255, 7])),
        ])
    }

    #[test]
    fn only_the_recipient_opens_what_the_sender_sealed() {
        let host = XKeyPair::generate();
        let provider = XKeyPair::generate();
        let sealed = host.seal_map(&map(), &provider.public_key()).unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        let opened = provider.open_map(&sealed, &host.public_key()).unwrap();
        assert_eq!(opened, map());

        let other = XKeyPair::generate();
        let err = other.open_map(&sealed, &host.public_key()).unwrap_err();
        assert!(matches!(err, SealError::Open(_)), "{err}");
        let forged = other.seal_map(&map(), &provider.public_key()).unwrap();
        let err = provider.open_map(&forged, &host.public_key()).unwrap_err();
        assert!(matches!(err, SealError::Open(_)), "{err}");
        let mut altered = sealed.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(provider.open_map(&altered, &host.public_key()).is_err());
    }

    #[test]
    fn seeds_round_trip_and_are_never_printed() {
        let key = XKeyPair::generate();
        let seed = key.seed().unwrap();
        let again = XKeyPair::from_seed(&seed).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        assert!(!format!("{key:?}").contains(seed.expose()));
        let public = XKeyPair::from_public_key(&key.public_key()).unwrap();
        assert!(public.seed().is_none());
        assert!(matches!(
            XKeyPair::from_seed(&Secret::new("SXnope")),
            Err(SealError::Key { .. })
        ));
        let sealed = key.seal(b"x", &key.public_key()).unwrap();
        assert!(public.open(&sealed, &key.public_key()).is_err());
    }

    #[test]
    fn references_are_1x_named_config() {
        let r = SecretReference::to_store("password", "redis-password");
        let config = r.to_config();
        assert_eq!(config["type"], SECRET_REFERENCE_TYPE);
        assert_eq!(config["backend"], "trellis");
        let policy: serde_json::Value = serde_json::from_str(&config["policy"]).unwrap();
        assert_eq!(policy["properties"], serde_json::json!({}));
        assert_eq!(
            SecretReference::from_config("SECRET_x", &config).unwrap(),
            r
        );
        let mut missing = config.clone();
        missing.remove("key");
        let err = SecretReference::from_config("SECRET_x", &missing).unwrap_err();
        assert!(err.to_string().contains("SECRET_x") && err.to_string().contains("key"));
    }
}
