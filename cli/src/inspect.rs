//! `trellis component inspect` and the pre-flight check of `trellis up`: what each import of
//! a component is served by — the host, the host over a link, a link, or nothing — given
//! the manifest's links, so every unmet import is named before anything starts.

use std::fmt::Write as _;

use trellis_host::imports::{ComponentWorld, ServedBy, linked_as, served_by};

use crate::manifest::Link;

/// One import and what serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// Its name (`ns:pkg/iface@version`).
    pub name: String,
    /// What serves it.
    pub served: Served,
}

/// What serves an import, links considered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// The host itself.
    Host,
    /// The link(s) named, each `target (name)`.
    Links(Vec<String>),
    /// The part named, composed in at build time (the manifest's `compose:`).
    Composed(String),
    /// Nothing: why, and what would serve it.
    Unmet(String),
}

/// `ns`, `pkg`, `iface` of an import name, without its version.
fn interface(name: &str) -> Option<(&str, &str, &str)> {
    let (package, rest) = name.split_once('/')?;
    let iface = rest.split('@').next().unwrap_or(rest);
    let (ns, pkg) = package.split_once(':')?;
    Some((ns, pkg.split('@').next().unwrap_or(pkg), iface))
}

/// What serves each of `world`'s imports when it runs as `id`; `links`: the manifest's, or
/// `None` when there is no manifest (an import that needs a link is then "a link").
pub fn classify(id: &str, world: &ComponentWorld, links: Option<&[Link]>) -> Vec<Import> {
    world
        .imports
        .iter()
        .map(|name| Import {
            name: name.clone(),
            served: if world.types_only.contains(name) {
                // Types only: nothing to call, nothing to serve.
                Served::Host
            } else {
                served(id, name, links)
            },
        })
        .collect()
}

fn served(id: &str, name: &str, links: Option<&[Link]>) -> Served {
    let by = served_by(name);
    if by == ServedBy::Nothing {
        return Served::Unmet(
            "a WASI interface Trellis does not provide (no link can serve it)".into(),
        );
    }
    if !by.needs_link() {
        return Served::Host;
    }
    let carrier = linked_as(name);
    let Some((ns, pkg, iface)) = interface(&carrier) else {
        return Served::Unmet("a bare function import: only interfaces can be linked".into());
    };
    let Some(links) = links else {
        return Served::Links(vec![format!("a link for {ns}:{pkg}/{iface}")]);
    };
    let found: Vec<String> = links
        .iter()
        .filter(|l| {
            l.source == id
                && l.namespace == ns
                && l.package == pkg
                && l.interfaces.iter().any(|i| i == iface)
        })
        .map(|l| format!("{} ({})", l.target, l.name))
        .collect();
    if found.is_empty() {
        Served::Unmet(format!(
            "no link from {id} for {ns}:{pkg}/{iface} (add one: `wit: {ns}:{pkg}/{iface}`)"
        ))
    } else {
        Served::Links(found)
    }
}

/// `imports` (of the composed component) after a row per wire of `plan`: each import a
/// part serves, and whose it is when not the main component's.
pub fn with_composed(imports: Vec<Import>, plan: &trellis_compose::Plan) -> Vec<Import> {
    plan.wires
        .iter()
        .map(|w| Import {
            name: w.import.clone(),
            served: Served::Composed(if w.importer == plan.main {
                w.exporter.clone()
            } else {
                format!("{} (for {})", w.exporter, w.importer)
            }),
        })
        .chain(imports)
        .collect()
}

/// The unmet imports of `imports`, one line each (`id: import: why`).
pub fn unmet_lines(id: &str, imports: &[Import]) -> Vec<String> {
    imports
        .iter()
        .filter_map(|i| match &i.served {
            Served::Unmet(why) => Some(format!("{id}: {}: {why}", i.name)),
            _ => None,
        })
        .collect()
}

