//! Links: what they are on the wire, how they are identified, and the provider's table of them.
//!
//! A link says "component `source_id` may call `target` for these interfaces of
//! `wit_namespace:wit_package`, under link name `name`, with this config". 1.x keyed its SDK
//! tables by source id alone, so two links from one component clobbered each other; here a
//! link is identified by its whole [`LinkKey`], and re-putting a link with other config is an
//! update that reaches the provider instead of a duplicate that is dropped.
//!
//! [`LinkTable`] is the single place that keeps link bookkeeping: the definition, its state
//! (active, failed with the error, purged) and call counts. It decides what a put or a delete
//! means (new, changed, unchanged), so pushes from a 1.x host and pulls from the lattice store
//! can both feed it, in any order and any number of times.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The link name used when none is given (*1.x*).
pub const DEFAULT_LINK_NAME: &str = "default";

fn default_link_name() -> String {
    DEFAULT_LINK_NAME.to_string()
}

/// Secrets attached to a link, as the host sent them (sealed for this provider instance by a
/// 1.x host). Opaque to the SDK and never printed.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LinkSecrets(pub serde_json::Value);

impl LinkSecrets {
    /// Sealed bytes as 1.x carries them (a JSON array of byte values).
    pub fn from_sealed(bytes: &[u8]) -> Self {
        Self(serde_json::Value::Array(
            bytes.iter().map(|b| serde_json::Value::from(*b)).collect(),
        ))
    }

    /// The sealed bytes; `None` when the value is not an array of byte values.
    pub fn sealed(&self) -> Option<Vec<u8>> {
        self.0
            .as_array()?
            .iter()
            .map(|v| v.as_u64().and_then(|n| u8::try_from(n).ok()))
            .collect()
    }
}

impl std::fmt::Debug for LinkSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// A link as sent to providers (*1.x* `InterfaceLinkDefinition`), with config resolved to
/// key/value maps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkDefinition {
    /// The caller: a component or provider id.
    pub source_id: String,
    /// The callee: a component or provider id.
    pub target: String,
    /// The link name (`default` unless named).
    #[serde(default = "default_link_name")]
    pub name: String,
    /// WIT namespace of the linked interfaces (`wasi`).
    pub wit_namespace: String,
    /// WIT package of the linked interfaces (`keyvalue`).
    pub wit_package: String,
    /// The linked interfaces (`["store", "atomics"]`).
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Config for the source side.
    #[serde(default)]
    pub source_config: HashMap<String, String>,
    /// Config for the target side.
    #[serde(default)]
    pub target_config: HashMap<String, String>,
    /// Secrets for the source side, as sent by the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_secrets: Option<LinkSecrets>,
    /// Secrets for the target side, as sent by the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_secrets: Option<LinkSecrets>,
}

impl LinkDefinition {
    /// The identity of this link.
    pub fn key(&self) -> LinkKey {
        let mut interfaces = self.interfaces.clone();
        interfaces.sort();
        interfaces.dedup();
        LinkKey {
            source_id: self.source_id.clone(),
            target: self.target.clone(),
            name: self.name.clone(),
            wit_namespace: self.wit_namespace.clone(),
            wit_package: self.wit_package.clone(),
            interfaces,
        }
    }

    /// Whether `key` identifies this link (what `self.key() == *key` says, without copying).
    fn is_identified_by(&self, key: &LinkKey) -> bool {
        self.source_id == key.source_id
            && self.target == key.target
            && self.name == key.name
            && self.wit_namespace == key.wit_namespace
            && self.wit_package == key.wit_package
            && self.has_interface_set(&key.interfaces)
    }

    /// Whether this link's interfaces, as a set, are `sorted` (sorted and deduplicated, as
    /// in a [`LinkKey`]). Checked on every served call, so without sorting a copy.
    fn has_interface_set(&self, sorted: &[String]) -> bool {
        self.interfaces
            .iter()
            .all(|i| sorted.binary_search(i).is_ok())
            && sorted.iter().all(|k| self.interfaces.contains(k))
    }

