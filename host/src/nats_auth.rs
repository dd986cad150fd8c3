//! The lattice's NATS authorization, derived from its links: one identity per host and
//! provider, each allowed exactly the subjects its place in the lattice needs.
//!
//! The server runs in operator mode (so 1.x providers, which join with a JWT and a seed, can
//! join too). The lattice's account carries one *scoped signing key* per identity; the
//! identity's user JWT is signed with it, so its permissions are the scope's template in the
//! account JWT, not the user JWT. A link change rewrites the account JWT and the server
//! reloads it: users of a changed scope are reconnected once (their clients rejoin by
//! themselves) under the new permissions, the others are left alone; nothing restarts.
//! (Auth callout would also work but needs a service answering every connect; a config
//! reload needs nothing running.)
//!
//! What each identity may do is in [`provider_grants`] and [`host_grants`]; the admin
//! identity (`trellis up` itself and the CLI beside it) may do everything.

use std::collections::{BTreeMap, BTreeSet};

use nkeys::KeyPair;
use trellis_sdk::secret::Secret;
use trellis_sdk::store::StoredLink;
use trellis_sdk::subjects::LatticeSubjects;

/// Why authorization could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Signing failed.
    #[error("cannot sign a NATS JWT: {0}")]
    Sign(String),
    /// An identity name that cannot be one.
    #[error("identity {0:?} is unknown")]
    Unknown(String),
}

/// Publish and subscribe permissions: allow lists and deny lists (deny wins).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    /// Subjects it may publish to.
    pub publish: BTreeSet<String>,
    /// Subjects it may not publish to, even if allowed.
    pub publish_deny: BTreeSet<String>,
    /// Subjects it may subscribe to.
    pub subscribe: BTreeSet<String>,
    /// Subjects it may not subscribe to, even if allowed.
    pub subscribe_deny: BTreeSet<String>,
}

impl Grants {
    fn publish(&mut self, subjects: impl IntoIterator<Item = String>) {
        self.publish.extend(subjects);
    }

    fn subscribe(&mut self, subjects: impl IntoIterator<Item = String>) {
        self.subscribe.extend(subjects);
    }

    fn template(&self) -> serde_json::Value {
        let list = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>();
        serde_json::json!({
            "pub": { "allow": list(&self.publish), "deny": list(&self.publish_deny) },
            "sub": { "allow": list(&self.subscribe), "deny": list(&self.subscribe_deny) },
            "subs": -1, "data": -1, "payload": -1,
        })
    }
}

/// A user's JWT and seed: what a `.creds` file holds. The seed is never printed.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The user JWT.
    pub jwt: String,
    /// The user's nkey seed.
    pub seed: Secret,
}

impl Credentials {
    /// The user's public key (what a lattice records as the key speaking for a source).
    pub fn public_key(&self) -> Option<String> {
        KeyPair::from_seed(self.seed.expose())
            .ok()
            .map(|k| k.public_key())
    }

    /// The `.creds` file text.
    pub fn creds_file(&self) -> String {
        format!(
            "-----BEGIN NATS USER JWT-----\n{}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            self.jwt,
            self.seed.expose()
        )
    }
}

pub use trellis_sdk::subjects::inbox_prefix;

struct Scope {
    signing: KeyPair,
    grants: Grants,
}

/// The keys and identities of one lattice's NATS authorization.
pub struct LatticeAuth {
    operator: KeyPair,
    system: KeyPair,
    account: KeyPair,
    scopes: BTreeMap<String, Scope>,
    /// The operator's and system account's JWTs, made once: a server reloads a config only
    /// if they stay the same.
    fixed: Option<(String, String)>,
}

