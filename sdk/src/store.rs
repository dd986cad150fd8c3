//! The lattice store: links and named config in JetStream KV (*1.x* layout).
//!
//! Links live in the `LATTICEDATA_{lattice}` bucket inside the specification of their source
//! (`COMPONENT_{source_id}` → `{"url": …, "links": [...]}`), naming their config by reference;
//! named config lives in `CONFIGDATA_{lattice}` (`{name}` → JSON string map). This is what a
//! 1.x host reads and writes, so links put by either kind of host reach Trellis providers and
//! the other way round.
//!
//! Providers *pull* from here at start and follow changes (see [`LatticeStore::links_for`] and
//! [`LatticeStore::watch`]); the Trellis host and CLI write through the same type.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_nats::jetstream::{self, kv};
use futures::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};

use crate::link::{LinkDefinition, LinkKey};
use crate::subjects::{COMPONENT_KEY_PREFIX, LatticeSubjects};

/// A link as stored in a component specification: config by name (*1.x* `Link`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLink {
    /// The caller.
    pub source_id: String,
    /// The callee.
    pub target: String,
    /// Link name.
    #[serde(default = "default_name")]
    pub name: String,
    /// WIT namespace.
    pub wit_namespace: String,
    /// WIT package.
    pub wit_package: String,
    /// Interfaces.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Names of the named config for the source side.
    #[serde(default)]
    pub source_config: Vec<String>,
    /// Names of the named config for the target side.
    #[serde(default)]
    pub target_config: Vec<String>,
    /// Names of secrets for the source side.
    #[serde(default)]
    pub source_secrets: Vec<String>,
    /// Names of secrets for the target side.
    #[serde(default)]
    pub target_secrets: Vec<String>,
}

/// *1.x*: named config whose name starts with this is a secret reference.
pub const SECRET_PREFIX: &str = "SECRET_";

impl StoredLink {
    /// A link from `source_id` to `target` for `interfaces` of `wit_namespace:wit_package`,
    /// named `default`, with no config.
    pub fn new(
        source_id: impl Into<String>,
        target: impl Into<String>,
        wit_namespace: impl Into<String>,
        wit_package: impl Into<String>,
        interfaces: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            source_id: source_id.into(),
            target: target.into(),
            name: default_name(),
            wit_namespace: wit_namespace.into(),
            wit_package: wit_package.into(),
            interfaces: interfaces.into_iter().map(Into::into).collect(),
            source_config: Vec::new(),
            target_config: Vec::new(),
            source_secrets: Vec::new(),
            target_secrets: Vec::new(),
        }
    }

    /// The same link under link name `name`.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The same link with the source side configured by the named config `names` (how a
    /// provider that calls components, such as http-server, gets its per-link settings).
    pub fn with_source_config(
        mut self,
        names: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.source_config = names.into_iter().map(Into::into).collect();
        self
    }

    /// The same link with the target side configured by the named config `names`.
    pub fn with_target_config(
        mut self,
        names: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.target_config = names.into_iter().map(Into::into).collect();
        self
    }
}

impl StoredLink {
    /// The secret references (`SECRET_*` config names) of the side of the link `provider_id`
    /// is on: the target side when it is the target, else the source side.
    pub fn secret_references(&self, provider_id: &str) -> Vec<&String> {
        let side = if self.target == provider_id {
            &self.target_config
        } else {
            &self.source_config
        };
        side.iter()
            .filter(|n| n.starts_with(SECRET_PREFIX))
            .collect()
    }
}

fn default_name() -> String {
    crate::link::DEFAULT_LINK_NAME.to_string()
}