    /// Whether the link covers wire instance `instance` (`ns:pkg/iface@version`, or the
    /// `wrpc:` wire variant of a WASI package, which 1.x hosts substitute for resource-based
    /// interfaces).
    pub fn covers_instance(&self, instance: &str) -> bool {
        let Some((pkg, rest)) = instance.split_once('/') else {
            return false;
        };
        let iface = rest.split('@').next().unwrap_or(rest);
        let Some((ns, pkg)) = pkg.split_once(':') else {
            return false;
        };
        pkg == self.wit_package
            && (ns == self.wit_namespace || ns == "wrpc")
            && self.interfaces.iter().any(|i| i == iface)
    }

    /// Checks the fields a provider relies on.
    pub fn validate(&self) -> Result<(), crate::error::InvalidName> {
        crate::subjects::validate_token("link source id", &self.source_id)?;
        crate::subjects::validate_token("link target", &self.target)?;
        crate::subjects::validate_token("link name", &self.name)?;
        Ok(())
    }
}

/// What identifies a link: source, target, name, namespace, package and interfaces.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LinkKey {
    /// The caller.
    pub source_id: String,
    /// The callee.
    pub target: String,
    /// The link name.
    pub name: String,
    /// WIT namespace.
    pub wit_namespace: String,
    /// WIT package.
    pub wit_package: String,
    /// Interfaces, sorted.
    pub interfaces: Vec<String>,
}

impl std::fmt::Display for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} -[{}:{}/{{{}}} as {}]-> {}",
            self.source_id,
            self.wit_namespace,
            self.wit_package,
            self.interfaces.join(","),
            self.name,
            self.target
        )
    }
}

/// Selects links for delete and purge: every field given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSelector {
    /// The caller.
    pub source_id: String,
    /// The callee; any if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The link name; `default` if absent.
    #[serde(default = "default_link_name")]
    pub name: String,
    /// WIT namespace; any if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wit_namespace: Option<String>,
    /// WIT package; any if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wit_package: Option<String>,
}

impl LinkSelector {
    /// Whether `key` is selected.
    pub fn matches(&self, key: &LinkKey) -> bool {
        key.source_id == self.source_id
            && key.name == self.name
            && self.target.as_ref().is_none_or(|t| *t == key.target)
            && self
                .wit_namespace
                .as_ref()
                .is_none_or(|n| *n == key.wit_namespace)
            && self
                .wit_package
                .as_ref()
                .is_none_or(|p| *p == key.wit_package)
    }

    /// The selector matching exactly the link `key` (and any link differing only by
    /// interfaces).
    pub fn for_key(key: &LinkKey) -> Self {
        Self {
            source_id: key.source_id.clone(),
            target: Some(key.target.clone()),
            name: key.name.clone(),
            wit_namespace: Some(key.wit_namespace.clone()),
            wit_package: Some(key.wit_package.clone()),
        }
    }
}

/// The state of one link in a provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LinkState {
    /// Set up and serving.
    Active,
    /// The provider could not set it up; calls over it are refused.
    Failed {
        /// Why, as the provider reported it.
        error: String,
    },
    /// Purged: its resources were dropped; calls are refused until it is put again.
    Purged,
}

/// One link as the provider holds it.
#[derive(Clone, Debug)]
pub struct LinkEntry {
    /// The definition last put.
    pub definition: Arc<LinkDefinition>,
    /// Its state.
    pub state: LinkState,
    /// Calls admitted over it.
    pub calls: u64,
    /// Calls refused over it (failed or purged).
    pub refused: u64,
    /// When it was last put (Unix milliseconds).
    pub updated_ms: u64,
}

/// What a put means for the table.
#[derive(Clone, Debug, PartialEq)]
pub enum PutOutcome {
    /// A link not seen before.
    New,
    /// A known link whose config or secrets changed (delivered to the provider as an update).
    Changed,
    /// The same link again: nothing to do (a 1.x re-push, or the store echoing a push).
    Unchanged,
    /// A known link that was purged or failed: set up again.
    Revived,
}

