//! Links and named config, validated, in the lattice store.
//!
//! This is the write path the CLI and the host use. It checks what 1.x let through: a link
//! that would make one (source, interface, link name) point at two targets is refused, a link
//! naming config that does not exist is refused, config that links still use cannot be
//! deleted. Providers pull what it writes; for 1.x providers (which only listen to pushes) it
//! also publishes the resolved link on their `linkdefs.put` / `linkdefs.del` subjects.

use std::collections::HashMap;

use trellis_sdk::events;
use trellis_sdk::store::{LatticeStore, SECRET_PREFIX, StoreError, StoredLink};
use trellis_sdk::subjects::{LatticeSubjects, validate_token};

/// Why a lattice change was refused.
#[derive(Debug, thiserror::Error)]
pub enum LatticeError {
    /// A name is not usable.
    #[error(transparent)]
    InvalidName(#[from] trellis_sdk::error::InvalidName),
    /// The link is malformed.
    #[error("invalid link: {0}")]
    InvalidLink(String),
    /// Another link already routes the same source, interface and link name elsewhere.
    #[error(
        "link conflicts with an existing one: {source_id} already links {interfaces} of {namespace}:{package} \
         under the name {name:?} to {existing_target}"
    )]
    Conflict {
        /// The source.
        source_id: String,
        /// The overlapping interfaces.
        interfaces: String,
        /// WIT namespace.
        namespace: String,
        /// WIT package.
        package: String,
        /// Link name.
        name: String,
        /// The target it already points to.
        existing_target: String,
    },
    /// The link names config that does not exist.
    #[error("link names config {0:?}, which does not exist (put it first)")]
    MissingConfig(String),
    /// Config cannot be deleted while links use it.
    #[error("config {name:?} is used by {links}; delete or change those links first")]
    ConfigInUse {
        /// The config.
        name: String,
        /// The links using it.
        links: String,
    },
    /// The config name is not a valid key.
    #[error("invalid config name {0:?}: use letters, digits, '-', '_', '/' or '='")]
    InvalidConfigName(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Validated access to a lattice's links and named config.
#[derive(Clone, Debug)]
pub struct LatticeAdmin {
    store: LatticeStore,
    nats: async_nats::Client,
    subjects: LatticeSubjects,
    source: String,
}

fn valid_config_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/' | b'='))
}

impl LatticeAdmin {
    /// Admin access through `store`; events are published as `source` (a host id).
    pub fn new(
        store: LatticeStore,
        nats: async_nats::Client,
        subjects: LatticeSubjects,
        source: impl Into<String>,
    ) -> Self {
        Self {
            store,
            nats,
            subjects,
            source: source.into(),
        }
    }

    /// Puts `link`, replacing the link with the same source, namespace, package and name.
    pub async fn put_link(&self, link: StoredLink) -> Result<(), LatticeError> {
        validate_token("link source id", &link.source_id)?;
        validate_token("link target", &link.target)?;
        validate_token("link name", &link.name)?;
        if link.wit_namespace.is_empty() || link.wit_package.is_empty() {
            return Err(LatticeError::InvalidLink(
                "namespace and package are required".into(),
            ));
        }
        if link.interfaces.is_empty() {
            return Err(LatticeError::InvalidLink(
                "at least one interface is required".into(),
            ));
        }
        for name in link.source_config.iter().chain(&link.target_config) {
            if self.store.config(name).await?.is_none() {
                return Err(LatticeError::MissingConfig(name.clone()));
            }
        }
        let existing = self
            .store
            .component(&link.source_id)
            .await?
            .map(|s| s.links)
            .unwrap_or_default();
        for other in existing.iter().filter(|o| {
            o.name == link.name
                && o.wit_namespace == link.wit_namespace
                && o.wit_package == link.wit_package
                && o.target != link.target
        }) {
            let overlap: Vec<&str> = other
                .interfaces
                .iter()
                .filter(|i| link.interfaces.contains(i))
                .map(String::as_str)
                .collect();
            if !overlap.is_empty() {
                return Err(LatticeError::Conflict {
                    source_id: link.source_id.clone(),
                    interfaces: overlap.join(", "),
                    namespace: link.wit_namespace.clone(),
                    package: link.wit_package.clone(),
                    name: link.name.clone(),
                    existing_target: other.target.clone(),
                });
            }
        }
        self.store.put_link(link.clone()).await?;
        // 1.x providers only listen to pushes; Trellis providers also pull, idempotently.
        let has_secrets = link
            .source_config
            .iter()
            .chain(&link.target_config)
            .any(|n| n.starts_with(SECRET_PREFIX));
        if !has_secrets {
            match self.store.resolve(&link).await {
                Ok(resolved) => {
                    if let Ok(body) = serde_json::to_vec(&resolved) {
                        for id in [&link.source_id, &link.target] {
                            let _ = self
                                .nats
                                .publish(self.subjects.link_put(id), body.clone().into())
                                .await;
                        }
                    }
                }
                Err(err) => tracing::warn!(%err, "cannot push a link to 1.x providers"),
            }
        }
        events::publish(
            &self.nats,
            &self.subjects,
            &self.source,
            "linkdef_set",
            serde_json::to_value(&link).unwrap_or_default(),
        )
        .await;
        Ok(())
    }

