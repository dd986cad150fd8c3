//! Least privilege for the NATS `trellis up` starts: an identity for `up` itself (the
//! admin, which the CLI beside it uses too), one for its host and one per provider, each
//! allowed what the manifest's links give it (`trellis_host::nats_auth`), and kept in step
//! with the links as they change at runtime (a config reload of the server).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use futures::StreamExt as _;
use tracing::warn;
use trellis_host::ProviderIdentity;
use trellis_host::nats_auth::{
    Credentials, Grants, LatticeAuth, host_grants, inbox_prefix, provider_grants,
};
use trellis_sdk::connect::NatsAuth;
use trellis_sdk::store::{LatticeStore, StoredLink};
use trellis_sdk::subjects::LatticeSubjects;
use trellis_sdk::task::AbortOnDrop;

use crate::manifest::{Manifest, Source};
use crate::nats_server::Reloader;

/// The name of `up`'s own identity.
pub const ADMIN: &str = "admin";

/// Providers shipped with Trellis that keep their data on the lattice's NATS when a link
/// names no server of its own.
const NATS_BACKENDS: [&str; 2] = ["keyvalue-nats", "messaging-nats"];

struct ProviderRole {
    id: String,
    legacy: bool,
    nats_backend: bool,
    /// An external service: not started by the host, joining with credentials `up` writes.
    external: bool,
}

/// The identities of one `up` and what their grants are derived from.
pub struct Authorization {
    auth: LatticeAuth,
    subjects: LatticeSubjects,
    host_id: String,
    components: Vec<String>,
    /// Every target the components may pick at runtime.
    targets: Vec<String>,
    providers: Vec<ProviderRole>,
    /// `up`'s own credentials.
    pub admin: Credentials,
    /// The host's.
    pub host: Credentials,
    provider_creds: BTreeMap<String, Credentials>,
}

fn jwt_auth(c: &Credentials) -> NatsAuth {
    NatsAuth::Jwt {
        jwt: c.jwt.clone().into(),
        seed: c.seed.clone(),
    }
}

impl Authorization {
    /// Identities for `manifest`'s host (`host_id`) and providers, granted what its links
    /// give them.
    pub fn for_manifest(
        manifest: &Manifest,
        subjects: &LatticeSubjects,
        host_id: &str,
    ) -> anyhow::Result<Self> {
        let links: Vec<StoredLink> = manifest
            .links
            .iter()
            .map(|l| {
                StoredLink::new(
                    &l.source,
                    &l.target,
                    &l.namespace,
                    &l.package,
                    l.interfaces.iter().cloned(),
                )
            })
            .collect();
        let providers = manifest
            .providers
            .iter()
            .map(|p| ProviderRole {
                id: p.id.clone(),
                legacy: matches!(&p.source, Source::Path(path) if crate::up::is_archive(path)),
                nats_backend: matches!(&p.source, Source::Ref(r) if NATS_BACKENDS.contains(&r.as_str())),
                external: false,
            })
            .chain(manifest.externals.iter().map(|e| ProviderRole {
                id: e.id.clone(),
                legacy: false,
                nats_backend: false,
                external: true,
            }))
            .collect();
        let auth = LatticeAuth::new();
        let admin = auth.admin(ADMIN)?;
        let mut me = Self {
            host: admin.clone(),
            admin,
            auth,
            subjects: subjects.clone(),
            host_id: host_id.to_string(),
            components: manifest.components.iter().map(|c| c.id.clone()).collect(),
            targets: manifest
                .components
                .iter()
                .flat_map(|c| c.targets.iter().cloned())
                .collect(),
            providers,
            provider_creds: BTreeMap::new(),
        };
        let grants = me.grants(&links);
        for (name, g) in grants {
            let creds = me.auth.identity(&name, g)?;
            if name == me.host_id {
                me.host = creds;
            } else {
                me.provider_creds.insert(name, creds);
            }
        }
        Ok(me)
    }

    fn identities(&self) -> Vec<String> {
        let mut all = vec![ADMIN.to_string(), self.host_id.clone()];
        all.extend(self.providers.iter().map(|p| p.id.clone()));
        all
    }