/// Which side of a link the provider is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkRole {
    /// The provider is the link's source (it calls the target).
    Source,
    /// The provider is the link's target (it is called).
    Target,
}

/// Serialisable status of one link, as reported by link ping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// The link.
    pub link: LinkKey,
    /// Which side this provider is on.
    pub role: LinkRole,
    /// Its state.
    #[serde(flatten)]
    pub state: LinkState,
    /// Calls admitted over it.
    pub calls: u64,
    /// Calls refused over it.
    pub refused: u64,
    /// When it was last put (Unix milliseconds).
    pub updated_ms: u64,
    /// What the provider delivered over it, for links it delivers events over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<crate::delivery::DeliverySnapshot>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The links one provider instance knows, keyed by [`LinkKey`].
#[derive(Debug, Default)]
pub struct LinkTable {
    provider_id: String,
    links: BTreeMap<LinkKey, LinkEntry>,
    /// Delivery counters of links this provider delivers events over (kept apart from the
    /// entries: a provider starts delivering while its link is still being set up).
    deliveries: BTreeMap<LinkKey, Arc<crate::delivery::DeliveryStats>>,
}

impl LinkTable {
    /// An empty table for provider `provider_id`.
    pub fn new(provider_id: impl Into<String>) -> Self {
        Self {
            provider_id: provider_id.into(),
            links: BTreeMap::new(),
            deliveries: BTreeMap::new(),
        }
    }

    /// Which side of `link` this provider is on, if any.
    pub fn role(&self, link: &LinkDefinition) -> Option<LinkRole> {
        if link.target == self.provider_id {
            Some(LinkRole::Target)
        } else if link.source_id == self.provider_id {
            Some(LinkRole::Source)
        } else {
            None
        }
    }

    /// Classifies a put without changing the table.
    pub fn classify(&self, link: &LinkDefinition) -> PutOutcome {
        match self.links.get(&link.key()) {
            None => PutOutcome::New,
            Some(e) if e.state != LinkState::Active => PutOutcome::Revived,
            Some(e) if *e.definition == *link => PutOutcome::Unchanged,
            Some(_) => PutOutcome::Changed,
        }
    }

    /// Records the result of setting up `link`.
    pub fn record(&mut self, link: LinkDefinition, state: LinkState) {
        let key = link.key();
        let updated_ms = now_ms();
        match self.links.get_mut(&key) {
            Some(e) => {
                e.definition = Arc::new(link);
                e.state = state;
                e.updated_ms = updated_ms;
            }
            None => {
                self.links.insert(
                    key,
                    LinkEntry {
                        definition: Arc::new(link),
                        state,
                        calls: 0,
                        refused: 0,
                        updated_ms,
                    },
                );
            }
        }
    }

    /// Removes the link `key`, returning it.
    pub fn remove_key(&mut self, key: &LinkKey) -> Option<LinkEntry> {
        self.deliveries.remove(key);
        self.links.remove(key)
    }

    /// The delivery counters of link `key` (made on first use; they go with the link).
    pub fn delivery_stats(&mut self, key: &LinkKey) -> Arc<crate::delivery::DeliveryStats> {
        Arc::clone(self.deliveries.entry(key.clone()).or_default())
    }

    /// Removes every link `selector` matches and returns them.
    pub fn remove(&mut self, selector: &LinkSelector) -> Vec<LinkEntry> {
        let keys: Vec<LinkKey> = self
            .links
            .keys()
            .filter(|k| selector.matches(k))
            .cloned()
            .collect();
        keys.iter().filter_map(|k| self.remove_key(k)).collect()
    }

    /// Marks every link `selector` matches as purged; returns the definitions that were not
    /// purged already (their resources must be dropped).
    pub fn purge(&mut self, selector: &LinkSelector) -> Vec<LinkDefinition> {
        let mut purged = Vec::new();
        for (key, entry) in self.links.iter_mut() {
            if selector.matches(key) && entry.state != LinkState::Purged {
                entry.state = LinkState::Purged;
                entry.updated_ms = now_ms();
                purged.push(LinkDefinition::clone(&entry.definition));
            }
        }
        purged
    }

