//! Building the composed component from a [`Plan`]: one instance of each used part, each
//! wire an instantiation argument, the main component's exports exported. Imports no wire
//! serves become the result's own imports (`wac-graph` merges parts importing one name).

use std::collections::HashMap;

use wac_graph::{EncodeOptions, NodeId, Processor};

use crate::error::ComposeError;
use crate::plan::Plan;
use crate::record::{self, Record, RecordedPart};
use crate::{Composer, Registered};

impl Composer {
    /// The composed component for `plan` (from [`Composer::plan`] on this composer), with its
    /// [`Record`] in a custom section.
    pub fn encode(mut self, plan: &Plan) -> Result<Vec<u8>, ComposeError> {
        let encode = |e: &dyn std::fmt::Display| ComposeError::Encode(e.to_string());
        let index: HashMap<&str, usize> = self
            .parts
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i))
            .collect();
        let find = |name: &str| {
            index
                .get(name)
                .copied()
                .ok_or_else(|| ComposeError::Encode(format!("the plan names {name}, not a part")))
        };

        // One instance per used part, the main component's first.
        let mut instances: HashMap<usize, NodeId> = HashMap::new();
        let mut order = vec![0];
        instances.insert(0, self.graph.instantiate(self.parts[0].package));
        for wire in &plan.wires {
            for name in [&wire.importer, &wire.exporter] {
                let i = find(name)?;
                if let std::collections::hash_map::Entry::Vacant(slot) = instances.entry(i) {
                    slot.insert(self.graph.instantiate(self.parts[i].package));
                    order.push(i);
                }
            }
        }

        // Each wire: the exporter instance's export as the importer's argument (one alias
        // per export, however many parts use it).
        let mut aliases: HashMap<(usize, &str), NodeId> = HashMap::new();
        for wire in &plan.wires {
            let (from, to) = (find(&wire.exporter)?, find(&wire.importer)?);
            let alias = match aliases.get(&(from, wire.export.as_str())) {
                Some(alias) => *alias,
                None => {
                    let alias = self
                        .graph
                        .alias_instance_export(instances[&from], &wire.export)
                        .map_err(|e| encode(&e))?;
                    aliases.insert((from, wire.export.as_str()), alias);
                    alias
                }
            };
            self.graph
                .set_instantiation_argument(instances[&to], &wire.import, alias)
                .map_err(|e| encode(&format!("{e}: {:#}", source_of(&e))))?;
        }

        for name in &plan.exports {
            let alias = self
                .graph
                .alias_instance_export(instances[&0], name)
                .map_err(|e| encode(&e))?;
            self.graph.export(alias, name).map_err(|e| encode(&e))?;
        }

        let wasm = self
            .graph
            .encode(EncodeOptions {
                define_components: true,
                validate: true,
                processor: Some(Processor {
                    name: "trellis-compose",
                    version: env!("CARGO_PKG_VERSION"),
                }),
            })
            .map_err(|e| encode(&format!("{e}: {:#}", source_of(&e))))?;
        let record = Record {
            main: plan.main.clone(),
            parts: order.iter().map(|&i| recorded(&self.parts[i])).collect(),
            wires: plan.wires.clone(),
        };
        Ok(record::append(wasm, &record))
    }
}

impl Composer {
    /// Whether `wasm` is what [`Composer::encode`] makes of `plan` with these parts, by the
    /// record it carries: the same wiring, every part it names one of these with the same
    /// bytes (a cached copy can be checked this way without composing again).
    pub fn is_composition_of(&self, plan: &Plan, wasm: &[u8]) -> bool {
        let Some(record) = record::read(wasm) else {
            return false;
        };
        record.main == plan.main
            && record.wires == plan.wires
            && record.parts.iter().all(|r| {
                self.parts
                    .iter()
                    .any(|p| p.name == r.name && p.sha256 == r.sha256)
            })
    }
}

fn recorded(part: &Registered) -> RecordedPart {
    RecordedPart {
        name: part.name.clone(),
        sha256: part.sha256.clone(),
    }
}

/// The innermost cause of `e`, for a message that says what actually differed.
fn source_of(e: &(dyn std::error::Error + 'static)) -> String {
    let mut at = e;
    while let Some(next) = at.source() {
        at = next;
    }
    at.to_string()
}