/// The links of one provider, as [`LatticeStore::links_for`] finds them.
#[derive(Debug, Default)]
pub struct ProviderLinks {
    /// Links whose config resolved (secrets not yet sealed in).
    pub links: BTreeMap<LinkKey, LinkDefinition>,
    /// Those of `links` whose side of the provider names secrets (`SECRET_*` config), which
    /// only a host holding the secret store's key can seal for the provider.
    pub needing_secrets: BTreeSet<LinkKey>,
    /// Links whose config could not be resolved, with why.
    pub broken: Vec<(StoredLink, StoreError)>,
    /// The keys that may speak for each source that has some (see
    /// [`crate::source_proof`]).
    pub source_keys: HashMap<String, Vec<String>>,
}

/// A component (or provider) specification: where it comes from and its outgoing links.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentSpec {
    /// Image reference or path.
    #[serde(default)]
    pub url: String,
    /// Links where this component is the source.
    #[serde(default)]
    pub links: Vec<StoredLink>,
    /// *Trellis*: the public nkeys that may speak for this source (see
    /// [`crate::source_proof`]); none: calls naming it are taken at their word (1.x).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_keys: Vec<String>,
    /// *Trellis*: set when this id is an external service the lattice declares (one that
    /// joins on its own), with what it serves and calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalSpec>,
}

/// An external service as the lattice declares it: the interfaces it serves and calls
/// (`namespace:package/interface,…`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalSpec {
    /// What it serves.
    #[serde(default)]
    pub exports: Vec<String>,
    /// What it calls.
    #[serde(default)]
    pub imports: Vec<String>,
}

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// JetStream refused an operation.
    #[error("lattice store ({bucket}): {message}")]
    JetStream {
        /// The bucket.
        bucket: String,
        /// What failed.
        message: String,
    },
    /// A stored value is not what 1.x writes there.
    #[error("lattice store: value of {key} is not valid: {source}")]
    Corrupt {
        /// The key.
        key: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A link names config that does not exist.
    #[error("link {link} names config {name:?}, which does not exist")]
    MissingConfig {
        /// The link.
        link: String,
        /// The missing config name.
        name: String,
    },
}

fn js_err(bucket: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::JetStream {
        bucket: bucket.to_string(),
        message: err.to_string(),
    }
}

/// The two KV buckets of one lattice.
#[derive(Clone, Debug)]
pub struct LatticeStore {
    data: kv::Store,
    config: kv::Store,
    data_bucket: String,
    config_bucket: String,
}

/// Which bucket a watch event came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    /// `LATTICEDATA_{lattice}`.
    Data,
    /// `CONFIGDATA_{lattice}`.
    Config,
}

async fn open_bucket(js: &jetstream::Context, bucket: &str) -> Result<kv::Store, StoreError> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let created = js
        .create_key_value(kv::Config {
            bucket: bucket.to_string(),
            history: 1,
            storage: jetstream::stream::StorageType::File,
            ..kv::Config::default()
        })
        .await;
    match created {
        Ok(store) => Ok(store),
        // Another process may have created it in between.
        Err(create_err) => js
            .get_key_value(bucket)
            .await
            .map_err(|_| js_err(bucket, create_err)),
    }
}

impl LatticeStore {
    /// Opens (creating if missing) the lattice's buckets.
    pub async fn open(
        nats: &async_nats::Client,
        subjects: &LatticeSubjects,
    ) -> Result<Self, StoreError> {
        let js = jetstream::new(nats.clone());
        let data_bucket = subjects.lattice_data_bucket();
        let config_bucket = subjects.config_data_bucket();
        let data = open_bucket(&js, &data_bucket).await?;
        let config = open_bucket(&js, &config_bucket).await?;
        Ok(Self {
            data,
            config,
            data_bucket,
            config_bucket,
        })
    }

