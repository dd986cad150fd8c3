//! `trellis link …`, `trellis config …` and `trellis inventory`: the lattice's links, named
//! config and what runs, read and changed over NATS.
//!
//! Writes go through the host library's validated [`LatticeAdmin`] (the same checks `up`
//! and the host use); live state comes from link ping (providers) and host ping (hosts).
//! Each command returns an [`Outcome`] whose exit code means something to a script.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;
use trellis_host::lattice::LatticeAdmin;
use trellis_sdk::admin::{
    HostInventory, PingReply, ping_hosts, ping_links, provider_health, purge_links,
};
use trellis_sdk::link::{LinkSelector, LinkState, LinkStatus};
use trellis_sdk::store::{LatticeStore, StoredLink};
use trellis_sdk::subjects::LatticeSubjects;

use crate::manifest::parse_wit;
use crate::output::{Out, Table};

/// Exit codes (also in `trellis --help`).
pub mod exit {
    /// Done.
    pub const OK: u8 = 0;
    /// Could not do it: NATS unreachable, refused by validation, a provider error.
    pub const FAILED: u8 = 1;
    /// Bad command line or manifest.
    pub const USAGE: u8 = 2;
    /// Done, and something is unhealthy (a failed link, a failed provider).
    pub const UNHEALTHY: u8 = 3;
    /// What was asked for does not exist.
    pub const NOT_FOUND: u8 = 4;
}

/// A command's result: what to print and the exit code.
pub struct Outcome {
    /// Exit code.
    pub code: u8,
}

/// Everything a command needs to reach the lattice.
pub struct Ctx {
    /// The NATS connection.
    pub nats: async_nats::Client,
    /// The lattice's subjects.
    pub subjects: LatticeSubjects,
    /// How long scatter-gather requests collect answers.
    pub wait: Duration,
    /// Output format.
    pub out: Out,
}

impl Ctx {
    async fn admin(&self) -> anyhow::Result<LatticeAdmin> {
        let store = LatticeStore::open(&self.nats, &self.subjects).await?;
        Ok(LatticeAdmin::new(
            store,
            self.nats.clone(),
            self.subjects.clone(),
            format!("trellis-cli-{}", std::process::id()),
        ))
    }

    async fn pings(&self, provider: Option<&str>) -> anyhow::Result<Vec<PingReply>> {
        Ok(ping_links(&self.nats, &self.subjects, provider, self.wait).await?)
    }
}

/// `link put`.
#[allow(clippy::too_many_arguments)]
pub async fn link_put(
    cx: &Ctx,
    source: &str,
    target: &str,
    wit: &str,
    name: &str,
    source_config: &[String],
    target_config: &[String],
) -> anyhow::Result<Outcome> {
    let (namespace, package, interfaces) = parse_wit(wit).map_err(anyhow::Error::msg)?;
    let link = StoredLink::new(source, target, &namespace, &package, interfaces)
        .named(name)
        .with_source_config(source_config.iter().cloned())
        .with_target_config(target_config.iter().cloned());
    cx.admin().await?.put_link(link.clone()).await?;
    cx.out
        .done(&format!("link put: {}", show_link(&link)), &link);
    Ok(Outcome { code: exit::OK })
}

/// `link del`.
pub async fn link_del(cx: &Ctx, source: &str, wit: &str, name: &str) -> anyhow::Result<Outcome> {
    let (namespace, package) = match parse_wit(wit) {
        Ok((n, p, _)) => (n, p),
        Err(_) => wit
            .split_once(':')
            .map(|(n, p)| (n.to_string(), p.to_string()))
            .ok_or_else(|| anyhow::anyhow!("{wit:?} is not of the form namespace:package"))?,
    };
    let removed = cx
        .admin()
        .await?
        .delete_link(source, name, &namespace, &package)
        .await?;
    let body = serde_json::json!({ "deleted": removed });
    if removed == 0 {
        cx.out.done(
            &format!("no link from {source} for {namespace}:{package} named {name:?}"),
            &body,
        );
        return Ok(Outcome {
            code: exit::NOT_FOUND,
        });
    }
    cx.out.done(
        &format!("link deleted: {source} {namespace}:{package} ({name})"),
        &body,
    );
    Ok(Outcome { code: exit::OK })
}