impl std::fmt::Debug for LatticeAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatticeAuth")
            .field("account", &self.account.public_key())
            .field("identities", &self.scopes.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for LatticeAuth {
    fn default() -> Self {
        Self::new()
    }
}

impl LatticeAuth {
    /// New keys: an operator, its system account and the lattice's account.
    pub fn new() -> Self {
        Self {
            operator: KeyPair::new_operator(),
            system: KeyPair::new_account(),
            account: KeyPair::new_account(),
            scopes: BTreeMap::new(),
            fixed: None,
        }
    }

    /// A user of the lattice's account with no limits: `up` itself and the CLI beside it.
    pub fn admin(&self, name: &str) -> Result<Credentials, AuthError> {
        let claims = serde_json::json!({
            "type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
        });
        user(&self.account, name, claims)
    }

    /// A new user of identity `name` (created with `grants` if new, else its grants kept):
    /// each start of a provider gets a fresh one.
    pub fn identity(&mut self, name: &str, grants: Grants) -> Result<Credentials, AuthError> {
        let scope = self
            .scopes
            .entry(name.to_string())
            .or_insert_with(|| Scope {
                signing: KeyPair::new_account(),
                grants,
            });
        let claims = serde_json::json!({
            "type": "user", "version": 2, "issuer_account": self.account.public_key(),
        });
        user(&scope.signing, name, claims)
    }

    /// Replaces identity `name`'s grants (effective once the server reloads the config);
    /// whether they changed.
    pub fn set_grants(&mut self, name: &str, grants: Grants) -> Result<bool, AuthError> {
        let scope = self
            .scopes
            .get_mut(name)
            .ok_or_else(|| AuthError::Unknown(name.into()))?;
        let changed = scope.grants != grants;
        scope.grants = grants;
        Ok(changed)
    }

    /// The identities, by name.
    pub fn identities(&self) -> impl Iterator<Item = &String> {
        self.scopes.keys()
    }

    /// The authorization part of a nats-server config: operator, system account and the
    /// preloaded accounts (the lattice's with JetStream and every identity's scope).
    pub fn server_config(&mut self) -> Result<String, AuthError> {
        let (operator, system) = match &self.fixed {
            Some(fixed) => fixed.clone(),
            None => {
                let fixed = self.fixed_jwts()?;
                self.fixed = Some(fixed.clone());
                fixed
            }
        };
        let mut limits = unlimited();
        for k in ["mem_storage", "disk_storage", "streams", "consumer"] {
            limits[k] = serde_json::json!(-1);
        }
        let signing_keys: Vec<serde_json::Value> = self
            .scopes
            .iter()
            .map(|(name, scope)| {
                serde_json::json!({
                    "kind": "user_scope",
                    "key": scope.signing.public_key(),
                    "role": name,
                    "template": scope.grants.template(),
                })
            })
            .collect();
        let account = jwt(
            &self.operator,
            &self.account.public_key(),
            "trellis-lattice",
            serde_json::json!({
                "type": "account", "version": 2, "limits": limits, "signing_keys": signing_keys,
            }),
        )?;
        Ok(format!(
            "operator: {operator}\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {sys}: {system}\n  {acc}: {account}\n}}\n",
            sys = self.system.public_key(),
            acc = self.account.public_key(),
        ))
    }

    fn fixed_jwts(&self) -> Result<(String, String), AuthError> {
        let operator = jwt(
            &self.operator,
            &self.operator.public_key(),
            "trellis",
            serde_json::json!({"type": "operator", "version": 2, "system_account": self.system.public_key()}),
        )?;
        let system = jwt(
            &self.operator,
            &self.system.public_key(),
            "SYS",
            serde_json::json!({"type": "account", "version": 2, "limits": unlimited()}),
        )?;
        Ok((operator, system))
    }
}

fn unlimited() -> serde_json::Value {
    serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
    })
}

/// A new user named `name` with `claims`, its JWT signed by `issuer`.
fn user(issuer: &KeyPair, name: &str, claims: serde_json::Value) -> Result<Credentials, AuthError> {
    let user = KeyPair::new_user();
    let jwt = jwt(issuer, &user.public_key(), name, claims)?;
    let seed = user.seed().map_err(|e| AuthError::Sign(e.to_string()))?;
    Ok(Credentials {
        jwt,
        seed: Secret::new(seed),
    })
}

/// A JWT of `nats` claims about `subject`, signed by `issuer`.
fn jwt(
    issuer: &KeyPair,
    subject: &str,
    name: &str,
    nats: serde_json::Value,
) -> Result<String, AuthError> {
    trellis_sdk::nats_jwt::encode(issuer, subject, name, nats)
        .map_err(|e| AuthError::Sign(e.to_string()))
}

/// Read access to one JetStream KV bucket: stream info, gets, and the ordered consumers
/// `keys` and `watch` use (their deliveries and heartbeats go to the reader's inbox).
fn kv_read(bucket: &str) -> Vec<String> {
    let stream = format!("KV_{bucket}");
    vec![
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
        format!("$JS.API.CONSUMER.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.DELETE.{stream}.>"),
        format!("$JS.API.CONSUMER.INFO.{stream}.>"),
        format!("$JS.FC.{stream}.>"),
    ]
}