    /// Every link, or those of `source_id`.
    pub async fn links(&self, source_id: Option<&str>) -> Result<Vec<StoredLink>, LatticeError> {
        Ok(match source_id {
            Some(id) => self
                .store
                .component(id)
                .await?
                .map(|s| s.links)
                .unwrap_or_default(),
            None => self.store.stored_links().await?,
        })
    }

    /// Deletes the links of `source_id` with that name, namespace and package; returns how
    /// many there were.
    pub async fn delete_link(
        &self,
        source_id: &str,
        name: &str,
        namespace: &str,
        package: &str,
    ) -> Result<usize, LatticeError> {
        validate_token("link source id", source_id)?;
        let gone: Vec<StoredLink> = self
            .links(Some(source_id))
            .await?
            .into_iter()
            .filter(|l| l.name == name && l.wit_namespace == namespace && l.wit_package == package)
            .collect();
        let n = self
            .store
            .delete_link(source_id, name, namespace, package)
            .await?;
        for link in &gone {
            let body = serde_json::json!({
                "source_id": link.source_id, "target": link.target, "name": link.name,
                "wit_namespace": link.wit_namespace, "wit_package": link.wit_package,
                "interfaces": link.interfaces,
            });
            for id in [&link.source_id, &link.target] {
                let _ = self
                    .nats
                    .publish(
                        self.subjects.link_del(id),
                        body.to_string().into_bytes().into(),
                    )
                    .await;
            }
            events::publish(
                &self.nats,
                &self.subjects,
                &self.source,
                "linkdef_deleted",
                body,
            )
            .await;
        }
        Ok(n)
    }

    /// Puts named config `name`.
    pub async fn put_config(
        &self,
        name: &str,
        values: &HashMap<String, String>,
    ) -> Result<(), LatticeError> {
        if !valid_config_name(name) {
            return Err(LatticeError::InvalidConfigName(name.to_string()));
        }
        self.store.put_config(name, values).await?;
        events::publish(
            &self.nats,
            &self.subjects,
            &self.source,
            "config_set",
            serde_json::json!({ "config_name": name }),
        )
        .await;
        Ok(())
    }

    /// Named config `name`, if it exists.
    pub async fn config(
        &self,
        name: &str,
    ) -> Result<Option<HashMap<String, String>>, LatticeError> {
        if !valid_config_name(name) {
            return Err(LatticeError::InvalidConfigName(name.to_string()));
        }
        Ok(self.store.config(name).await?)
    }

    /// Deletes named config `name`, unless links use it.
    pub async fn delete_config(&self, name: &str) -> Result<(), LatticeError> {
        if !valid_config_name(name) {
            return Err(LatticeError::InvalidConfigName(name.to_string()));
        }
        let users: Vec<String> = self
            .store
            .stored_links()
            .await?
            .into_iter()
            .filter(|l| {
                l.source_config
                    .iter()
                    .chain(&l.target_config)
                    .any(|n| n == name)
            })
            .map(|l| format!("{} -> {} ({})", l.source_id, l.target, l.name))
            .collect();
        if !users.is_empty() {
            return Err(LatticeError::ConfigInUse {
                name: name.to_string(),
                links: users.join(", "),
            });
        }
        self.store.delete_config(name).await?;
        events::publish(
            &self.nats,
            &self.subjects,
            &self.source,
            "config_deleted",
            serde_json::json!({ "config_name": name }),
        )
        .await;
        Ok(())
    }
}
