//! `trellis secret`: the lattice's secret store, by name. Values go in (from stdin, a file or
//! an environment variable, never the command line, where `ps` would show them) and never
//! come out: `list` shows names and metadata only.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use trellis_host::secret_store::{self, SecretInfo, SecretStore};
use trellis_sdk::host_data::SecretValue;
use trellis_sdk::secret::Secret;
use trellis_sdk::subjects::LatticeSubjects;

use crate::commands::{Ctx, Outcome, exit};
use crate::output::Table;

/// Where a lattice's store key is kept by default: the Trellis home's `keys/`.
pub fn default_key_file(home: &Path, lattice: &str) -> PathBuf {
    home.join("keys").join(format!("secrets-{lattice}.xk"))
}

/// Where a secret's value is read from.
#[derive(Debug)]
pub enum ValueFrom {
    /// Standard input (one trailing newline dropped, as `echo` adds it).
    Stdin,
    /// A file, byte for byte.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

/// A value as text when it is UTF-8 (and `binary` was not asked), else bytes.
pub fn value_of(bytes: Vec<u8>, binary: bool) -> SecretValue {
    if binary {
        return SecretValue::Bytes(bytes);
    }
    match String::from_utf8(bytes) {
        Ok(text) => SecretValue::String(Secret::new(text)),
        Err(e) => SecretValue::Bytes(e.into_bytes()),
    }
}

fn read_value(from: &ValueFrom, binary: bool) -> anyhow::Result<SecretValue> {
    let bytes = match from {
        ValueFrom::Stdin => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .take(secret_store::MAX_SECRET_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
                .context("cannot read the secret from stdin")?;
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
            }
            bytes
        }
        ValueFrom::File(path) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        ValueFrom::Env(var) => std::env::var_os(var)
            .with_context(|| format!("environment variable {var} is not set"))?
            .into_encoded_bytes(),
    };
    Ok(value_of(bytes, binary))
}

async fn store(cx: &Ctx) -> anyhow::Result<SecretStore> {
    Ok(SecretStore::open(&cx.nats, &cx.subjects).await?)
}

/// `secret init`: makes `key_file` (created if missing) the store's key.
pub async fn init(cx: &Ctx, key_file: &Path) -> anyhow::Result<Outcome> {
    let key = secret_store::load_key(key_file, true)?;
    store(cx).await?.init(&key).await?;
    cx.out.done(
        &format!(
            "secret store of lattice {} keyed to {} (keep {} safe: hosts need it to read secrets)",
            cx.subjects.lattice(),
            key.public_key(),
            key_file.display()
        ),
        &serde_json::json!({ "public_key": key.public_key(), "key_file": key_file }),
    );
    Ok(Outcome { code: exit::OK })
}

/// `secret put`.
pub async fn put(
    cx: &Ctx,
    name: &str,
    from: &ValueFrom,
    binary: bool,
    readers: &[String],
) -> anyhow::Result<Outcome> {
    let value = read_value(from, binary)?;
    let info = store(cx).await?.put(name, &value, readers).await?;
    cx.out.done(
        &format!(
            "secret {} stored (version {}, {}, readable by {})",
            info.name,
            info.version,
            info.kind,
            readers_text(&info)
        ),
        &info,
    );
    Ok(Outcome { code: exit::OK })
}

/// `secret del`.
pub async fn del(cx: &Ctx, name: &str) -> anyhow::Result<Outcome> {
    let deleted = store(cx).await?.delete(name).await?;
    let (text, code) = if deleted {
        (format!("secret {name} deleted"), exit::OK)
    } else {
        (format!("no secret named {name:?}"), exit::NOT_FOUND)
    };
    cx.out
        .done(&text, &serde_json::json!({ "deleted": deleted }));
    Ok(Outcome { code })
}

/// `secret list`.
pub async fn list(cx: &Ctx) -> anyhow::Result<Outcome> {
    let secrets = store(cx).await?.list().await?;
    let mut t = Table::new(["NAME", "KIND", "VERSION", "READERS"]);
    for s in &secrets {
        t.row([
            s.name.clone(),
            s.kind.clone(),
            s.version.to_string(),
            readers_text(s),
        ]);
    }
    cx.out.table(&t, &secrets);
    Ok(Outcome { code: exit::OK })
}

fn readers_text(info: &SecretInfo) -> String {
    if info.readers.is_empty() {
        "no one".into()
    } else {
        info.readers.join(", ")
    }
}

/// Opens the secret store of `subjects`' lattice with the key in `key_file` (created when
/// missing): what `trellis up` gives its host.
pub async fn open_keyed(
    nats: &async_nats::Client,
    subjects: &LatticeSubjects,
    key_file: &Path,
) -> anyhow::Result<(SecretStore, trellis_sdk::sealing::XKeyPair)> {
    let key = secret_store::load_key(key_file, true)?;
    let store = SecretStore::open(nats, subjects).await?;
    store.init(&key).await?;
    Ok((store, key))
}
