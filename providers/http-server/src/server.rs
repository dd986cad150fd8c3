//! The provider: links become routes on listeners.
//!
//! A link (this provider as source, a component exporting `wasi:http/incoming-handler` as
//! target) names an address, and optionally a path prefix and a host. Links on the same
//! address share one listener; a listener closes, gracefully, when its last route goes.
//! A bind failure, a route another link holds, or TLS files that differ from the
//! listener's fail the link with the reason, which link ping and the lattice events show.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use anyhow::{Context as _, bail};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tracing::info;
use trellis_sdk::config::ProviderConfig;
use trellis_sdk::link::{LinkDefinition, LinkKey};
use trellis_sdk::provider::{HealthStatus, LinkConfig, Provider};
use trellis_sdk::runtime::ProviderHandle;

use crate::backend::Listener;
use crate::handlers::{ListenerContext, Target};
use crate::routes::Route;
use crate::settings::{LinkSettings, ServerSettings};

/// The one interface this provider calls.
const NAMESPACE: &str = "wasi";
const PACKAGE: &str = "http";
const INTERFACE: &str = "incoming-handler";

#[derive(Default)]
struct State {
    listeners: HashMap<SocketAddr, Listener>,
    links: HashMap<LinkKey, SocketAddr>,
    /// Listeners closing: their connections draining.
    closing: Vec<JoinHandle<()>>,
}

struct Inner {
    settings: RwLock<ServerSettings>,
    state: Mutex<State>,
    handle: watch::Sender<Option<ProviderHandle>>,
}

/// The http-server provider. Cheap to clone.
#[derive(Clone)]
pub struct HttpServer {
    inner: Arc<Inner>,
}

impl Default for HttpServer {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                settings: RwLock::new(ServerSettings::default()),
                state: Mutex::new(State::default()),
                handle: watch::Sender::new(None),
            }),
        }
    }
}

impl HttpServer {
    /// Hands over the running provider: requests that arrived during start-up proceed.
    pub fn attach(&self, handle: ProviderHandle) {
        self.inner.handle.send_replace(Some(handle));
    }

    fn settings(&self) -> ServerSettings {
        self.inner
            .settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Removes `key`'s route; closes its listener if that was the last one.
    fn unroute(state: &mut State, key: &LinkKey) {
        let Some(addr) = state.links.remove(key) else {
            return;
        };
        let now_empty = state.listeners.get(&addr).is_some_and(|l| {
            let mut routes = l.context.routes.write().unwrap_or_else(|e| e.into_inner());
            routes.remove(key);
            routes.is_empty()
        });
        if now_empty && let Some(listener) = state.listeners.remove(&addr) {
            info!(%addr, "last route gone; closing the listener");
            state.closing.retain(|t| !t.is_finished());
            state.closing.push(listener.close());
        }
    }

    async fn route(
        &self,
        link: &LinkDefinition,
        config: &HashMap<String, String>,
    ) -> anyhow::Result<()> {
        if link.wit_namespace != NAMESPACE
            || link.wit_package != PACKAGE
            || !link.interfaces.iter().any(|i| i == INTERFACE)
        {
            bail!(
                "http-server calls {NAMESPACE}:{PACKAGE}/{INTERFACE}; this link is for {}:{}/{{{}}}",
                link.wit_namespace,
                link.wit_package,
                link.interfaces.join(",")
            );
        }
        let server = self.settings();
        let settings = LinkSettings::parse(config, &server)?;
        let key = link.key();
        let mut state = self.inner.state.lock().await;
        // A changed link moves: its old route goes first (a failure below leaves it failed).
        Self::unroute(&mut state, &key);

        let addr = settings.address;
        if let Some(existing) = state.listeners.get(&addr)
            && existing.tls != settings.tls
        {
            bail!(
                "{addr} is already served {} by another link; links sharing an address must agree on TLS",
                if existing.tls.is_some() {
                    "with TLS"
                } else {
                    "without TLS"
                }
            );
        }
        if let std::collections::hash_map::Entry::Vacant(slot) = state.listeners.entry(addr) {
            let context = Arc::new(ListenerContext {
                routes: RwLock::default(),
                https: settings.tls.is_some(),
                lattice: self.inner.handle.subscribe(),
            });
            slot.insert(Listener::bind(addr, settings.tls.clone(), &server, context).await?);
        }
        let listener = state
            .listeners
            .get(&addr)
            .context("listener vanished while routing")?;
        let route = Route {
            link: key.clone(),
            host: settings.host.clone(),
            prefix: settings.path.clone(),
            target: Arc::new(Target::new(Arc::new(link.clone()), settings.clone())),
        };
        let inserted = listener
            .context
            .routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(route);
        if let Err(holder) = inserted {
            let empty = listener
                .context
                .routes
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty();
            if empty && let Some(l) = state.listeners.remove(&addr) {
                state.closing.push(l.close());
            }
            bail!(
                "route {}{} on {addr} is already taken by the link {} -> {} ({})",
                settings.host.as_deref().unwrap_or(""),
                settings.path,
                holder.source_id,
                holder.target,
                holder.name
            );
        }
        state.links.insert(key, addr);
        info!(
            %addr,
            host = settings.host.as_deref().unwrap_or("*"),
            path = %settings.path,
            component = %link.target,
            "route added"
        );
        Ok(())
    }
}

impl Provider for HttpServer {
    async fn init(&self, config: &ProviderConfig) -> anyhow::Result<()> {
        let settings = ServerSettings::parse(&config.config)?;
        *self
            .inner
            .settings
            .write()
            .unwrap_or_else(|e| e.into_inner()) = settings;
        Ok(())
    }

    async fn on_config_update(&self, config: &HashMap<String, String>) -> anyhow::Result<()> {
        // Applies to links put from now on; listeners already open keep their settings.
        let settings = ServerSettings::parse(config)?;
        *self
            .inner
            .settings
            .write()
            .unwrap_or_else(|e| e.into_inner()) = settings;
        Ok(())
    }

    async fn receive_link_config_as_source(&self, link: LinkConfig<'_>) -> anyhow::Result<()> {
        self.route(link.link, link.config).await
    }

    async fn receive_link_config_as_target(&self, link: LinkConfig<'_>) -> anyhow::Result<()> {
        bail!(
            "http-server exports nothing: it is the source of its links (http-server -> \
             component), but this link from {} makes it the target",
            link.link.source_id
        )
    }

    async fn delete_link_as_source(&self, link: &LinkDefinition) -> anyhow::Result<()> {
        let mut state = self.inner.state.lock().await;
        Self::unroute(&mut state, &link.key());
        Ok(())
    }

    async fn health(&self) -> anyhow::Result<HealthStatus> {
        let state = self.inner.state.lock().await;
        Ok(HealthStatus {
            healthy: true,
            message: Some(format!(
                "{} route(s) on {}",
                state.links.len(),
                if state.listeners.is_empty() {
                    "no listener".to_string()
                } else {
                    state
                        .listeners
                        .values()
                        .map(|l| l.local_addr.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )),
        })
    }

    async fn shutdown(&self) -> anyhow::Result<()> {
        let closing: Vec<JoinHandle<()>> = {
            let mut state = self.inner.state.lock().await;
            state.links.clear();
            let listeners: Vec<Listener> = state.listeners.drain().map(|(_, l)| l).collect();
            let mut closing: Vec<JoinHandle<()>> = state.closing.drain(..).collect();
            closing.extend(listeners.into_iter().map(Listener::close));
            closing
        };
        for task in closing {
            let _ = task.await;
        }
        Ok(())
    }
}