    /// Finds the link a call arrived over (this provider as target) and counts the call.
    /// Returns the entry's definition if it is active, the reason it is refused otherwise.
    pub fn admit(
        &mut self,
        source_id: &str,
        link_name: &str,
        instance: &str,
    ) -> Result<Arc<LinkDefinition>, LinkRefusal> {
        // Keys sort by source id first: only this caller's links are visited.
        let from = LinkKey {
            source_id: source_id.to_string(),
            target: String::new(),
            name: String::new(),
            wit_namespace: String::new(),
            wit_package: String::new(),
            interfaces: Vec::new(),
        };
        let provider_id = &self.provider_id;
        let found = self
            .links
            .range_mut(from..)
            .take_while(|(k, _)| k.source_id == source_id)
            .map(|(_, e)| e)
            .find(|e| {
                e.definition.name == link_name
                    && e.definition.target == *provider_id
                    && e.definition.covers_instance(instance)
            });
        match found {
            None => Err(LinkRefusal::NoLink),
            Some(entry) => match &entry.state {
                LinkState::Active => {
                    entry.calls += 1;
                    Ok(Arc::clone(&entry.definition))
                }
                LinkState::Failed { error } => {
                    entry.refused += 1;
                    Err(LinkRefusal::Failed(error.clone()))
                }
                LinkState::Purged => {
                    entry.refused += 1;
                    Err(LinkRefusal::Purged)
                }
            },
        }
    }

    /// The status of every link, for link ping.
    pub fn statuses(&self) -> Vec<LinkStatus> {
        self.links
            .values()
            .map(|e| LinkStatus {
                link: e.definition.key(),
                role: self.role(&e.definition).unwrap_or(LinkRole::Target),
                state: e.state.clone(),
                calls: e.calls,
                refused: e.refused,
                updated_ms: e.updated_ms,
                delivery: self
                    .deliveries
                    .get(&e.definition.key())
                    .map(|d| d.snapshot()),
            })
            .collect()
    }

    /// The entry for `key`.
    pub fn get(&self, key: &LinkKey) -> Option<&LinkEntry> {
        self.links.get(key)
    }

    /// Every entry.
    pub fn iter(&self) -> impl Iterator<Item = &LinkEntry> {
        self.links.values()
    }
}

/// Why a call over a link is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkRefusal {
    /// No link from the caller with that name covers the interface.
    #[error("no link")]
    NoLink,
    /// The link failed to set up.
    #[error("link failed: {0}")]
    Failed(String),
    /// The link was purged.
    #[error("link purged; put it again to use it")]
    Purged,
}

/// What a provider keeps per link (its parsed config, its connections), by link.
///
/// Put it when the SDK hands the provider a link's config, drop it when the link is deleted,
/// and find it from a served call's [`CallContext::link`](crate::runtime::CallContext::link).
/// Cheap to clone: clones share one table.
///
/// ```
/// use trellis_sdk::link::{LinkDefinition, LinkStates};
///
/// let states: LinkStates<String> = LinkStates::default();
/// let link: LinkDefinition = serde_json::from_value(serde_json::json!({
///     "source_id": "web", "target": "kv", "wit_namespace": "wasi",
///     "wit_package": "keyvalue", "interfaces": ["store"],
/// }))?;
/// states.insert(&link, "redis://db-1".to_string());
/// assert_eq!(states.get(&link).as_deref().map(String::as_str), Some("redis://db-1"));
/// states.remove(&link);
/// assert!(states.get(&link).is_none());
/// # Ok::<(), serde_json::Error>(())
/// ```
pub struct LinkStates<T> {
    map: Arc<std::sync::RwLock<StateMap<T>>>,
}

/// States by a hash of their link's identity. Looked up on every served call, so a lookup
/// hashes the call's link definition in place instead of building its [`LinkKey`] (five
/// string copies); links whose identities collide share a bucket.
struct StateMap<T> {
    /// Seeded per table; a fast hash, as it runs on every served call.
    hasher: foldhash::fast::RandomState,
    buckets: HashMap<u64, Vec<(LinkKey, Arc<T>)>>,
}

