//! Working out the wiring: which part's export serves which import, what stays an import,
//! and the refusals (ambiguity, version or type mismatch, cycles).
//!
//! Matching is by interface: an import `ns:pkg/iface@v` is served by an export of the same
//! `ns:pkg/iface` whose version is `v` or semver-compatible with it (`0.2.1` for `0.2.0`,
//! as the component model's own name matching allows) and whose types are a subtype of
//! the import's. The main component is never a candidate: its exports are the result's.

use std::collections::VecDeque;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use wac_graph::types::{ItemKind, SubtypeChecker, are_semver_compatible};

use crate::Composer;
use crate::error::{ComposeError, interface_of};

/// One import served by another part's export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wire {
    /// The part whose import it is.
    pub importer: String,
    /// The import (`ns:pkg/iface@version`).
    pub import: String,
    /// The part serving it.
    pub exporter: String,
    /// The export serving it (its version may differ, compatibly).
    pub export: String,
}

/// An import no part serves: an import of the composed component, for the host or a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Open {
    /// The part whose import it is.
    pub importer: String,
    /// The import.
    pub import: String,
}

/// What a composition wires, leaves open and leaves out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The main component (whose exports the result exports).
    pub main: String,
    /// Imports served by parts, in the order they were resolved.
    pub wires: Vec<Wire>,
    /// Imports that stay imports of the result.
    pub open: Vec<Open>,
    /// Given parts nothing uses (another part was picked, or none of their exports is
    /// imported).
    pub unused: Vec<String>,
    /// The result's exports: the main component's.
    pub exports: Vec<String>,
}

/// A choice among parts exporting the same interface: `--use ns:pkg/iface=PART`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Use {
    /// The interface, with or without its version.
    pub interface: String,
    /// The part to take it from.
    pub part: String,
}

impl FromStr for Use {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((interface, part)) if !interface.is_empty() && !part.is_empty() => Ok(Use {
                interface: interface.to_string(),
                part: part.to_string(),
            }),
            _ => Err(format!(
                "`{s}` is not INTERFACE=PART (for example wasi:keyvalue/store=cache.wasm)"
            )),
        }
    }
}

impl Use {
    /// Whether this choice is about `import`.
    fn applies_to(&self, import: &str) -> bool {
        self.interface == import || self.interface == interface_of(import)
    }
}

/// An export able to serve an import: its part and name.
struct Candidate<'a> {
    part: usize,
    export: &'a str,
    kind: ItemKind,
}

impl Composer {
    fn world(&self, part: usize) -> &wac_graph::types::World {
        let graph = &self.graph;
        &graph.types()[graph[self.parts[part].package].ty()]
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.parts.iter().position(|p| p.name == name)
    }

    /// Works out the wiring; `uses` pick among parts exporting the same interface.
    pub fn plan(&self, uses: &[Use]) -> Result<Plan, ComposeError> {
        for u in uses {
            match self.index_of(&u.part) {
                Some(0) => return Err(self.bad_use(u, "the main component serves no import")),
                Some(_) => {}
                None => return Err(self.bad_use(u, "no such part")),
            }
        }
        let mut plan = Plan {
            main: self.parts[0].name.clone(),
            wires: Vec::new(),
            open: Vec::new(),
            unused: Vec::new(),
            exports: self.world(0).exports.keys().cloned().collect(),
        };
        let mut used = vec![false; self.parts.len()];
        used[0] = true;
        let mut edges = Vec::new();
        let mut applied = vec![false; uses.len()];
        let mut queue = VecDeque::from([0]);
        while let Some(part) = queue.pop_front() {
            for (import, kind) in &self.world(part).imports {
                // A choice is for the parts using the interface, not for the part chosen: a
                // wrapper (importing and exporting one interface) takes its own import from
                // the others.
                let importer_name = &self.parts[part].name;
                let choice = uses
                    .iter()
                    .position(|u| u.applies_to(import) && &u.part != importer_name);
                if let Some(i) = choice {
                    applied[i] = true;
                }
                let importer = self.parts[part].name.clone();
                match self.resolve(part, import, *kind, choice.map(|i| &uses[i]))? {
                    Some((exporter, export)) => {
                        plan.wires.push(Wire {
                            importer,
                            import: import.clone(),
                            exporter: self.parts[exporter].name.clone(),
                            export,
                        });
                        edges.push((part, exporter));
                        if !used[exporter] {
                            used[exporter] = true;
                            queue.push_back(exporter);
                        }
                    }
                    None => plan.open.push(Open {
                        importer,
                        import: import.clone(),
                    }),
                }
            }
        }
        if let Some(i) = applied.iter().position(|a| !a) {
            return Err(self.bad_use(&uses[i], "no part that is used imports it"));
        }
        self.check_cycles(&edges)?;
        if plan.wires.is_empty() {
            return Err(ComposeError::NothingToCompose {
                main: plan.main,
                parts: self.parts[1..].iter().map(|p| p.name.clone()).collect(),
                imports: self.world(0).imports.keys().cloned().collect(),
            });
        }
        plan.unused = (1..self.parts.len())
            .filter(|&i| !used[i])
            .map(|i| self.parts[i].name.clone())
            .collect();
        Ok(plan)
    }

    fn bad_use(&self, u: &Use, reason: &str) -> ComposeError {
        let names: Vec<&str> = self.names().skip(1).collect();
        ComposeError::BadUse {
            interface: u.interface.clone(),
            part: u.part.clone(),
            reason: if reason == "no such part" {
                format!("no such part (the parts: {})", names.join(", "))
            } else {
                reason.to_string()
            },
        }
    }

