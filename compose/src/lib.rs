//! Build-time composition of components by interface matching: one component's export
//! plugged into another's import, so the set becomes one component.
//!
//! Given a *main* component and its *parts*, [`Composer::plan`] works out the wiring from
//! the components' own imports and exports: each import of the main component — and,
//! transitively, of every part it uses — is wired to the one part exporting that interface
//! (same name, a compatible version, matching types). What no part exports stays an import of
//! the result, to be served by the host or by links at runtime. Two parts exporting the same
//! interface are refused as ambiguous unless a [`Use`] picks one; a version no import can use
//! is refused with both versions named. [`Composer::encode`] then builds the component (with
//! the `wac-graph` library) and records its parts in a custom section ([`record`]) that the
//! host reads back for its inventory.
//!
//! The inputs are only read: the originals stay byte-identical.
//!
//! ```no_run
//! use trellis_compose::{Composer, Part};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let parts = vec![
//!     Part::new("app.wasm", std::fs::read("app.wasm")?),
//!     Part::new("cache.wasm", std::fs::read("cache.wasm")?),
//! ];
//! let composer = Composer::new(parts)?;
//! let plan = composer.plan(&[])?;
//! for wire in &plan.wires {
//!     println!("{} {} ← {}", wire.importer, wire.import, wire.exporter);
//! }
//! std::fs::write("app+cache.wasm", composer.encode(&plan)?)?;
//! # Ok(())
//! # }
//! ```

mod encode;
mod error;
mod plan;
pub mod record;

pub use error::ComposeError;
pub use plan::{Open, Plan, Use, Wire};

use sha2::{Digest as _, Sha256};
use wac_graph::types::Package;
use wac_graph::{CompositionGraph, PackageId};

/// One component to compose: a name for messages and tables (its file name, say) and its
/// bytes.
#[derive(Clone)]
pub struct Part {
    /// How the plan and errors name it.
    pub name: String,
    /// The component.
    pub wasm: Vec<u8>,
}

impl Part {
    /// A part named `name`.
    pub fn new(name: impl Into<String>, wasm: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            wasm,
        }
    }
}

impl std::fmt::Debug for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Part")
            .field("name", &self.name)
            .field("bytes", &self.wasm.len())
            .finish()
    }
}

/// A part registered with the composition graph.
pub(crate) struct Registered {
    pub(crate) name: String,
    pub(crate) package: PackageId,
    pub(crate) sha256: String,
}

/// The parts of one composition, read and type-checked; the first is the main component.
pub struct Composer {
    pub(crate) graph: CompositionGraph,
    pub(crate) parts: Vec<Registered>,
}

impl Composer {
    /// Reads `parts` (the main component first). Fails when there is none, when two share a
    /// name, or when one is not a component.
    pub fn new(parts: Vec<Part>) -> Result<Self, ComposeError> {
        if parts.is_empty() {
            return Err(ComposeError::NoMain);
        }
        let mut graph = CompositionGraph::new();
        let mut registered: Vec<Registered> = Vec::with_capacity(parts.len());
        for (i, part) in parts.into_iter().enumerate() {
            if registered.iter().any(|r| r.name == part.name) {
                return Err(ComposeError::DuplicateName(part.name));
            }
            let sha256 = hex(&Sha256::digest(&part.wasm));
            // The package name only has to be unique within the graph.
            let package = Package::from_bytes(
                &format!("trellis-part:p{i}"),
                None,
                part.wasm,
                graph.types_mut(),
            )
            .map_err(|e| ComposeError::NotAComponent {
                part: part.name.clone(),
                reason: format!("{e:#}"),
            })?;
            let package =
                graph
                    .register_package(package)
                    .map_err(|e| ComposeError::NotAComponent {
                        part: part.name.clone(),
                        reason: e.to_string(),
                    })?;
            registered.push(Registered {
                name: part.name,
                package,
                sha256,
            });
        }
        Ok(Self {
            graph,
            parts: registered,
        })
    }

    /// The parts' names, the main component first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().map(|p| p.name.as_str())
    }
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