/// A stored link with its live state from link ping.
#[derive(Serialize)]
struct LinkView {
    #[serde(flatten)]
    link: StoredLink,
    /// `active`, `failed`, `purged` or `unreported` (no provider holds it: component to
    /// component, or the provider is not running).
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn status_of(link: &StoredLink, pings: &[PingReply]) -> (String, Option<String>) {
    let found = pings.iter().flat_map(|r| &r.links).find(|s| {
        s.link.source_id == link.source_id
            && s.link.target == link.target
            && s.link.name == link.name
            && s.link.wit_namespace == link.wit_namespace
            && s.link.wit_package == link.wit_package
    });
    match found.map(|s| &s.state) {
        Some(LinkState::Active) => ("active".into(), None),
        Some(LinkState::Failed { error }) => ("failed".into(), Some(error.clone())),
        Some(LinkState::Purged) => ("purged".into(), None),
        None => ("unreported".into(), None),
    }
}

/// Stored links with their live state.
fn link_views(links: Vec<StoredLink>, pings: &[PingReply]) -> Vec<LinkView> {
    links
        .into_iter()
        .map(|link| {
            let (status, error) = status_of(&link, pings);
            LinkView {
                link,
                status,
                error,
            }
        })
        .collect()
}

fn show_link(l: &StoredLink) -> String {
    format!(
        "{} → {} ({}:{}/{}) as {}",
        l.source_id,
        l.target,
        l.wit_namespace,
        l.wit_package,
        l.interfaces.join(","),
        l.name
    )
}

fn links_table(views: &[LinkView]) -> Table {
    let mut t = Table::new(["SOURCE", "TARGET", "WIT", "NAME", "CONFIG", "STATUS"]);
    for v in views {
        let l = &v.link;
        let mut config = Vec::new();
        if !l.source_config.is_empty() {
            config.push(format!("source: {}", l.source_config.join(",")));
        }
        if !l.target_config.is_empty() {
            config.push(format!("target: {}", l.target_config.join(",")));
        }
        let status = match &v.error {
            Some(e) => format!("{}: {e}", v.status),
            None => v.status.clone(),
        };
        t.row([
            l.source_id.clone(),
            l.target.clone(),
            format!(
                "{}:{}/{}",
                l.wit_namespace,
                l.wit_package,
                l.interfaces.join(",")
            ),
            l.name.clone(),
            config.join("; "),
            status,
        ]);
    }
    t
}

/// `link get`.
pub async fn link_get(cx: &Ctx, source: Option<&str>) -> anyhow::Result<Outcome> {
    let links = cx.admin().await?.links(source).await?;
    let pings = cx.pings(None).await?;
    let views = link_views(links, &pings);
    let unhealthy = views.iter().any(|v| v.status == "failed");
    cx.out.table(&links_table(&views), &views);
    Ok(Outcome {
        code: if unhealthy { exit::UNHEALTHY } else { exit::OK },
    })
}

fn ping_table(replies: &[PingReply]) -> Table {
    let mut t = Table::new([
        "PROVIDER", "INSTANCE", "SOURCE", "TARGET", "WIT", "NAME", "ROLE", "STATE", "CALLS",
        "REFUSED",
    ]);
    for r in replies {
        for s in &r.links {
            let LinkStatus {
                link,
                role,
                state,
                calls,
                refused,
                delivery,
                ..
            } = s;
            let mut state = match state {
                LinkState::Active => "active".to_string(),
                LinkState::Failed { error } => format!("failed: {error}"),
                LinkState::Purged => "purged".to_string(),
            };
            if let Some(d) = delivery {
                state.push_str(&format!(
                    " (delivered {}, retried {}, dead-lettered {}, dropped {}, queued {}, lag {})",
                    d.delivered, d.retried, d.dead_lettered, d.dropped, d.queued, d.lag
                ));
            }
            t.row([
                r.provider_id.clone(),
                r.instance_id.clone(),
                link.source_id.clone(),
                link.target.clone(),
                format!(
                    "{}:{}/{}",
                    link.wit_namespace,
                    link.wit_package,
                    link.interfaces.join(",")
                ),
                link.name.clone(),
                serde_json::to_value(role)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                state,
                calls.to_string(),
                refused.to_string(),
            ]);
        }
    }
    t
}

/// `link ping`.
pub async fn link_ping(cx: &Ctx, provider: Option<&str>) -> anyhow::Result<Outcome> {
    let replies = cx.pings(provider).await?;
    if let (true, Some(id)) = (replies.is_empty(), provider)
        && let Some(health) = provider_health(&cx.nats, &cx.subjects, id, cx.wait).await
    {
        // A 1.x provider: it holds its links but cannot report them.
        let state = match &health.message {
            Some(m) if health.healthy => format!("healthy ({m})"),
            Some(m) => format!("unhealthy: {m}"),
            None if health.healthy => "healthy".into(),
            None => "unhealthy".into(),
        };
        cx.out.done(
            &format!("{id}: {NO_PING} (it answers health: {state})"),
            &serde_json::json!({ "provider_id": id, "status": NO_PING, "health": health }),
        );
        let code = if health.healthy {
            exit::OK
        } else {
            exit::UNHEALTHY
        };
        return Ok(Outcome { code });
    }
    let silent: Vec<String> = external_views(cx, &replies)
        .await?
        .into_iter()
        .filter(|e| !e.answering && provider.is_none_or(|p| p == e.id))
        .map(|e| e.id)
        .collect();
    if let (true, Some(id)) = (replies.is_empty(), provider)
        && silent.iter().any(|s| s == id)
    {
        cx.out.done(
            &format!(
                "{id}: external service, not answering (start it with the credentials `up` issued)"
            ),
            &serde_json::json!({ "provider_id": id, "status": "external service, not answering" }),
        );
        return Ok(Outcome {
            code: exit::NOT_FOUND,
        });
    }
    cx.out.table(&ping_table(&replies), &replies);
    for id in &silent {
        cx.out
            .note(&format!("external service {id}: not answering"));
    }
    let code = if replies.is_empty() {
        cx.out.note(&format!(
            "no provider answered{}",
            provider.map(|p| format!(" for {p}")).unwrap_or_default()
        ));
        exit::NOT_FOUND
    } else if replies
        .iter()
        .flat_map(|r| &r.links)
        .any(|s| matches!(s.state, LinkState::Failed { .. }))
    {
        exit::UNHEALTHY
    } else {
        exit::OK
    };
    Ok(Outcome { code })
}

/// `link purge`.
pub async fn link_purge(
    cx: &Ctx,
    provider: &str,
    selector: LinkSelector,
) -> anyhow::Result<Outcome> {
    let replies = purge_links(&cx.nats, &cx.subjects, provider, &selector, cx.wait).await?;
    let mut t = Table::new(["PROVIDER", "INSTANCE", "PURGED"]);
    for r in &replies {
        let purged: Vec<String> = r.purged.iter().map(|k| k.to_string()).collect();
        t.row([
            r.provider_id.clone(),
            r.instance_id.clone(),
            purged.join("; "),
        ]);
    }
    cx.out.table(&t, &replies);
    let code = if replies.is_empty() {
        cx.out.note(&format!("no instance of {provider} answered"));
        exit::NOT_FOUND
    } else if replies.iter().all(|r| r.purged.is_empty()) {
        exit::NOT_FOUND
    } else {
        exit::OK
    };
    Ok(Outcome { code })
}

/// `config put`.
pub async fn config_put(cx: &Ctx, name: &str, pairs: &[String]) -> anyhow::Result<Outcome> {
    let mut values = HashMap::new();
    for pair in pairs {
        let (k, v) = pair
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| anyhow::anyhow!("{pair:?} is not of the form KEY=VALUE"))?;
        values.insert(k.to_string(), v.to_string());
    }
    cx.admin().await?.put_config(name, &values).await?;
    let keys: Vec<&String> = values.keys().collect();
    cx.out.done(
        &format!("config {name} put ({} key(s))", values.len()),
        &serde_json::json!({ "name": name, "keys": keys }),
    );
    Ok(Outcome { code: exit::OK })
}