    /// The specification of `component_id`, if stored.
    pub async fn component(&self, component_id: &str) -> Result<Option<ComponentSpec>, StoreError> {
        let key = format!("{COMPONENT_KEY_PREFIX}{component_id}");
        let Some(bytes) = self
            .data
            .get(key.clone())
            .await
            .map_err(|e| js_err(&self.data_bucket, e))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Corrupt { key, source })
    }

    /// Stores the specification of `component_id`.
    pub async fn put_component(
        &self,
        component_id: &str,
        spec: &ComponentSpec,
    ) -> Result<(), StoreError> {
        let key = format!("{COMPONENT_KEY_PREFIX}{component_id}");
        let body = serde_json::to_vec(spec).map_err(|source| StoreError::Corrupt {
            key: key.clone(),
            source,
        })?;
        self.data
            .put(key, body.into())
            .await
            .map_err(|e| js_err(&self.data_bucket, e))?;
        Ok(())
    }

    /// Named config `name`, if stored.
    pub async fn config(&self, name: &str) -> Result<Option<HashMap<String, String>>, StoreError> {
        let Some(bytes) = self
            .config
            .get(name)
            .await
            .map_err(|e| js_err(&self.config_bucket, e))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Corrupt {
                key: name.to_string(),
                source,
            })
    }

    /// Stores named config `name`.
    pub async fn put_config(
        &self,
        name: &str,
        values: &HashMap<String, String>,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_vec(values).map_err(|source| StoreError::Corrupt {
            key: name.to_string(),
            source,
        })?;
        self.config
            .put(name, body.into())
            .await
            .map_err(|e| js_err(&self.config_bucket, e))?;
        Ok(())
    }

    /// Deletes named config `name`.
    pub async fn delete_config(&self, name: &str) -> Result<(), StoreError> {
        self.config
            .delete(name)
            .await
            .map_err(|e| js_err(&self.config_bucket, e))
    }

    /// Puts `link` into its source's specification, replacing a link with the same source,
    /// namespace, package and name (the 1.x identity of a stored link).
    pub async fn put_link(&self, link: StoredLink) -> Result<(), StoreError> {
        let mut spec = self.component(&link.source_id).await?.unwrap_or_default();
        spec.links.retain(|l| {
            !(l.name == link.name
                && l.wit_namespace == link.wit_namespace
                && l.wit_package == link.wit_package)
        });
        let source = link.source_id.clone();
        spec.links.push(link);
        self.put_component(&source, &spec).await
    }

    /// Removes links of `source_id` with that name, namespace and package; returns how many.
    pub async fn delete_link(
        &self,
        source_id: &str,
        name: &str,
        wit_namespace: &str,
        wit_package: &str,
    ) -> Result<usize, StoreError> {
        let Some(mut spec) = self.component(source_id).await? else {
            return Ok(0);
        };
        let before = spec.links.len();
        spec.links.retain(|l| {
            !(l.name == name && l.wit_namespace == wit_namespace && l.wit_package == wit_package)
        });
        let removed = before - spec.links.len();
        if removed > 0 {
            self.put_component(source_id, &spec).await?;
        }
        Ok(removed)
    }

    /// Declares `id` an external service (its specification is created if it has none yet).
    pub async fn set_external(&self, id: &str, external: ExternalSpec) -> Result<(), StoreError> {
        let mut spec = self.component(id).await?.unwrap_or_default();
        spec.external = Some(external);
        self.put_component(id, &spec).await
    }

    /// The external services the lattice declares, by id.
    pub async fn externals(&self) -> Result<Vec<(String, ExternalSpec)>, StoreError> {
        Ok(self
            .specs()
            .await?
            .into_iter()
            .filter_map(|(id, spec)| spec.external.map(|e| (id, e)))
            .collect())
    }

    /// Every stored link, config not resolved.
    pub async fn stored_links(&self) -> Result<Vec<StoredLink>, StoreError> {
        Ok(self
            .specs()
            .await?
            .into_iter()
            .flat_map(|(_, spec)| spec.links)
            .collect())
    }

    /// Every component (or provider) specification, by id. One unreadable record is skipped
    /// (and logged), not allowed to hide the others.
    pub async fn specs(&self) -> Result<Vec<(String, ComponentSpec)>, StoreError> {
        let mut keys = self
            .data
            .keys()
            .await
            .map_err(|e| js_err(&self.data_bucket, e))?;
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| js_err(&self.data_bucket, e))?;
            let Some(id) = key.strip_prefix(COMPONENT_KEY_PREFIX) else {
                continue;
            };
            match self.component(id).await {
                Ok(Some(spec)) => out.push((id.to_string(), spec)),
                Ok(None) => {}
                Err(err) => tracing::warn!(%err, "skipping an unreadable component specification"),
            }
        }
        Ok(out)
    }

    /// Resolves a stored link's config names into the definition providers receive. Missing
    /// config is an error naming it.
    pub async fn resolve(&self, link: &StoredLink) -> Result<LinkDefinition, StoreError> {
        let mut resolved = [HashMap::new(), HashMap::new()];
        for (names, out) in [&link.source_config, &link.target_config]
            .into_iter()
            .zip(resolved.iter_mut())
        {
            for name in names {
                // `SECRET_*` names are references to secrets, not config (1.x): resolving
                // them as config would leak their metadata into the link's config.
                if name.starts_with(SECRET_PREFIX) {
                    continue;
                }
                let values = self
                    .config(name)
                    .await?
                    .ok_or_else(|| StoreError::MissingConfig {
                        link: format!("{} -> {} ({})", link.source_id, link.target, link.name),
                        name: name.clone(),
                    })?;
                out.extend(values);
            }
        }
        let [source_config, target_config] = resolved;
        Ok(LinkDefinition {
            source_id: link.source_id.clone(),
            target: link.target.clone(),
            name: link.name.clone(),
            wit_namespace: link.wit_namespace.clone(),
            wit_package: link.wit_package.clone(),
            interfaces: link.interfaces.clone(),
            source_config,
            target_config,
            source_secrets: None,
            target_secrets: None,
        })
    }

    /// Every link where `provider_id` is source or target, config resolved. Links whose
    /// config is missing are returned as errors next to the good ones.
    pub async fn links_for(&self, provider_id: &str) -> Result<ProviderLinks, StoreError> {
        let mut out = ProviderLinks::default();
        for (id, spec) in self.specs().await? {
            if !spec.source_keys.is_empty() {
                out.source_keys.insert(id, spec.source_keys);
            }
            for link in spec.links {
                if link.source_id != provider_id && link.target != provider_id {
                    continue;
                }
                match self.resolve(&link).await {
                    Ok(def) => {
                        if !link.secret_references(provider_id).is_empty() {
                            out.needing_secrets.insert(def.key());
                        }
                        out.links.insert(def.key(), def);
                    }
                    Err(err) => out.broken.push((link, err)),
                }
            }
        }
        Ok(out)
    }

    /// Records the keys that may speak for source `id` (its specification is created if it
    /// has none yet).
    pub async fn set_source_keys(&self, id: &str, keys: Vec<String>) -> Result<(), StoreError> {
        let mut spec = self.component(id).await?.unwrap_or_default();
        spec.source_keys = keys;
        self.put_component(id, &spec).await
    }

    /// A stream that yields once for every change in either bucket (and ends, or yields an
    /// error, if the watch breaks; the caller re-syncs and watches again).
    pub async fn watch(
        &self,
    ) -> Result<impl Stream<Item = Result<Bucket, StoreError>> + Send + 'static, StoreError> {
        let data = self
            .data
            .watch_all()
            .await
            .map_err(|e| js_err(&self.data_bucket, e))?;
        let config = self
            .config
            .watch_all()
            .await
            .map_err(|e| js_err(&self.config_bucket, e))?;
        let (db, cb) = (self.data_bucket.clone(), self.config_bucket.clone());
        let data = data.map(move |r| r.map(|_| Bucket::Data).map_err(|e| js_err(&db, e)));
        let config = config.map(move |r| r.map(|_| Bucket::Config).map_err(|e| js_err(&cb, e)));
        Ok(futures::stream::select(data, config))
    }
}