    /// The part and export serving `import` of `part`, or `None` when no part exports its
    /// interface.
    fn resolve(
        &self,
        part: usize,
        import: &str,
        kind: ItemKind,
        choice: Option<&Use>,
    ) -> Result<Option<(usize, String)>, ComposeError> {
        let mut candidates: Vec<Candidate<'_>> = Vec::new();
        for q in (1..self.parts.len()).filter(|&q| q != part) {
            // One export per part: the exact name if it has it, else the first of the same
            // interface.
            let exports = &self.world(q).exports;
            let found = exports.get_key_value(import).or_else(|| {
                exports
                    .iter()
                    .find(|(e, _)| same_interface(e, import) && are_semver_compatible(e, import))
                    .or_else(|| exports.iter().find(|(e, _)| same_interface(e, import)))
            });
            if let Some((export, kind)) = found {
                candidates.push(Candidate {
                    part: q,
                    export,
                    kind: *kind,
                });
            }
        }
        let importer = &self.parts[part].name;
        if let Some(u) = choice {
            candidates.retain(|c| self.parts[c.part].name == u.part);
            if candidates.is_empty() {
                return Err(ComposeError::BadUse {
                    interface: u.interface.clone(),
                    part: u.part.clone(),
                    reason: format!("it does not export {import} (imported by {importer})"),
                });
            }
        }
        let compatible: Vec<&Candidate<'_>> = candidates
            .iter()
            .filter(|c| c.export == import || are_semver_compatible(c.export, import))
            .collect();
        match compatible.as_slice() {
            [] => match candidates.first() {
                None => Ok(None),
                Some(c) => Err(ComposeError::VersionMismatch {
                    importer: importer.clone(),
                    import: import.to_string(),
                    exporter: self.parts[c.part].name.clone(),
                    export: c.export.to_string(),
                }),
            },
            [c] => {
                let mut cache = Default::default();
                let types = self.graph.types();
                SubtypeChecker::new(&mut cache)
                    .is_subtype(c.kind, types, kind, types)
                    .map_err(|e| ComposeError::TypeMismatch {
                        importer: importer.clone(),
                        import: import.to_string(),
                        exporter: self.parts[c.part].name.clone(),
                        reason: format!("{e:#}"),
                    })?;
                Ok(Some((c.part, c.export.to_string())))
            }
            many => Err(ComposeError::Ambiguous {
                importer: importer.clone(),
                import: import.to_string(),
                candidates: many
                    .iter()
                    .map(|c| self.parts[c.part].name.clone())
                    .collect(),
            }),
        }
    }

    /// Refuses a cycle among `edges` (importer → exporter), naming it.
    fn check_cycles(&self, edges: &[(usize, usize)]) -> Result<(), ComposeError> {
        match find_cycle(self.parts.len(), edges) {
            Some(cycle) => Err(ComposeError::Cycle(
                cycle
                    .into_iter()
                    .map(|i| self.parts[i].name.clone())
                    .collect(),
            )),
            None => Ok(()),
        }
    }
}

/// A cycle among `edges` between `n` nodes reachable from node 0, as the path around it.
fn find_cycle(n: usize, edges: &[(usize, usize)]) -> Option<Vec<usize>> {
    // Depth-first search with the path on a stack: 0 unvisited, 1 on the path, 2 done.
    fn visit(
        at: usize,
        edges: &[(usize, usize)],
        state: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        state[at] = 1;
        path.push(at);
        for &(_, next) in edges.iter().filter(|(from, _)| *from == at) {
            match state[next] {
                1 => {
                    let start = path.iter().position(|&p| p == next).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next);
                    return Some(cycle);
                }
                0 => {
                    if let Some(cycle) = visit(next, edges, state, path) {
                        return Some(cycle);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state[at] = 2;
        None
    }
    visit(0, edges, &mut vec![0u8; n], &mut Vec::new())
}

/// Whether `a` and `b` name the same interface, versions aside.
fn same_interface(a: &str, b: &str) -> bool {
    interface_of(a) == interface_of(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_parse_or_say_the_form() {
        let u: Use = "wasi:keyvalue/store=cache.wasm".parse().expect("a use");
        assert_eq!(u.interface, "wasi:keyvalue/store");
        assert_eq!(u.part, "cache.wasm");
        assert!(u.applies_to("wasi:keyvalue/store@0.2.0-draft"));
        assert!(!u.applies_to("wasi:keyvalue/atomics@0.2.0-draft"));
        for bad in ["cache.wasm", "=x", "wasi:keyvalue/store="] {
            let err = bad.parse::<Use>().expect_err(bad);
            assert!(err.contains("INTERFACE=PART"), "{err}");
        }
    }

    #[test]
    fn cycles_are_found_with_their_path() {
        assert_eq!(find_cycle(3, &[(0, 1), (1, 2)]), None);
        assert_eq!(
            find_cycle(3, &[(0, 1), (0, 2), (1, 2)]),
            None,
            "shared, not cyclic"
        );
        assert_eq!(
            find_cycle(3, &[(0, 1), (1, 2), (2, 1)]),
            Some(vec![1, 2, 1])
        );
    }

    #[test]
    fn versions_match_by_interface_then_compatibility() {
        assert!(same_interface("a:b/c@0.1.0", "a:b/c@9.0.0"));
        assert!(!same_interface("a:b/c@0.1.0", "a:b/d@0.1.0"));
        assert!(are_semver_compatible("a:b/c@0.2.0", "a:b/c@0.2.5"));
        assert!(!are_semver_compatible("a:b/c@0.1.0", "a:b/c@0.2.0"));
    }
}
