//! The [`Provider`] trait: what a capability provider implements.
//!
//! Every method has a default, so a provider implements only what it needs. The SDK calls
//! these one link event at a time, in order, never concurrently with each other: a provider
//! can set up and tear down per-link state without its own locking around link changes.
//! Errors returned here are reported (link ping, lattice events, health replies), never only
//! logged, and never stop the provider.

use crate::link::LinkKey;
use std::collections::HashMap;
use std::future::Future;

use crate::link::LinkDefinition;
use crate::sealing::SecretMap;

/// A link delivered to the provider.
#[derive(Clone)]
pub struct LinkConfig<'a> {
    /// The whole link definition (secrets still sealed).
    pub link: &'a LinkDefinition,
    /// The config for this provider's side of the link (target config when the provider is the
    /// target, source config when it is the source), with the side's text secrets opened
    /// into it: a link may give any setting — a password, a key, a URL with credentials —
    /// from the secret store instead of named config, and the secret wins. Never log it.
    pub config: &'a HashMap<String, String>,
    /// The side's secrets, opened (binary ones are only here).
    pub secrets: &'a SecretMap,
    /// Whether this replaces an earlier version of the same link (its config changed).
    pub is_update: bool,
    /// The provider's runtime: clients for the link's target, delivery counters.
    pub handle: crate::runtime::ProviderHandle,
}

impl std::fmt::Debug for LinkConfig<'_> {
    // Config may hold opened secrets: keys only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<&String> = self.config.keys().collect();
        keys.sort();
        let mut secrets: Vec<&String> = self.secrets.keys().collect();
        secrets.sort();
        f.debug_struct("LinkConfig")
            .field("link", &self.link.key())
            .field("config_keys", &keys)
            .field("secret_names", &secrets)
            .field("is_update", &self.is_update)
            .finish_non_exhaustive()
    }
}

impl LinkConfig<'_> {
    /// A client for calling the link's target (the provider being its source): a component
    /// a provider delivers events to.
    pub fn linked_client(&self) -> crate::runtime::LinkedClient {
        self.handle.linked_client(self.link)
    }

    /// This link's delivery counters, which `link ping` shows: pass them to
    /// [`crate::delivery::Delivery::start`].
    pub fn delivery_stats(&self) -> std::sync::Arc<crate::delivery::DeliveryStats> {
        self.handle.inner.table().delivery_stats(&self.link.key())
    }
}

/// Health of a provider, as answered to the host's health checks.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HealthStatus {
    /// Whether the provider can do its work.
    pub healthy: bool,
    /// Why not, or any note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl HealthStatus {
    /// Healthy, no message.
    pub fn healthy() -> Self {
        Self {
            healthy: true,
            message: None,
        }
    }

    /// Unhealthy, with the reason.
    pub fn unhealthy(message: impl Into<String>) -> Self {
        Self {
            healthy: false,
            message: Some(message.into()),
        }
    }

    /// Healthy when every link's check passed; otherwise unhealthy, naming each failing link
    /// (`link SOURCE -> TARGET (NAME): why`). The reasons must not hold secrets.
    pub fn of_links(checks: impl IntoIterator<Item = (LinkKey, Result<(), String>)>) -> Self {
        let failing: Vec<String> = checks
            .into_iter()
            .filter_map(|(key, check)| {
                let why = check.err()?;
                Some(format!(
                    "link {} -> {} ({}): {why}",
                    key.source_id, key.target, key.name
                ))
            })
            .collect();
        if failing.is_empty() {
            Self::healthy()
        } else {
            Self::unhealthy(failing.join("; "))
        }
    }
}

/// [`Provider::call_deadline`] unless a provider says otherwise.
pub const DEFAULT_CALL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// A capability provider's reactions to lattice events.
pub trait Provider: Send + Sync + 'static {
    /// Called once at start, before any link: the provider's own config (merged named config
    /// and `--config` entries) is in `config.config`. An error stops the start-up with the
    /// reason (1.x `Provider::init`).
    fn init(
        &self,
        config: &crate::config::ProviderConfig,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        let _ = config;
        async { Ok(()) }
    }

    /// A link with this provider as **target** was put (or changed). Set up what calls over
    /// it need (connections, clients); an error marks the link failed and is reported.
    fn receive_link_config_as_target(
        &self,
        link: LinkConfig<'_>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        let _ = link;
        async { Ok(()) }
    }

    /// A link with this provider as **source** was put (or changed): the provider will call
    /// `link.link.target`.
    fn receive_link_config_as_source(
        &self,
        link: LinkConfig<'_>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        let _ = link;
        async { Ok(()) }
    }

    /// A link with this provider as target was deleted or purged: drop everything held for it.
    fn delete_link_as_target(
        &self,
        link: &LinkDefinition,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        let _ = link;
        async { Ok(()) }
    }

    /// A link with this provider as source was deleted or purged.
    fn delete_link_as_source(
        &self,
        link: &LinkDefinition,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        let _ = link;
        async { Ok(()) }
    }

    /// The provider's own config changed (the whole merged config, not a diff).
    fn on_config_update(
        &self,
        config: &HashMap<String, String>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        let _ = config;
        async { Ok(()) }
    }

    /// Longest one served call may run before it is cancelled, unless the configuration says
    /// otherwise (`--call-deadline-ms`). Providers whose calls stream whole objects raise
    /// it: a transfer that still moves must not be cut by a total; one that stalls is cut by
    /// the transport's idle timeout (`--rpc-timeout-ms`) all the same.
    fn call_deadline(&self) -> std::time::Duration {
        DEFAULT_CALL_DEADLINE
    }

    /// Answers a health check. An error or a panic here is reported as unhealthy; it never
    /// stops the provider.
    fn health(&self) -> impl Future<Output = anyhow::Result<HealthStatus>> + Send {
        async { Ok(HealthStatus::healthy()) }
    }

    /// The provider is stopping: in-flight calls have drained (or hit the deadline).
    fn shutdown(&self) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { Ok(()) }
    }
}