/// The lattice's own buckets, which only the admin writes.
fn lattice_buckets(s: &LatticeSubjects) -> [String; 3] {
    [
        s.lattice_data_bucket(),
        s.config_data_bucket(),
        s.secret_data_bucket(),
    ]
}

/// Grants of provider `id`, started by host `host_id`: serve its own subjects and control
/// subjects, read the lattice's links and config, report events, ask its host for link
/// secrets, and call the targets of links it is the source of. A `legacy` (1.x) provider
/// uses the plain `_INBOX.` prefix; a Trellis one its own. With `nats_backend`, the provider
/// keeps its own data on the lattice's NATS (keyvalue-nats, messaging-nats without a server
/// of their own): it may also use any subject and JetStream outside the lattice's own and
/// the inboxes of the other `identities`.
pub fn provider_grants(
    s: &LatticeSubjects,
    id: &str,
    host_id: &str,
    links: &[StoredLink],
    legacy: bool,
    nats_backend: Option<&[String]>,
) -> Grants {
    let lattice = s.lattice();
    let mut g = Grants::default();
    g.subscribe([
        format!("{}.wrpc.>", s.wrpc_prefix(id)),
        format!("wasmbus.rpc.{lattice}.{id}.>"),
        // 1.x hosts address link puts to the instance's xkey, unknown until it starts.
        s.link_put("*"),
        s.link_ping_all(),
    ]);
    g.subscribe([if legacy {
        "_INBOX.>".to_string()
    } else {
        format!("{}.>", inbox_prefix(id))
    }]);
    g.publish([
        "_INBOX.>".to_string(),
        format!("wasmbus.evt.{lattice}.>"),
        s.link_secrets(host_id),
        "$JS.API.INFO".to_string(),
    ]);
    for bucket in &lattice_buckets(s)[..2] {
        g.publish(kv_read(bucket));
    }
    for l in links.iter().filter(|l| l.source_id == id) {
        g.publish([format!("{}.wrpc.>", s.wrpc_prefix(&l.target))]);
    }
    if let Some(identities) = nats_backend {
        backend(s, &mut g, id, links, identities);
    }
    g
}

/// A provider that keeps its data on the lattice's NATS: any subject and JetStream API,
/// but not the lattice's own subjects (other than its grants above) nor writes to the
/// lattice's buckets.
fn backend(
    s: &LatticeSubjects,
    g: &mut Grants,
    id: &str,
    links: &[StoredLink],
    identities: &[String],
) {
    let lattice = s.lattice();
    g.publish([">".to_string()]);
    g.subscribe([">".to_string()]);
    // Deny wins over allow, so the lattice's space is denied target by target: every
    // other id the links know, and the control and host subjects.
    let mut others: BTreeSet<&str> = BTreeSet::new();
    for l in links {
        others.insert(&l.source_id);
        others.insert(&l.target);
    }
    others.remove(id);
    let linked: BTreeSet<&str> = links
        .iter()
        .filter(|l| l.source_id == id)
        .map(|l| l.target.as_str())
        .collect();
    for other in others {
        let serving = format!("{}.wrpc.>", s.wrpc_prefix(other));
        g.subscribe_deny.insert(serving.clone());
        if !linked.contains(other) {
            g.publish_deny.insert(serving);
        }
        g.publish_deny
            .insert(format!("wasmbus.rpc.{lattice}.{other}.>"));
        g.subscribe_deny
            .insert(format!("wasmbus.rpc.{lattice}.{other}.>"));
    }
    g.publish_deny.insert("wasmbus.ctl.>".to_string());
    g.subscribe_deny.insert("wasmbus.ctl.>".to_string());
    g.subscribe_deny.insert(format!("wasmbus.evt.{lattice}.>"));
    for other in identities.iter().filter(|i| *i != id) {
        g.subscribe_deny
            .insert(format!("{}.>", inbox_prefix(other)));
    }
    for bucket in lattice_buckets(s) {
        let stream = format!("KV_{bucket}");
        g.publish_deny.insert(format!("$KV.{bucket}.>"));
        for op in ["CREATE", "UPDATE", "DELETE", "PURGE"] {
            g.publish_deny
                .insert(format!("$JS.API.STREAM.{op}.{stream}"));
        }
        g.publish_deny
            .insert(format!("$JS.API.STREAM.MSG.DELETE.{stream}"));
    }
}

