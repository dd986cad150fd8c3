//! Imports the host answers itself: `wasi:config/store` (and `runtime`, its first draft's
//! name, which wasmCloud 1.x components still import) from the component's named config, and
//! `wasi:logging/logging` (versioned and unversioned, as 1.x links both) into the host's log.

use std::collections::HashMap;
use std::sync::Arc;

mod bindings {
    wasmtime::component::bindgen!({
        inline: "
            package trellis:host-local;
            world host-local {
                import wasi:config/store@0.2.0-draft;
                import wasi:config/runtime@0.2.0-draft;
                import wasi:logging/logging@0.1.0-draft;
                import wasi:logging/logging;
            }
        ",
        path: ["../wit/deps/config", "../wit/deps/logging", "../wit/deps/logging-unversioned"],
    });
}

pub(crate) use bindings::wasi::config::runtime as config_runtime;
pub(crate) use bindings::wasi::config::store as config;
use bindings::wasi::logging::logging as logging_unversioned;
pub(crate) use bindings::wasi::logging0_1_0_draft::logging;

/// What a component's local imports see.
#[derive(Clone, Debug, Default)]
pub(crate) struct LocalState {
    pub(crate) component_id: Arc<str>,
    pub(crate) config: Arc<HashMap<String, String>>,
    /// Answered by `wasmcloud:secrets` (see `secrets.rs`).
    pub(crate) secrets: Arc<crate::secrets::Secrets>,
    /// The targets the component may pick with `trellis:routing/target` (see `target.rs`).
    pub(crate) targets: Arc<[String]>,
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

impl config_runtime::Host for LocalState {
    fn get(&mut self, key: String) -> Result<Option<String>, config_runtime::ConfigError> {
        Ok(self.config.get(&key).cloned())
    }

    fn get_all(&mut self) -> Result<Vec<(String, String)>, config_runtime::ConfigError> {
        config::Host::get_all(self).map_err(|e| match e {
            config::Error::Upstream(m) => config_runtime::ConfigError::Upstream(m),
            config::Error::Io(m) => config_runtime::ConfigError::Io(m),
        })
    }
}

/// A log level of either `wasi:logging` (their `level` enums are the same, generated twice).
#[derive(Clone, Copy)]
enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LocalState {
    /// One record in the host's log, with the component's id and the message's context.
    fn log(&self, level: Level, context: String, message: String) {
        let component = &*self.component_id;
        match level {
            Level::Trace => tracing::trace!(component, context, "{message}"),
            Level::Debug => tracing::debug!(component, context, "{message}"),
            Level::Info => tracing::info!(component, context, "{message}"),
            Level::Warn => tracing::warn!(component, context, "{message}"),
            Level::Error => tracing::error!(component, context, "{message}"),
        }
    }
}

/// `$level` of `$module` as a [`Level`] (`critical` is logged as an error, as in 1.x).
macro_rules! level {
    ($module:ident, $level:expr) => {
        match $level {
            $module::Level::Trace => Level::Trace,
            $module::Level::Debug => Level::Debug,
            $module::Level::Info => Level::Info,
            $module::Level::Warn => Level::Warn,
            $module::Level::Error | $module::Level::Critical => Level::Error,
        }
    };
}

impl logging::Host for LocalState {
    fn log(&mut self, level: logging::Level, context: String, message: String) {
        LocalState::log(self, level!(logging, level), context, message);
    }
}

impl logging_unversioned::Host for LocalState {
    fn log(&mut self, level: logging_unversioned::Level, context: String, message: String) {
        LocalState::log(self, level!(logging_unversioned, level), context, message);
    }
}

/// Adds the interfaces to `linker`, answered from the store's [`LocalState`].
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    get: fn(&mut T) -> &mut LocalState,
) -> wasmtime::Result<()> {
    type Local = wasmtime::component::HasSelf<LocalState>;
    config::add_to_linker::<T, Local>(linker, get)?;
    config_runtime::add_to_linker::<T, Local>(linker, get)?;
    logging::add_to_linker::<T, Local>(linker, get)?;
    logging_unversioned::add_to_linker::<T, Local>(linker, get)?;
    Ok(())
}
