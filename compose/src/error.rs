//! Why a composition was refused, written for the person running it: each error names the
//! parts and interfaces at fault and, where there is one, the way out.

/// Why a set of components could not be composed.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// No component was given.
    #[error("nothing to compose: give the main component and the components it uses")]
    NoMain,
    /// Two parts share a name, so the plan could not tell them apart.
    #[error("{0} is given twice")]
    DuplicateName(String),
    /// A part is not a component (a core module, or not wasm at all).
    #[error("{part} is not a component: {reason}")]
    NotAComponent {
        /// The part.
        part: String,
        /// What the reader said.
        reason: String,
    },
    /// Two or more parts export the interface an import needs.
    #[error(
        "{importer} imports {import}, which {} export: pick one with --use {}={}",
        candidates.join(" and "), interface_of(import), candidates.first().map(String::as_str).unwrap_or("PART")
    )]
    Ambiguous {
        /// The part whose import it is.
        importer: String,
        /// The import (`ns:pkg/iface@version`).
        import: String,
        /// The parts exporting it.
        candidates: Vec<String>,
    },
    /// The only exports of an imported interface have versions the import cannot use.
    #[error(
        "version mismatch: {importer} imports {import} (version {}), but {exporter} exports {export} (version {}); rebuild one against the other's version",
        version_of(import),
        version_of(export)
    )]
    VersionMismatch {
        /// The part whose import it is.
        importer: String,
        /// The import.
        import: String,
        /// The part exporting the interface.
        exporter: String,
        /// Its export.
        export: String,
    },
    /// Names and versions agree but the types do not.
    #[error("{importer} imports {import}, but {exporter}'s export of it has other types: {reason}")]
    TypeMismatch {
        /// The part whose import it is.
        importer: String,
        /// The import.
        import: String,
        /// The part exporting it.
        exporter: String,
        /// What differs.
        reason: String,
    },
    /// A `--use` that cannot apply.
    #[error("--use {interface}={part}: {reason}")]
    BadUse {
        /// The interface it names.
        interface: String,
        /// The part it names.
        part: String,
        /// Why it cannot apply.
        reason: String,
    },
    /// Parts that import from each other: one cannot be built before the other.
    #[error("the parts import from each other in a cycle: {}", .0.join(" → "))]
    Cycle(Vec<String>),
    /// None of the main component's imports is exported by another part.
    #[error(
        "nothing to compose: no import of {main} is exported by {} (its imports: {})",
        parts.join(", "), imports.join(", ")
    )]
    NothingToCompose {
        /// The main component.
        main: String,
        /// The other parts.
        parts: Vec<String>,
        /// The main component's imports.
        imports: Vec<String>,
    },
    /// Building the composed component failed (a conflict the plan could not foresee, such
    /// as two parts importing one name with different types).
    #[error("cannot build the composed component: {0}")]
    Encode(String),
}

/// `ns:pkg/iface` of `ns:pkg/iface@version` (a plain name as it is).
pub(crate) fn interface_of(name: &str) -> &str {
    name.split_once('@').map_or(name, |(i, _)| i)
}

/// The version of `name`, or "none".
pub(crate) fn version_of(name: &str) -> &str {
    name.split_once('@').map_or("none", |(_, v)| v)
}