impl<T> StateMap<T> {
    /// The identity hash of `link`; equal to [`StateMap::key_hash`] of its key.
    fn link_hash(&self, link: &LinkDefinition) -> u64 {
        self.identity_hash(
            [
                &link.source_id,
                &link.target,
                &link.name,
                &link.wit_namespace,
                &link.wit_package,
            ],
            &link.interfaces,
        )
    }

    fn key_hash(&self, key: &LinkKey) -> u64 {
        self.identity_hash(
            [
                &key.source_id,
                &key.target,
                &key.name,
                &key.wit_namespace,
                &key.wit_package,
            ],
            &key.interfaces,
        )
    }

    /// Hashes the names and the *set* of `interfaces`, whatever their order and repeats (a
    /// link definition's list is as its sender wrote it; a key's is sorted): the sum of the
    /// distinct interfaces' hashes. No copy is sorted, as this runs on every served call.
    fn identity_hash(&self, names: [&String; 5], interfaces: &[String]) -> u64 {
        use std::hash::{BuildHasher as _, Hash as _, Hasher as _};
        let set = interfaces
            .iter()
            .enumerate()
            .filter(|(i, name)| !interfaces[..*i].contains(name))
            .fold(0u64, |sum, (_, name)| {
                sum.wrapping_add(self.hasher.hash_one(name))
            });
        let mut h = self.hasher.build_hasher();
        names.hash(&mut h);
        set.hash(&mut h);
        h.finish()
    }

    fn len(&self) -> usize {
        self.buckets.values().map(Vec::len).sum()
    }
}

impl<T> Default for LinkStates<T> {
    fn default() -> Self {
        Self {
            map: Arc::new(std::sync::RwLock::new(StateMap {
                hasher: foldhash::fast::RandomState::default(),
                buckets: HashMap::new(),
            })),
        }
    }
}

impl<T> Clone for LinkStates<T> {
    fn clone(&self) -> Self {
        Self {
            map: Arc::clone(&self.map),
        }
    }
}

impl<T> std::fmt::Debug for LinkStates<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkStates")
            .field("links", &self.read().len())
            .finish()
    }
}

impl<T> LinkStates<T> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, StateMap<T>> {
        // Each operation is one insert, remove or lookup: a panic elsewhere cannot leave the
        // table half-changed, so a poisoned lock is still safe to use.
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, StateMap<T>> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the state of `link`, replacing what an earlier version of it had.
    pub fn insert(&self, link: &LinkDefinition, state: T) {
        let key = link.key();
        let mut map = self.write();
        let hash = map.key_hash(&key);
        let bucket = map.buckets.entry(hash).or_default();
        bucket.retain(|(k, _)| *k != key);
        bucket.push((key, Arc::new(state)));
    }

    /// Forgets `link`; returns its state if it had one.
    pub fn remove(&self, link: &LinkDefinition) -> Option<Arc<T>> {
        let mut map = self.write();
        let hash = map.link_hash(link);
        let bucket = map.buckets.get_mut(&hash)?;
        let at = bucket.iter().position(|(k, _)| link.is_identified_by(k))?;
        let (_, state) = bucket.swap_remove(at);
        if bucket.is_empty() {
            map.buckets.remove(&hash);
        }
        Some(state)
    }

    /// Forgets every link's state (a provider shutting down).
    pub fn clear(&self) {
        self.write().buckets.clear();
    }

    /// Every link's state, at this moment (for checks over all links, such as health).
    pub fn all(&self) -> Vec<(LinkKey, Arc<T>)> {
        self.read()
            .buckets
            .values()
            .flatten()
            .map(|(k, state)| (k.clone(), Arc::clone(state)))
            .collect()
    }