/// `config get`.
pub async fn config_get(cx: &Ctx, name: &str) -> anyhow::Result<Outcome> {
    match cx.admin().await?.config(name).await? {
        Some(values) => {
            let sorted: BTreeMap<String, String> = values.into_iter().collect();
            let mut t = Table::new(["KEY", "VALUE"]);
            for (k, v) in &sorted {
                t.row([k.clone(), v.clone()]);
            }
            cx.out.table(&t, &sorted);
            Ok(Outcome { code: exit::OK })
        }
        None => {
            cx.out.done(
                &format!("no config named {name:?}"),
                &serde_json::Value::Null,
            );
            Ok(Outcome {
                code: exit::NOT_FOUND,
            })
        }
    }
}

/// `config del`.
pub async fn config_del(cx: &Ctx, name: &str) -> anyhow::Result<Outcome> {
    let admin = cx.admin().await?;
    if admin.config(name).await?.is_none() {
        cx.out.done(
            &format!("no config named {name:?}"),
            &serde_json::json!({ "deleted": false }),
        );
        return Ok(Outcome {
            code: exit::NOT_FOUND,
        });
    }
    admin.delete_config(name).await?;
    cx.out.done(
        &format!("config {name} deleted"),
        &serde_json::json!({ "deleted": true }),
    );
    Ok(Outcome { code: exit::OK })
}