    /// Every identity's grants under `links`.
    fn grants(&self, links: &[StoredLink]) -> BTreeMap<String, Grants> {
        let identities = self.identities();
        let provider_ids: Vec<String> = self
            .providers
            .iter()
            .filter(|p| !p.external)
            .map(|p| p.id.clone())
            .collect();
        let mut out = BTreeMap::new();
        out.insert(
            self.host_id.clone(),
            host_grants(
                &self.subjects,
                &self.host_id,
                &self.components,
                &provider_ids,
                links,
                &self.targets,
            ),
        );
        for p in &self.providers {
            let backend = p.nats_backend.then_some(identities.as_slice());
            out.insert(
                p.id.clone(),
                provider_grants(
                    &self.subjects,
                    &p.id,
                    &self.host_id,
                    links,
                    p.legacy,
                    backend,
                ),
            );
        }
        out
    }

    /// The server's authorization config.
    pub fn server_config(&mut self) -> anyhow::Result<String> {
        Ok(self.auth.server_config()?)
    }

    /// The host connection's credentials and inbox prefix.
    pub fn host_auth(&self) -> (NatsAuth, String) {
        (jwt_auth(&self.host), inbox_prefix(&self.host_id))
    }

    /// Provider `id`'s identity.
    pub fn provider(&self, id: &str) -> Option<ProviderIdentity> {
        let creds = self.provider_creds.get(id)?;
        Some(ProviderIdentity {
            auth: jwt_auth(creds),
            inbox_prefix: inbox_prefix(id),
        })
    }

    /// The keys that speak for each provider that can sign its calls (not 1.x ones).
    pub fn provider_source_keys(&self) -> Vec<(String, String)> {
        self.providers
            .iter()
            .filter(|p| !p.legacy)
            .filter_map(|p| {
                let key = self.provider_creds.get(&p.id)?.public_key()?;
                Some((p.id.clone(), key))
            })
            .collect()
    }

    /// Recomputes every grant under `links`; whether any changed.
    pub fn update(&mut self, links: &[StoredLink]) -> anyhow::Result<bool> {
        let mut changed = false;
        for (name, g) in self.grants(links) {
            changed |= self.auth.set_grants(&name, g)?;
        }
        Ok(changed)
    }

    /// Writes the admin's credentials to `dir` (readable by the user only), for the CLI.
    pub fn write_admin_creds(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        write_creds(&dir.join("admin.creds"), &self.admin)
    }

    /// Writes each external service's credentials to `dir` (readable by the user only): what
    /// to hand the service. Answers the ids and files.
    pub fn write_external_creds(&self, dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        for p in self.providers.iter().filter(|p| p.external) {
            if let Some(creds) = self.provider_creds.get(&p.id) {
                let path = write_creds(&dir.join(format!("external-{}.creds", p.id)), creds)?;
                out.push((p.id.clone(), path));
            }
        }
        Ok(out)
    }
}

fn write_creds(path: &Path, creds: &Credentials) -> anyhow::Result<PathBuf> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options
        .open(path)
        .and_then(|mut f| f.write_all(creds.creds_file().as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// Follows the lattice's links: when they change, the grants are recomputed and, if any
/// changed, the server reloads them.
pub fn follow(
    auth: Arc<Mutex<Authorization>>,
    store: LatticeStore,
    reloader: Reloader,
) -> AbortOnDrop {
    AbortOnDrop::spawn(async move {
        loop {
            let mut changes = match store.watch().await {
                Ok(w) => Box::pin(w),
                Err(err) => {
                    warn!(%err, "cannot follow the links for the NATS authorization");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Some(change) = changes.next().await {
                if change.is_err() {
                    break;
                }
                let links = match store.stored_links().await {
                    Ok(links) => links,
                    Err(err) => {
                        warn!(%err, "cannot read the links for the NATS authorization");
                        continue;
                    }
                };
                let config = {
                    let mut auth = auth.lock().unwrap_or_else(|p| p.into_inner());
                    match auth.update(&links) {
                        Ok(true) => auth.server_config(),
                        Ok(false) => continue,
                        Err(err) => Err(err),
                    }
                };
                match config {
                    Ok(config) => {
                        if let Err(err) = reloader.reload(&config).await {
                            warn!(%err, "the NATS authorization did not follow a link change");
                        }
                    }
                    Err(err) => warn!(%err, "cannot make the NATS authorization"),
                }
            }
        }
    })
}