/// Grants of host `host_id` running `components` and supervising `providers`: serve its
/// components, call the targets their links name and the `targets` they may pick at runtime, answer host ping and inventory and its
/// providers' link secrets requests, reach its providers' control subjects, read the
/// lattice's links, config and secrets.
pub fn host_grants(
    s: &LatticeSubjects,
    host_id: &str,
    components: &[String],
    providers: &[String],
    links: &[StoredLink],
    targets: &[String],
) -> Grants {
    let lattice = s.lattice();
    let mut g = Grants::default();
    for c in components {
        g.subscribe([format!("{}.wrpc.>", s.wrpc_prefix(c))]);
    }
    g.subscribe([
        s.host_ping(),
        s.host_inventory(host_id),
        s.link_secrets(host_id),
        format!("{}.>", inbox_prefix(host_id)),
    ]);
    g.publish([
        "_INBOX.>".to_string(),
        format!("wasmbus.evt.{lattice}.>"),
        "$JS.API.INFO".to_string(),
    ]);
    for p in providers {
        g.publish([format!("wasmbus.rpc.{lattice}.{p}.>")]);
    }
    for bucket in lattice_buckets(s) {
        g.publish(kv_read(&bucket));
    }
    for l in links.iter().filter(|l| components.contains(&l.source_id)) {
        g.publish([format!("{}.wrpc.>", s.wrpc_prefix(&l.target))]);
    }
    // Targets its components may pick at runtime: called, and asked whether they answer.
    if !targets.is_empty() {
        g.publish([s.host_ping()]);
    }
    for t in targets {
        g.publish([format!("{}.wrpc.>", s.wrpc_prefix(t)), s.health(t)]);
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_may_call_its_links_and_its_components_targets_only() {
        let s = LatticeSubjects::new("lat").unwrap();
        let links = [
            StoredLink::new("web", "kv", "wasi", "keyvalue", ["store"]),
            StoredLink::new("other", "blobs", "wasi", "blobstore", ["blobstore"]),
        ];
        let g = host_grants(
            &s,
            "h1",
            &["web".into()],
            &["kv".into()],
            &links,
            &["picked".into()],
        );
        for allowed in [
            "lat.kv.wrpc.>",
            "lat.picked.wrpc.>",
            "wasmbus.rpc.lat.picked.health",
            "wasmbus.ctl.v1.lat.host.ping",
        ] {
            assert!(g.publish.contains(allowed), "{allowed}: {:?}", g.publish);
        }
        assert!(!g.publish.contains("lat.blobs.wrpc.>"));
        assert!(g.subscribe.contains("lat.web.wrpc.>"));
        assert!(g.subscribe.contains("_INBOX.h1.>"));
        assert!(!g.subscribe.iter().any(|s| s == "_INBOX.>" || s == ">"));
        // No targets: no host ping.
        let g = host_grants(&s, "h1", &["web".into()], &[], &links, &[]);
        assert!(!g.publish.contains("wasmbus.ctl.v1.lat.host.ping"));
    }

    #[test]
    fn a_provider_serves_itself_and_calls_its_links_only() {
        let s = LatticeSubjects::new("lat").unwrap();
        let links = [
            StoredLink::new("http", "web", "wasi", "http", ["incoming-handler"]),
            StoredLink::new("web", "kv", "wasi", "keyvalue", ["store"]),
        ];
        let g = provider_grants(&s, "http", "h1", &links, false, None);
        assert!(g.publish.contains("lat.web.wrpc.>"));
        assert!(!g.publish.contains("lat.kv.wrpc.>"));
        assert!(g.subscribe.contains("lat.http.wrpc.>"));
        assert!(g.subscribe.contains("_INBOX.http.>"));
        let legacy = provider_grants(&s, "http", "h1", &links, true, None);
        assert!(legacy.subscribe.contains("_INBOX.>"));
        // A provider keeping its data on the lattice's NATS: all but the lattice's space.
        let ids = ["admin".to_string(), "h1".into(), "kv".into(), "http".into()];
        let kv = provider_grants(&s, "kv", "h1", &links, false, Some(&ids));
        assert!(kv.publish.contains(">"));
        assert!(kv.publish_deny.contains("lat.http.wrpc.>"));
        assert!(kv.subscribe_deny.contains("lat.web.wrpc.>"));
        assert!(kv.subscribe_deny.contains("_INBOX.h1.>"));
        assert!(!kv.subscribe_deny.contains("_INBOX.kv.>"));
        assert!(kv.publish_deny.contains("$KV.LATTICEDATA_lat.>"));
    }
}