/// The lattice as `inventory --json` prints it.
#[derive(Serialize)]
struct Inventory {
    lattice: String,
    hosts: Vec<HostInventory>,
    /// Provider instances answering link ping (also those no host started: standalone).
    providers: Vec<ProviderView>,
    links: Vec<LinkView>,
    /// The external services the lattice declares, and whether they answer.
    externals: Vec<ExternalView>,
}

#[derive(Serialize)]
struct ExternalView {
    id: String,
    answering: bool,
    exports: Vec<String>,
    imports: Vec<String>,
}

/// The declared external services, and whether each answered link ping (`pings`).
async fn external_views(cx: &Ctx, pings: &[PingReply]) -> anyhow::Result<Vec<ExternalView>> {
    let store = LatticeStore::open(&cx.nats, &cx.subjects).await?;
    Ok(store
        .externals()
        .await?
        .into_iter()
        .map(|(id, spec)| ExternalView {
            answering: pings.iter().any(|r| r.provider_id == id),
            id,
            exports: spec.exports,
            imports: spec.imports,
        })
        .collect())
}

#[derive(Serialize)]
struct ProviderView {
    id: String,
    instance_id: String,
    host_id: Option<String>,
    links: usize,
    failed_links: usize,
}

/// The status of a link whose provider speaks only the 1.x protocol: it holds its links but
/// has no link ping to report them.
const NO_PING: &str = "1.x provider: no ping";

/// The running providers the hosts supervise that answer health but not link ping: 1.x
/// providers.
async fn legacy_providers(
    cx: &Ctx,
    hosts: &[HostInventory],
    pings: &[PingReply],
) -> std::collections::HashSet<String> {
    let silent: Vec<&str> = hosts
        .iter()
        .flat_map(|h| &h.providers)
        .filter(|p| p.state == "running" && !pings.iter().any(|r| r.provider_id == p.id))
        .map(|p| p.id.as_str())
        .collect();
    let mut legacy = std::collections::HashSet::new();
    for id in silent {
        if provider_health(&cx.nats, &cx.subjects, id, cx.wait)
            .await
            .is_some()
        {
            legacy.insert(id.to_string());
        }
    }
    legacy
}

