//! The [`Provider`] trait: what a capability provider implements.
//!
//! Every method has a default, so a provider implements only what it needs. The SDK calls
//! these one link event at a time, in order, never concurrently with each other: a provider
//! can set up and tear down per-link state without its own locking around link changes.
//! Errors returned here are reported (link ping, lattice events, health replies), never only
//! logged, and never stop the provider.

use std::collections::HashMap;
use std::future::Future;

use crate::link::LinkDefinition;

/// A link delivered to the provider.
#[derive(Clone, Debug)]
pub struct LinkConfig<'a> {
    /// The whole link definition.
    pub link: &'a LinkDefinition,
    /// The config for this provider's side of the link (target config when the provider is the
    /// target, source config when it is the source).
    pub config: &'a HashMap<String, String>,
    /// Whether this replaces an earlier version of the same link (its config changed).
    pub is_update: bool,
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
}

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
