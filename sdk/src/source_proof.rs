//! Proof that a call's `source-id` is really its caller's.
//!
//! 1.x trusts the `source-id` header: anyone who may publish to a target can name any
//! source, and so use that source's link (its config, its buckets). NATS permissions (see
//! `trellis_host::nats_auth`) narrow who may call a target, not whom they claim to be. So a
//! lattice may record, per source, the public nkeys allowed to speak for it (in its
//! specification in the lattice store, see [`crate::store::ComponentSpec::source_keys`]);
//! a caller then signs `(lattice, source, target, expiry)` with its identity's nkey and
//! sends the proof in the [`SOURCE_PROOF_HEADER`] header. The receiver refuses a call naming
//! a source that has keys unless the proof verifies with one of them. A source with no
//! recorded keys (a 1.x caller, which cannot sign) is taken at its word, as in 1.x.
//!
//! A proof is valid for [`PROOF_LIFETIME`]; callers sign once per target and lifetime, and
//! receivers remember proofs they verified, so a call pays a map lookup, not a signature.
//! A proof is only as secret as the calls it rides on: NATS permissions keep others from
//! subscribing to a target's subjects, where it could be overheard and replayed.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;

use crate::secret::Secret;

pub use crate::subjects::SOURCE_PROOF_HEADER;

/// How long a proof is valid.
pub const PROOF_LIFETIME: Duration = Duration::from_secs(600);

/// Most verified proofs a receiver remembers (then it forgets them all and verifies anew).
const REMEMBERED: usize = 4096;

/// Why a call's source is not proven. Names keys and sources, never seeds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The source has keys, and the call carries no proof.
    #[error(
        "source {source_id} is not proven: the lattice records keys for it, and the call carries no {SOURCE_PROOF_HEADER} header"
    )]
    Missing {
        /// The claimed source.
        source_id: String,
    },
    /// The proof is not of the proof's shape.
    #[error("source {source_id} is not proven: the proof is malformed")]
    Malformed {
        /// The claimed source.
        source_id: String,
    },
    /// The proof is signed by a key that may not speak for the source.
    #[error("source {source_id} is not proven: key {key} may not speak for it")]
    NotAKey {
        /// The claimed source.
        source_id: String,
        /// The signing key.
        key: String,
    },
    /// The proof expired.
    #[error("source {source_id} is not proven: the proof expired")]
    Expired {
        /// The claimed source.
        source_id: String,
    },
    /// The signature does not verify (another lattice, source or target, or altered).
    #[error("source {source_id} is not proven: the signature does not verify")]
    BadSignature {
        /// The claimed source.
        source_id: String,
    },
    /// The signing key is unusable.
    #[error("cannot sign source proofs: {0}")]
    Key(String),
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn message(lattice: &str, source: &str, target: &str, expiry: u64) -> String {
    format!("trellis-source-proof|{lattice}|{source}|{target}|{expiry}")
}

/// Signs proofs for the sources one identity speaks for.
pub struct ProofSigner {
    key: KeyPair,
    lattice: String,
    /// (source, target) → (proof, expiry): signed once per lifetime.
    cache: Mutex<HashMap<(String, String), (String, u64)>>,
}

impl std::fmt::Debug for ProofSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProofSigner({})", self.key.public_key())
    }
}

