//! Link secrets for the providers this host starts: resolved from the secret store under its
//! policy, sealed to one provider instance.
//!
//! Every provider start gets a fresh xkey pair (its private half in the host data, as 1.x
//! does); the host keeps only the public half. A link whose provider side names secrets
//! (`SECRET_*` references) gets them sealed from this host's xkey to that instance's: in the
//! host data at start, and on request afterwards (a Trellis provider that pulls a new link
//! asks on [`LatticeSubjects::link_secrets`]). The answer is sealed to the key this host gave
//! the instance it started under that id — not to any key in the request — so asking in a
//! provider's name yields nothing anyone else can open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use tokio::task::JoinHandle;
use tracing::{debug, warn};
use trellis_sdk::link::LinkKey;
use trellis_sdk::sealing::{
    LinkSecretsReply, LinkSecretsRequest, SecretMap, SecretReference, TRELLIS_BACKEND, XKeyPair,
};
use trellis_sdk::store::{LatticeStore, StoredLink};
use trellis_sdk::subjects::LatticeSubjects;

use crate::secret_store::SecretStore;

/// The secret store a host reads from, with the key that opens it.
#[derive(Clone, Debug)]
pub struct StoreAccess {
    /// The store.
    pub store: SecretStore,
    /// Its key.
    pub key: Arc<XKeyPair>,
}

/// What a host needs to seal link secrets for its providers.
#[derive(Debug)]
pub(crate) struct LinkSealer {
    lattice_store: LatticeStore,
    secrets: Option<StoreAccess>,
    host_key: XKeyPair,
    /// Provider id → the public xkey of the instance this host started last under that id.
    instances: Mutex<HashMap<String, String>>,
}

impl LinkSealer {
    pub(crate) fn new(lattice_store: LatticeStore, secrets: Option<StoreAccess>) -> Self {
        Self {
            lattice_store,
            secrets,
            host_key: XKeyPair::generate(),
            instances: Mutex::new(HashMap::new()),
        }
    }

    /// The secret store and its key, when the host has the key.
    pub(crate) fn store_access(&self) -> Option<&StoreAccess> {
        self.secrets.as_ref()
    }

    /// This host's public xkey (1.x `host_xkey_public_key`).
    pub(crate) fn host_public_key(&self) -> String {
        self.host_key.public_key()
    }

    /// A fresh key pair for a new instance of `provider_id`, remembered as the one to seal to.
    pub(crate) fn new_instance(&self, provider_id: &str) -> XKeyPair {
        let key = XKeyPair::generate();
        self.instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(provider_id.to_string(), key.public_key());
        key
    }

    /// The provider side of link `key`'s secrets, sealed for `provider_id`'s instance.
    pub(crate) async fn sealed_for(
        &self,
        provider_id: &str,
        key: &LinkKey,
    ) -> Result<Vec<u8>, String> {
        let instance = self
            .instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(provider_id)
            .cloned()
            .ok_or_else(|| format!("this host did not start provider {provider_id}"))?;
        let map = self.resolve(provider_id, key).await?;
        self.host_key
            .seal_map(&map, &instance)
            .map_err(|e| e.to_string())
    }

    /// The secrets of `provider_id`'s side of link `key`, as the store's policy allows.
    async fn resolve(&self, provider_id: &str, key: &LinkKey) -> Result<SecretMap, String> {
        if key.source_id != provider_id && key.target != provider_id {
            return Err(format!(
                "provider {provider_id} is not an end of link {key}"
            ));
        }
        let link = self.stored_link(key).await?;
        let references = link.secret_references(provider_id);
        let access = match (&self.secrets, references.is_empty()) {
            (_, true) => return Ok(SecretMap::new()),
            (Some(access), false) => access,
            (None, false) => {
                return Err(
                    "this host has no secret store key (start it with --secrets-key)".into(),
                );
            }
        };
        let mut map = SecretMap::new();
        for config_name in references {
            let config = self
                .lattice_store
                .config(config_name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("secret reference {config_name} does not exist"))?;
            let reference =
                SecretReference::from_config(config_name, &config).map_err(|e| e.to_string())?;
            if reference.backend != TRELLIS_BACKEND {
                return Err(format!(
                    "secret reference {config_name} names backend {:?}; Trellis hosts serve \
                     only {TRELLIS_BACKEND:?} (the lattice's secret store)",
                    reference.backend
                ));
            }
            let value = access
                .store
                .read(&access.key, &reference.key, provider_id)
                .await
                .map_err(|e| e.to_string())?;
            map.insert(reference.name, value);
        }
        Ok(map)
    }

    /// The stored link `key` identifies.
    async fn stored_link(&self, key: &LinkKey) -> Result<StoredLink, String> {
        let spec = self
            .lattice_store
            .component(&key.source_id)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        spec.links
            .into_iter()
            .find(|l| {
                let mut interfaces = l.interfaces.clone();
                interfaces.sort();
                interfaces.dedup();
                l.target == key.target
                    && l.name == key.name
                    && l.wit_namespace == key.wit_namespace
                    && l.wit_package == key.wit_package
                    && interfaces == key.interfaces
            })
            .ok_or_else(|| format!("no link {key} in the lattice store"))
    }
}

/// Answers providers' requests for link secrets addressed to `host_id`.
pub(crate) async fn answer(
    nats: async_nats::Client,
    subjects: &LatticeSubjects,
    host_id: &str,
    sealer: Arc<LinkSealer>,
) -> Result<JoinHandle<()>, async_nats::SubscribeError> {
    let mut requests = nats.subscribe(subjects.link_secrets(host_id)).await?;
    Ok(tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            let Some(reply_to) = msg.reply else { continue };
            let reply = match serde_json::from_slice::<LinkSecretsRequest>(&msg.payload) {
                Ok(request) => match sealer.sealed_for(&request.provider_id, &request.link).await {
                    Ok(sealed) => {
                        debug!(provider = request.provider_id, link = %request.link, "link secrets sealed");
                        LinkSecretsReply {
                            sealed: Some(sealed),
                            error: None,
                        }
                    }
                    Err(error) => {
                        warn!(provider = request.provider_id, link = %request.link, %error, "link secrets refused");
                        LinkSecretsReply {
                            sealed: None,
                            error: Some(error),
                        }
                    }
                },
                Err(err) => LinkSecretsReply {
                    sealed: None,
                    error: Some(format!("not a link secrets request: {err}")),
                },
            };
            match serde_json::to_vec(&reply) {
                Ok(body) => {
                    if let Err(err) = nats.publish(reply_to, body.into()).await {
                        warn!(%err, "cannot answer a link secrets request");
                    }
                }
                Err(err) => warn!(%err, "cannot encode a link secrets answer"),
            }
        }
    }))
}