/// The inspection as a table: imports and what serves them, then exports, then (for a
/// composed component) the parts it was composed of.
pub fn render(imports: &[Import], world: &ComponentWorld, parts: &[String]) -> String {
    let width = imports
        .iter()
        .map(|i| i.name.len())
        .chain([6])
        .max()
        .unwrap_or(6);
    let mut out = String::new();
    let _ = writeln!(out, "{:<width$}  SERVED BY", "IMPORT");
    for i in imports {
        let served = match &i.served {
            Served::Host => "host".to_string(),
            Served::Links(links) => format!("link: {}", links.join(", ")),
            Served::Composed(part) => format!("composed: {part}"),
            Served::Unmet(why) => format!("NOTHING: {why}"),
        };
        let _ = writeln!(out, "{:<width$}  {served}", i.name);
    }
    let _ = writeln!(out, "\nEXPORT");
    for e in &world.exports {
        let _ = writeln!(out, "{e}");
    }
    if !parts.is_empty() {
        let _ = writeln!(out, "\nCOMPOSED OF\n{}", parts.join("\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn link(source: &str, target: &str, wit: &str, name: &str) -> Link {
        let (namespace, package, interfaces) = crate::manifest::parse_wit(wit).expect("wit");
        Link {
            source: source.into(),
            target: target.into(),
            namespace,
            package,
            interfaces,
            name: name.into(),
            source_config: BTreeMap::new(),
            target_config: BTreeMap::new(),
            source_secrets: BTreeMap::new(),
            target_secrets: BTreeMap::new(),
        }
    }

    #[test]
    fn every_import_is_served_or_named_with_the_link_it_needs() {
        let world = ComponentWorld {
            imports: vec![
                "wasi:cli/environment@0.2.6".into(),
                "wasi:keyvalue/store@0.2.0-draft".into(),
                "wasi:keyvalue/atomics@0.2.0-draft".into(),
                "wasi:http/outgoing-handler@0.2.6".into(),
                "acme:billing/invoices@1.0.0".into(),
                "wasi:nn/graph@0.2.0-rc".into(),
                "acme:billing/types@1.0.0".into(),
            ],
            exports: vec!["wasi:http/incoming-handler@0.2.6".into()],
            types_only: vec!["acme:billing/types@1.0.0".into()],
        };
        let links = [
            link("app", "kv", "wasi:keyvalue/store,atomics", "default"),
            link("app", "kv2", "wasi:keyvalue/store", "backup"),
            link("other", "billing", "acme:billing/invoices", "default"),
        ];
        let imports = classify("app", &world, Some(&links));
        assert_eq!(imports[0].served, Served::Host);
        assert_eq!(
            imports[1].served,
            Served::Links(vec!["kv (default)".into(), "kv2 (backup)".into()])
        );
        assert_eq!(
            imports[2].served,
            Served::Links(vec!["kv (default)".into()])
        );
        assert_eq!(
            imports[6].served,
            Served::Host,
            "types only: nothing to serve"
        );
        let unmet = unmet_lines("app", &imports);
        assert_eq!(unmet.len(), 3, "{unmet:#?}");
        assert!(unmet[0].contains(
            "wasi:http/outgoing-handler@0.2.6: no link from app for wasi:http/outgoing-handler"
        ));
        assert!(
            unmet[1].contains("acme:billing/invoices"),
            "another component's link serves nothing here"
        );
        assert!(
            unmet[2].contains("wasi:nn/graph@0.2.0-rc: a WASI interface Trellis does not provide")
        );
        let table = render(&imports, &world, &[]);
        assert!(table.contains("NOTHING: no link from app"), "{table}");
        assert!(
            table.contains("EXPORT\nwasi:http/incoming-handler@0.2.6"),
            "{table}"
        );
        // Without a manifest: what each import would need.
        let bare = classify("app", &world, None);
        assert_eq!(
            bare[4].served,
            Served::Links(vec!["a link for acme:billing/invoices".into()])
        );
    }
}
