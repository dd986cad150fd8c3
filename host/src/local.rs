//! Imports the host answers itself: `wasi:config/store` from the component's named config and
//! `wasi:logging/logging` into the host's log.

use std::collections::HashMap;
use std::sync::Arc;

mod bindings {
    wasmtime::component::bindgen!({
        inline: "
            package trellis:host-local;
            world host-local {
                import wasi:config/store@0.2.0-draft;
                import wasi:logging/logging@0.1.0-draft;
            }
        ",
        path: ["../wit/deps/config", "../wit/deps/logging"],
    });
}

pub(crate) use bindings::wasi::config::store as config;
pub(crate) use bindings::wasi::logging::logging;

/// What a component's local imports see.
#[derive(Clone, Debug, Default)]
pub(crate) struct LocalState {
    pub(crate) component_id: Arc<str>,
    pub(crate) config: Arc<HashMap<String, String>>,
}

impl config::Host for LocalState {
    fn get(&mut self, key: String) -> Result<Option<String>, config::Error> {
        Ok(self.config.get(&key).cloned())
    }

    fn get_all(&mut self) -> Result<Vec<(String, String)>, config::Error> {
        Ok(self
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

impl logging::Host for LocalState {
    fn log(&mut self, level: logging::Level, context: String, message: String) {
        let component = &*self.component_id;
        match level {
            logging::Level::Trace => tracing::trace!(component, context, "{message}"),
            logging::Level::Debug => tracing::debug!(component, context, "{message}"),
            logging::Level::Info => tracing::info!(component, context, "{message}"),
            logging::Level::Warn => tracing::warn!(component, context, "{message}"),
            logging::Level::Error | logging::Level::Critical => {
                tracing::error!(component, context, "{message}")
            }
        }
    }
}

/// Adds both interfaces to `linker`, answered from the store's [`LocalState`].
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    get: fn(&mut T) -> &mut LocalState,
) -> wasmtime::Result<()> {
    config::add_to_linker::<T, wasmtime::component::HasSelf<LocalState>>(linker, get)?;
    logging::add_to_linker::<T, wasmtime::component::HasSelf<LocalState>>(linker, get)?;
    Ok(())
}
