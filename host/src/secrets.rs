//! `wasmcloud:secrets/{store,reveal}@0.1.0-draft`: a component reads the secrets it was
//! granted, by name.
//!
//! The secrets are given to the host with the component ([`Secrets`]) and never leave its
//! process: `get` answers a handle for a granted name (`not-found` for any other) and `reveal`
//! the value behind it. Values are redacted in `Debug`, so they reach no log.

use std::collections::HashMap;
use std::fmt;

use wasmtime::component::{HasSelf, Linker, Resource};

use crate::state::HostState;

mod bindings {
    wasmtime::component::bindgen!({
        inline: "
            package trellis:host-secrets;
            world host-secrets {
                import wasmcloud:secrets/store@0.1.0-draft;
                import wasmcloud:secrets/reveal@0.1.0-draft;
            }
        ",
        path: ["../wit/deps/secrets"],
        imports: { default: trappable },
        with: { "wasmcloud:secrets/store.secret": super::Secret },
    });
}

use bindings::wasmcloud::secrets::{reveal, store};

/// A secret's value.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretValue {
    /// Text.
    String(String),
    /// Bytes.
    Bytes(Vec<u8>),
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::String(_) => f.write_str("String(<redacted>)"),
            Self::Bytes(_) => f.write_str("Bytes(<redacted>)"),
        }
    }
}

/// The secrets granted to a component, by the name it asks for.
pub type Secrets = HashMap<String, SecretValue>;

/// A handle to a granted secret: its name.
#[derive(Debug)]
pub struct Secret(String);

impl store::Host for HostState {
    fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Resource<Secret>, store::SecretsError>> {
        if !self.secrets().contains_key(&key) {
            return Ok(Err(store::SecretsError::NotFound));
        }
        Ok(Ok(self.table().push(Secret(key))?))
    }
}

impl store::HostSecret for HostState {
    fn drop(&mut self, rep: Resource<Secret>) -> wasmtime::Result<()> {
        self.table().delete(rep)?;
        Ok(())
    }
}

impl reveal::Host for HostState {
    fn reveal(&mut self, secret: Resource<Secret>) -> wasmtime::Result<store::SecretValue> {
        let key = self.table().get(&secret)?.0.clone();
        // A handle exists only for a granted name, and a component's grants do not change
        // while it runs.
        let value = match self.secrets().get(&key) {
            Some(SecretValue::String(s)) => store::SecretValue::String(s.clone()),
            Some(SecretValue::Bytes(b)) => store::SecretValue::Bytes(b.clone()),
            None => wasmtime::bail!("secret {key:?} is no longer granted"),
        };
        Ok(value)
    }
}

/// Adds both interfaces to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    fn get(s: &mut HostState) -> &mut HostState {
        s
    }
    store::add_to_linker::<HostState, HasSelf<HostState>>(linker, get)?;
    reveal::add_to_linker::<HostState, HasSelf<HostState>>(linker, get)?;
    Ok(())
}