    /// The state of `link`, if it has one.
    pub fn get(&self, link: &LinkDefinition) -> Option<Arc<T>> {
        let map = self.read();
        map.buckets
            .get(&map.link_hash(link))?
            .iter()
            .find(|(k, _)| link.is_identified_by(k))
            .map(|(_, state)| Arc::clone(state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(source: &str, name: &str, cfg: &[(&str, &str)]) -> LinkDefinition {
        LinkDefinition {
            source_id: source.into(),
            target: "prov".into(),
            name: name.into(),
            wit_namespace: "wasi".into(),
            wit_package: "keyvalue".into(),
            interfaces: vec!["store".into(), "atomics".into()],
            source_config: HashMap::new(),
            target_config: cfg
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            source_secrets: None,
            target_secrets: None,
        }
    }

    #[test]
    fn link_states_follow_link_identity() {
        let states: LinkStates<&str> = LinkStates::default();
        let a = link("web", "default", &[("url", "one")]);
        states.insert(&a, "a");
        // Interfaces in another order, repeated, and other config: the same link.
        let mut same = link("web", "default", &[("url", "two")]);
        same.interfaces = vec!["store".into(), "atomics".into(), "store".into()];
        assert_eq!(states.get(&same).as_deref(), Some(&"a"));
        // Any other part of the identity: another link.
        let other_name = link("web", "cache", &[]);
        let mut other_iface = link("web", "default", &[]);
        other_iface.interfaces = vec!["store".into()];
        assert!(states.get(&other_name).is_none());
        assert!(states.get(&other_iface).is_none());
        states.insert(&other_name, "b");
        // Re-putting a link replaces its state.
        states.insert(&same, "a2");
        assert_eq!(states.get(&a).as_deref(), Some(&"a2"));
        assert_eq!(states.read().len(), 2);
        assert_eq!(states.remove(&same).as_deref(), Some(&"a2"));
        assert!(states.get(&a).is_none());
        assert_eq!(states.get(&other_name).as_deref(), Some(&"b"));
        assert!(states.remove(&a).is_none());
    }

    #[test]
    fn two_named_links_from_one_component_do_not_clobber() {
        let mut t = LinkTable::new("prov");
        t.record(link("c", "default", &[("b", "1")]), LinkState::Active);
        t.record(link("c", "cache", &[("b", "2")]), LinkState::Active);
        assert_eq!(t.iter().count(), 2);
        let a = t
            .admit("c", "cache", "wrpc:keyvalue/store@0.2.0-draft")
            .unwrap();
        assert_eq!(a.target_config["b"], "2");
        let d = t
            .admit("c", "default", "wasi:keyvalue/atomics@0.2.0-draft")
            .unwrap();
        assert_eq!(d.target_config["b"], "1");
        assert_eq!(
            t.admit("c", "other", "wrpc:keyvalue/store@0.2.0-draft"),
            Err(LinkRefusal::NoLink)
        );
        assert_eq!(
            t.admit("c", "default", "wrpc:keyvalue/batch@0.2.0-draft"),
            Err(LinkRefusal::NoLink)
        );
    }

    #[test]
    fn puts_are_classified() {
        let mut t = LinkTable::new("prov");
        let l = link("c", "default", &[("b", "1")]);
        assert_eq!(t.classify(&l), PutOutcome::New);
        t.record(l.clone(), LinkState::Active);
        assert_eq!(t.classify(&l), PutOutcome::Unchanged);
        let changed = link("c", "default", &[("b", "2")]);
        assert_eq!(t.classify(&changed), PutOutcome::Changed);
        t.purge(&LinkSelector::for_key(&l.key()));
        assert_eq!(t.classify(&l), PutOutcome::Revived);
        assert_eq!(
            t.admit("c", "default", "wrpc:keyvalue/store@0.2.0-draft"),
            Err(LinkRefusal::Purged)
        );
    }

    #[test]
    fn one_x_json_round_trips_with_defaults() {
        let l: LinkDefinition = serde_json::from_str(
            r#"{"source_id":"c","target":"p","wit_namespace":"wasi","wit_package":"keyvalue","interfaces":["store"]}"#,
        )
        .unwrap();
        assert_eq!(l.name, "default");
        assert!(l.target_config.is_empty());
    }
}
