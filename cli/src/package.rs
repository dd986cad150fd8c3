//! Provider archives (`.par.gz`, the wasmCloud 1.x format): `trellis provider package` writes
//! one around a provider binary with signed claims, and `trellis up` runs a manifest provider
//! given as `path: x.par.gz` from the binary it holds for this machine.
//!
//! Both sides use the published `provider-archive` crate, so an archive written here is one a
//! 1.x host starts, and one `wash par create` wrote is one `up` runs. The signing keys are
//! kept as nkey seeds in `keys/` under the Trellis home (created on first use, mode 0600), so
//! a provider keeps its identity across packagings; seeds are never printed.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use provider_archive::ProviderArchive;
use wascap::prelude::KeyPair;

/// The archive target of this machine, as 1.x names them (`x86_64-linux`, `aarch64-macos`).
pub fn this_target() -> String {
    // Rust's names are the ones 1.x uses (`linux`, `macos`, `windows`).
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

/// What to put in an archive.
#[derive(Debug, Clone)]
pub struct PackageOptions {
    /// The provider binary (for this machine's target).
    pub binary: PathBuf,
    /// The provider's name in its claims.
    pub name: String,
    /// Its vendor.
    pub vendor: String,
    /// Its version.
    pub version: Option<String>,
    /// Its revision.
    pub revision: Option<i32>,
    /// Where the signing seeds live.
    pub keys_dir: PathBuf,
    /// The archive to write (`.par.gz`).
    pub out: PathBuf,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packaged {
    /// The archive.
    pub path: PathBuf,
    /// The provider's public key (its identity in claims).
    pub subject: String,
    /// The signer's public key.
    pub issuer: String,
    /// The target the binary was filed under.
    pub target: String,
}

/// The key pair whose seed is in `dir/file`, made (and saved, mode 0600) if absent.
fn key(dir: &Path, file: &str, make: fn() -> KeyPair) -> anyhow::Result<KeyPair> {
    let path = dir.join(file);
    if path.is_file() {
        let seed = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the key {}", path.display()))?;
        return KeyPair::from_seed(seed.trim())
            .map_err(|e| anyhow::anyhow!("{} holds no valid nkey seed: {e}", path.display()));
    }
    let pair = make();
    let seed = pair
        .seed()
        .map_err(|e| anyhow::anyhow!("cannot take the new key's seed: {e}"))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_private(&path, seed.as_bytes())?;
    Ok(pair)
}

/// Writes `data` to `path` readable by its owner only.
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(data)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes the archive `opts` describe.
pub async fn package(opts: &PackageOptions) -> anyhow::Result<Packaged> {
    let binary = std::fs::read(&opts.binary)
        .with_context(|| format!("cannot read {}", opts.binary.display()))?;
    let issuer = key(&opts.keys_dir, "issuer.nk", KeyPair::new_account)?;
    let subject = key(
        &opts.keys_dir,
        &format!("{}_service.nk", opts.name),
        KeyPair::new_service,
    )?;
    let target = this_target();
    let mut par = ProviderArchive::new(
        &opts.name,
        &opts.vendor,
        opts.revision,
        opts.version.clone(),
    );
    par.add_library(&target, &binary)
        .map_err(|e| anyhow::anyhow!("cannot add the binary: {e}"))?;
    if opts.out.extension().is_none_or(|e| e != "gz") {
        bail!(
            "the archive's name must end in .par.gz: {}",
            opts.out.display()
        );
    }
    par.write(&opts.out, &issuer, &subject, true)
        .await
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", opts.out.display()))?;
    Ok(Packaged {
        path: opts.out.clone(),
        subject: subject.public_key(),
        issuer: issuer.public_key(),
        target,
    })
}

/// The binary for this machine from archive `par` (its claims and hashes verified), unpacked
/// under `cache` once per provider identity and content (`cache/{subject}/{hash}/{name}`).
pub async fn unpack(par: &Path, cache: &Path) -> anyhow::Result<PathBuf> {
    let target = this_target();
    let archive = ProviderArchive::try_load_target_from_file(par, &target)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the provider archive {}: {e}", par.display()))?;
    let Some(bytes) = archive.target_bytes(&target) else {
        bail!(
            "the provider archive {} has no binary for {target} (it has: {})",
            par.display(),
            archive.targets().join(", ")
        );
    };
    let claims = archive
        .claims()
        .with_context(|| format!("the provider archive {} has no claims", par.display()))?;
    let name = claims
        .metadata
        .as_ref()
        .and_then(|m| m.name.clone())
        .unwrap_or_else(|| "provider".into());
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let hash = {
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        format!("{:016x}", h.finish())
    };
    let dir = cache.join(&claims.subject).join(hash);
    let path = dir.join(name);
    if !path.is_file() {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let partial = dir.join(".partial");
        let _ = std::fs::remove_file(&partial);
        write_executable(&partial, &bytes)?;
        std::fs::rename(&partial, &path)
            .with_context(|| format!("cannot place {}", path.display()))?;
    }
    Ok(path)
}

fn write_executable(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(data)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Package → read back: the binary, the claims and the keys are what went in; a second
    /// packaging keeps the identity; a changed archive is refused.
    #[tokio::test]
    async fn an_archive_round_trips_with_its_claims() {
        let dir = std::env::temp_dir().join(format!("trellis-par-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let binary = dir.join("my-provider");
        std::fs::write(&binary, b"#!/bin/sh\necho provider\n").unwrap();
        let opts = PackageOptions {
            binary: binary.clone(),
            name: "my-provider".into(),
            vendor: "acme".into(),
            version: Some("1.2.3".into()),
            revision: Some(4),
            keys_dir: dir.join("keys"),
            out: dir.join("my-provider.par.gz"),
        };
        let first = package(&opts).await.unwrap();
        assert!(
            first.subject.starts_with('V'),
            "a service key: {}",
            first.subject
        );
        assert!(
            first.issuer.starts_with('A'),
            "an account key: {}",
            first.issuer
        );
        let archive = ProviderArchive::try_load_file(&first.path).await.unwrap();
        assert_eq!(archive.targets(), [this_target()]);
        let claims = archive.claims().unwrap();
        assert_eq!(claims.subject, first.subject);
        assert_eq!(claims.issuer, first.issuer);
        let meta = claims.metadata.unwrap();
        assert_eq!(meta.name.as_deref(), Some("my-provider"));
        assert_eq!(meta.vendor, "acme");
        assert_eq!(meta.ver.as_deref(), Some("1.2.3"));
        assert_eq!(meta.rev, Some(4));

        let unpacked = unpack(&first.path, &dir.join("cache")).await.unwrap();
        assert_eq!(
            std::fs::read(&unpacked).unwrap(),
            std::fs::read(&binary).unwrap()
        );
        let again = package(&opts).await.unwrap();
        assert_eq!(again.subject, first.subject, "the identity is kept");
        let mode = std::fs::metadata(dir.join("keys/issuer.nk"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );

        // Flip a byte of the compressed archive: refused, not run.
        let mut bytes = std::fs::read(&first.path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        let broken = dir.join("broken.par.gz");
        std::fs::write(&broken, bytes).unwrap();
        assert!(unpack(&broken, &dir.join("cache2")).await.is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