/// `inventory`.
pub async fn inventory(cx: &Ctx) -> anyhow::Result<Outcome> {
    let (hosts, pings, links) = tokio::try_join!(
        async { Ok::<_, anyhow::Error>(ping_hosts(&cx.nats, &cx.subjects, cx.wait).await?) },
        cx.pings(None),
        async { Ok::<_, anyhow::Error>(cx.admin().await?.links(None).await?) },
    )?;
    let legacy = legacy_providers(cx, &hosts, &pings).await;
    let mut links = link_views(links, &pings);
    for l in &mut links {
        if l.status == "unreported"
            && (legacy.contains(&l.link.target) || legacy.contains(&l.link.source_id))
        {
            l.status = NO_PING.into();
        }
    }
    let providers: Vec<ProviderView> = pings
        .iter()
        .map(|r| ProviderView {
            id: r.provider_id.clone(),
            instance_id: r.instance_id.clone(),
            host_id: r.host_id.clone(),
            links: r.links.len(),
            failed_links: r
                .links
                .iter()
                .filter(|s| matches!(s.state, LinkState::Failed { .. }))
                .count(),
        })
        .collect();
    let unhealthy = links.iter().any(|l| l.status == "failed")
        || hosts
            .iter()
            .flat_map(|h| &h.providers)
            .any(|p| p.state == "failed");

    let mut hosts_t = Table::new(["HOST", "VERSION", "UPTIME", "COMPONENTS", "PROVIDERS"]);
    for h in &hosts {
        hosts_t.row([
            h.host_id.clone(),
            h.version.clone(),
            format!("{}s", h.uptime_seconds),
            h.components.len().to_string(),
            h.providers.len().to_string(),
        ]);
    }
    let mut components_t = Table::new(["COMPONENT", "HOST", "SERVED", "REF"]);
    for h in &hosts {
        for c in &h.components {
            components_t.row([
                c.id.clone(),
                h.host_id.clone(),
                c.served.to_string(),
                if c.parts.is_empty() {
                    c.image_ref.clone()
                } else {
                    format!("{} (composed of {})", c.image_ref, c.parts.join(" + "))
                },
            ]);
        }
    }
    let mut providers_t = Table::new(["PROVIDER", "HOST", "STATE", "LINKS", "FAILED LINKS"]);
    for h in &hosts {
        for p in &h.providers {
            let answered: Vec<&ProviderView> = providers.iter().filter(|v| v.id == p.id).collect();
            let state = match &p.reason {
                Some(reason) => format!("{}: {reason}", p.state),
                None => p.state.clone(),
            };
            let link_count = if legacy.contains(&p.id) {
                "1.x: no ping".to_string()
            } else {
                answered.iter().map(|v| v.links).sum::<usize>().to_string()
            };
            providers_t.row([
                p.id.clone(),
                h.host_id.clone(),
                state,
                link_count,
                answered
                    .iter()
                    .map(|v| v.failed_links)
                    .sum::<usize>()
                    .to_string(),
            ]);
        }
    }
    // Providers that answer link ping but no host supervises: standalone instances.
    for v in &providers {
        let supervised = hosts
            .iter()
            .flat_map(|h| &h.providers)
            .any(|p| p.id == v.id);
        if !supervised {
            providers_t.row([
                v.id.clone(),
                v.host_id.clone().unwrap_or_else(|| "(standalone)".into()),
                "running".into(),
                v.links.to_string(),
                v.failed_links.to_string(),
            ]);
        }
    }
    let externals = external_views(cx, &pings).await?;
    let mut externals_t = Table::new(["EXTERNAL", "ANSWERS", "EXPORTS", "IMPORTS"]);
    for e in &externals {
        externals_t.row([
            e.id.clone(),
            if e.answering { "yes" } else { "no" }.into(),
            e.exports.join(" "),
            e.imports.join(" "),
        ]);
    }
    let doc = Inventory {
        lattice: cx.subjects.lattice().to_string(),
        hosts,
        providers,
        links,
        externals,
    };
    cx.out.sections(
        &[
            ("hosts", &hosts_t),
            ("components", &components_t),
            ("providers", &providers_t),
            ("external services", &externals_t),
            ("links", &links_table(&doc.links)),
        ],
        &doc,
    );
    Ok(Outcome {
        code: if unhealthy { exit::UNHEALTHY } else { exit::OK },
    })
}