impl ProofSigner {
    /// A signer with the nkey `seed` (a user seed, `SU…`) on `lattice`.
    pub fn new(seed: &Secret, lattice: &str) -> Result<Self, ProofError> {
        let key =
            KeyPair::from_seed(seed.expose().trim()).map_err(|e| ProofError::Key(e.to_string()))?;
        Ok(Self {
            key,
            lattice: lattice.to_string(),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The public key receivers check proofs with.
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// A proof that this identity speaks for `source` calling `target`.
    pub fn proof(&self, source: &str, target: &str) -> String {
        let now = now_secs();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let key = (source.to_string(), target.to_string());
        if let Some((proof, expiry)) = cache.get(&key) {
            // Renewed halfway through its life, so a proof never expires in flight.
            if *expiry > now + PROOF_LIFETIME.as_secs() / 2 {
                return proof.clone();
            }
        }
        let expiry = now + PROOF_LIFETIME.as_secs();
        let signed = message(&self.lattice, source, target, expiry);
        // Signing with a seeded key does not fail; an empty signature would not verify.
        let signature = self.key.sign(signed.as_bytes()).unwrap_or_default();
        let proof = format!(
            "{}.{expiry}.{}",
            self.key.public_key(),
            URL_SAFE_NO_PAD.encode(signature)
        );
        if cache.len() >= REMEMBERED {
            cache.clear();
        }
        cache.insert(key, (proof.clone(), expiry));
        proof
    }
}

/// Checks the proofs of calls to one target against the keys the lattice records.
#[derive(Debug, Default)]
pub struct ProofChecker {
    /// Source id → the keys that may speak for it.
    keys: RwLock<HashMap<String, Vec<String>>>,
    /// Proofs verified already → their expiry.
    verified: Mutex<HashMap<String, u64>>,
}

impl ProofChecker {
    /// Replaces the recorded keys (what the lattice store says now).
    pub fn set_keys(&self, keys: HashMap<String, Vec<String>>) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        // A key taken away must stop working at once.
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Whether a call to `target` on `lattice` may claim `source`, given its `proof` header.
    pub fn check(
        &self,
        lattice: &str,
        source: &str,
        target: &str,
        proof: Option<&str>,
    ) -> Result<(), ProofError> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let Some(allowed) = keys.get(source).filter(|k| !k.is_empty()) else {
            return Ok(());
        };
        let source_id = source.to_string();
        let Some(proof) = proof else {
            return Err(ProofError::Missing { source_id });
        };
        let now = now_secs();
        let mut parts = proof.splitn(3, '.');
        let (Some(key), Some(expiry), Some(signature)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(ProofError::Malformed { source_id });
        };
        let Ok(expiry) = expiry.parse::<u64>() else {
            return Err(ProofError::Malformed { source_id });
        };
        if !allowed.iter().any(|k| k == key) {
            return Err(ProofError::NotAKey {
                source_id,
                key: key.chars().take(64).collect(),
            });
        }
        if expiry <= now {
            return Err(ProofError::Expired { source_id });
        }
        // The proof names its key and expiry, and lattice, source and target are part of
        // what is signed: remembering the whole proof with them is exact.
        let remembered = format!("{lattice}|{source}|{target}|{proof}");
        {
            let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if verified.get(&remembered).is_some_and(|e| *e > now) {
                return Ok(());
            }
        }
        let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
            return Err(ProofError::Malformed { source_id });
        };
        let Ok(public) = KeyPair::from_public_key(key) else {
            return Err(ProofError::Malformed { source_id });
        };
        let signed = message(lattice, source, target, expiry);
        if public.verify(signed.as_bytes(), &signature).is_err() {
            return Err(ProofError::BadSignature { source_id });
        }
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= REMEMBERED {
            verified.clear();
        }
        verified.insert(remembered, expiry);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> (ProofSigner, String) {
        let key = KeyPair::new_user();
        let seed = Secret::new(key.seed().unwrap());
        let s = ProofSigner::new(&seed, "lat").unwrap();
        let public = s.public_key();
        (s, public)
    }

    #[test]
    fn only_a_recorded_key_proves_a_source() {
        let (a, a_key) = signer();
        let (b, b_key) = signer();
        let checker = ProofChecker::default();
        checker.set_keys(HashMap::from([
            ("comp-a".to_string(), vec![a_key]),
            ("comp-b".to_string(), vec![b_key]),
        ]));
        let proof = a.proof("comp-a", "kv");
        assert_eq!(checker.check("lat", "comp-a", "kv", Some(&proof)), Ok(()));
        // Again: remembered.
        assert_eq!(checker.check("lat", "comp-a", "kv", Some(&proof)), Ok(()));
        // b claims a.
        let forged = b.proof("comp-a", "kv");
        assert!(matches!(
            checker.check("lat", "comp-a", "kv", Some(&forged)),
            Err(ProofError::NotAKey { .. })
        ));
        // a's proof for one target or lattice is not one for another.
        assert!(matches!(
            checker.check("lat", "comp-a", "other", Some(&proof)),
            Err(ProofError::BadSignature { .. })
        ));
        assert!(matches!(
            checker.check("other", "comp-a", "kv", Some(&proof)),
            Err(ProofError::BadSignature { .. })
        ));
        assert!(matches!(
            checker.check("lat", "comp-a", "kv", None),
            Err(ProofError::Missing { .. })
        ));
        for bad in ["", "x", "a.b.c", &format!("{}.1.AAAA", a.public_key())] {
            assert!(
                checker.check("lat", "comp-a", "kv", Some(bad)).is_err(),
                "{bad}"
            );
        }
        // A source with no recorded keys is taken at its word (1.x).
        assert_eq!(checker.check("lat", "legacy", "kv", None), Ok(()));
        // A key taken away stops working at once.
        checker.set_keys(HashMap::from([(
            "comp-a".to_string(),
            vec!["UNOPE".into()],
        )]));
        assert!(checker.check("lat", "comp-a", "kv", Some(&proof)).is_err());
    }

    #[test]
    fn an_altered_expiry_breaks_the_signature() {
        let (a, a_key) = signer();
        let checker = ProofChecker::default();
        checker.set_keys(HashMap::from([("c".to_string(), vec![a_key.clone()])]));
        let proof = a.proof("c", "t");
        let mut parts: Vec<&str> = proof.split('.').collect();
        let later = (parts[1].parse::<u64>().unwrap() + 1000).to_string();
        parts[1] = &later;
        let altered = parts.join(".");
        assert!(matches!(
            checker.check("lat", "c", "t", Some(&altered)),
            Err(ProofError::BadSignature { .. })
        ));
        let expired = format!("{a_key}.1.{}", parts[2]);
        assert!(matches!(
            checker.check("lat", "c", "t", Some(&expired)),
            Err(ProofError::Expired { .. })
        ));
    }
}
