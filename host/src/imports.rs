//! What serves each import of a component — the host itself, the host over a link, a link
//! alone, or nothing — and a component's imports and exports read from its bytes without
//! compiling it: the pre-flight check `trellis up` and `trellis component inspect` run before
//! anything starts, and the list the linker follows.

/// Packages the host answers itself, with no link.
const HOST_LOCAL: &[&str] = &[
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:io/",
    "wasi:random/",
    "wasi:filesystem/",
    "wasi:sockets/",
    "wasi:config/",
    "wasi:logging/",
    "wasi:http/types",
    "wasmcloud:bus/",
    "wasmcloud:secrets/",
    "wrpc:rpc/error",
    "trellis:routing/",
];

/// Interfaces the host implements by calling the provider linked for them.
const HOST_VIA_LINK: &[&str] = &[
    "wasi:keyvalue/",
    "wasi:blobstore/",
    "wasi:http/outgoing-handler",
];

/// Imports served by the link of another interface of their package: `wasi:blobstore`'s
/// `container` and `types` hold the resources of `blobstore`, whose link carries all three
/// (they are one wRPC interface, `wrpc:blobstore/blobstore`).
const LINKED_AS: &[(&str, &str)] = &[
    ("wasi:blobstore/container", "wasi:blobstore/blobstore"),
    ("wasi:blobstore/types", "wasi:blobstore/blobstore"),
];

/// The import whose link serves `name`: itself, or the interface of its package that
/// carries it (`wasi:blobstore/types@0.2.0-draft` → `wasi:blobstore/blobstore@0.2.0-draft`).
pub fn linked_as(name: &str) -> std::borrow::Cow<'_, str> {
    for (import, carrier) in LINKED_AS {
        if let Some(rest) = name.strip_prefix(import)
            && (rest.is_empty() || rest.starts_with('@'))
        {
            return format!("{carrier}{rest}").into();
        }
    }
    name.into()
}

/// What serves one import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServedBy {
    /// The host, with no link (WASI basics, config, logging, bus, secrets).
    Host,
    /// The host, by calling the target linked for this interface (keyvalue, blobstore,
    /// outgoing HTTP).
    HostViaLink,
    /// A wRPC call to the target linked for this interface (any non-WASI interface).
    Link,
    /// Nothing: a WASI interface Trellis does not provide.
    Nothing,
}

impl ServedBy {
    /// Whether a link from the component must name this import's interface.
    pub fn needs_link(&self) -> bool {
        matches!(self, Self::HostViaLink | Self::Link)
    }
}

/// What serves the import named `name` (`ns:pkg/iface@version`).
pub fn served_by(name: &str) -> ServedBy {
    if HOST_LOCAL.iter().any(|p| name.starts_with(p)) {
        ServedBy::Host
    } else if HOST_VIA_LINK.iter().any(|p| name.starts_with(p)) {
        ServedBy::HostViaLink
    } else if name.starts_with("wasi:") {
        ServedBy::Nothing
    } else {
        ServedBy::Link
    }
}

/// Whether the host's linker defines `name` itself (everything else it links as a wRPC call).
pub(crate) fn linked_by_host(name: &str) -> bool {
    matches!(served_by(name), ServedBy::Host | ServedBy::HostViaLink)
}

/// A component's top-level imports and exports, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComponentWorld {
    /// `ns:pkg/iface@version` (or a plain name), in the component's order.
    pub imports: Vec<String>,
    /// The same for its exports.
    pub exports: Vec<String>,
    /// Imported interfaces without functions (types only, such as
    /// `wasmcloud:messaging/types`): nothing serves them, nothing needs to.
    pub types_only: Vec<String>,
}

/// Why a component's imports and exports could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The bytes are not a component (a core module, or not wasm at all).
    #[error("not a WebAssembly component{0}")]
    NotAComponent(&'static str),
    /// The component's bytes are malformed.
    #[error("malformed component: {0}")]
    Malformed(#[from] wasmparser::BinaryReaderError),
}

/// Reads `wasm`'s top-level imports and exports (nested modules and components are skipped).
pub fn inspect(wasm: &[u8]) -> Result<ComponentWorld, InspectError> {
    use wasmparser::{Encoding, Parser, Payload};
    let mut world = ComponentWorld::default();
    // Nested modules and components each end with their own `End`.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload? {
            Payload::Version { encoding, .. } if depth == 0 && encoding != Encoding::Component => {
                return Err(InspectError::NotAComponent(
                    " (a core module: componentize it)",
                ));
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(imports) if depth == 0 => {
                for import in imports {
                    world.imports.push(import?.name.0.to_string());
                }
            }
            Payload::ComponentExportSection(exports) if depth == 0 => {
                for export in exports {
                    world.exports.push(export?.name.0.to_string());
                }
            }
            _ => {}
        }
    }
    world.types_only = types_only(wasm, &world.imports);
    Ok(world)
}

/// The custom section in which `trellis compose` records a composed component's parts (the
/// format is the `trellis-compose` crate's `record` module's).
const COMPOSITION_SECTION: &str = "trellis:composition";
/// The most parts of a composed component the inventory lists.
pub const MAX_PARTS: usize = 32;
/// The longest part name the inventory lists, in bytes.
pub const MAX_PART_NAME: usize = 128;

/// The parts a composed component was made of, the main one first, from its composition
/// record; empty for a component that was not composed (or whose record is unreadable: it is
/// information, never a reason to refuse a component). The record comes with the component,
/// from wherever it was fetched, so it is what the component claims: at most [`MAX_PARTS`]
/// names reach the inventory, each cut to [`MAX_PART_NAME`] bytes with control characters
/// (a terminal's escapes among them) replaced by `?`.
pub fn composition_parts(wasm: &[u8]) -> Vec<String> {
    use wasmparser::{Parser, Payload};
    #[derive(serde::Deserialize)]
    struct Record {
        #[serde(default)]
        parts: Vec<Part>,
    }
    #[derive(serde::Deserialize)]
    struct Part {
        name: String,
    }
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        let Ok(payload) = payload else { break };
        match payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::CustomSection(c) if depth == 0 && c.name() == COMPOSITION_SECTION => {
                return serde_json::from_slice::<Record>(c.data())
                    .map(|r| {
                        r.parts
                            .into_iter()
                            .take(MAX_PARTS)
                            .map(|p| printable(&p.name))
                            .collect()
                    })
                    .unwrap_or_default();
            }
            _ => {}
        }
    }
    Vec::new()
}

/// `name` cut to [`MAX_PART_NAME`] bytes (on a character boundary), control characters
/// replaced by `?`.
fn printable(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let c = if c.is_control() { '?' } else { c };
        if out.len() + c.len_utf8() > MAX_PART_NAME {
            break;
        }
        out.push(c);
    }
    out
}

/// Which of `imports` are instances exporting no function. Found by validating the
/// component (no compilation); a component that does not validate has none here, and the
/// host's own load reports why.
fn types_only(wasm: &[u8], imports: &[String]) -> Vec<String> {
    use wasmparser::component_types::ComponentEntityType;
    let mut validator = wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all());
    let Ok(types) = validator.validate_all(wasm) else {
        return Vec::new();
    };
    imports
        .iter()
        .filter(|name| match types.component_entity_type_of_import(name) {
            Some(ComponentEntityType::Instance(id)) => types[id]
                .exports
                .values()
                .all(|e| !matches!(e, ComponentEntityType::Func(_))),
            _ => false,
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use trellis_compose::record::append_payload as with_record;

    #[test]
    fn a_composition_record_names_bounded_parts_and_a_bad_one_none() {
        let wasm = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/components/prebuilt/greeter.wasm"
        ))
        .expect("prebuilt greeter");
        assert_eq!(COMPOSITION_SECTION, trellis_compose::record::SECTION);
        assert!(composition_parts(&wasm).is_empty(), "not composed");
        let record =
            br#"{"main":"a","parts":[{"name":"a","sha256":"00"},{"name":"b"}],"wires":[]}"#;
        let composed = with_record(wasm.clone(), record);
        assert_eq!(composition_parts(&composed), ["a", "b"]);
        assert!(inspect(&composed).is_ok(), "still a component");
        // Hostile records: terminal escapes, overlong names, too many parts, not JSON.
        let long = "é".repeat(MAX_PART_NAME);
        let many: Vec<String> = [
            r#"{"name":"\u001b[2Jgone"}"#.to_string(),
            format!(r#"{{"name":"{long}"}}"#),
        ]
        .into_iter()
        .chain((0..1000).map(|i| format!(r#"{{"name":"p{i}"}}"#)))
        .collect();
        let record = format!(r#"{{"parts":[{}]}}"#, many.join(","));
        let parts = composition_parts(&with_record(wasm.clone(), record.as_bytes()));
        assert_eq!(parts.len(), MAX_PARTS);
        assert_eq!(parts[0], "?[2Jgone");
        assert_eq!(
            parts[1],
            "é".repeat(MAX_PART_NAME / 2),
            "cut on a character boundary"
        );
        assert_eq!(parts[2], "p0");
        let junk = with_record(wasm, b"\xff{not json");
        assert!(composition_parts(&junk).is_empty());
    }

    #[test]
    fn imports_without_functions_are_types_only() {
        let wasm = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/components/prebuilt/messenger.wasm"
        ))
        .expect("prebuilt messenger");
        let world = inspect(&wasm).expect("a component");
        // As imported: an interface whose functions the component does not use (wasi:io's
        // `error`, here) counts as types only too.
        let has = |name: &str| world.types_only.iter().any(|i| i == name);
        assert!(has("wasmcloud:messaging/types@0.2.0"), "{world:?}");
        assert!(!has("wasmcloud:messaging/consumer@0.2.0"), "{world:?}");
        assert!(!has("wasi:io/streams@0.2.6"), "{world:?}");
    }

    #[test]
    fn imports_are_classified_as_1x_hosts_link_them() {
        for host in [
            "wasi:cli/environment@0.2.6",
            "wasi:config/runtime@0.2.0-draft",
            "wasi:logging/logging",
            "wasi:http/types@0.2.6",
            "wasmcloud:bus/lattice@1.0.0",
            "wasmcloud:secrets/reveal@0.1.0-draft",
            "trellis:routing/target@0.1.0",
        ] {
            assert_eq!(served_by(host), ServedBy::Host, "{host}");
        }
        for via in [
            "wasi:keyvalue/store@0.2.0-draft",
            "wasi:blobstore/container@0.2.0-draft",
            "wasi:http/outgoing-handler@0.2.6",
        ] {
            assert_eq!(served_by(via), ServedBy::HostViaLink, "{via}");
        }
        assert_eq!(
            served_by("wasmcloud:messaging/consumer@0.2.0"),
            ServedBy::Link
        );
        assert_eq!(served_by("acme:billing/invoices"), ServedBy::Link);
        assert_eq!(
            linked_as("wasi:blobstore/types@0.2.0-draft"),
            "wasi:blobstore/blobstore@0.2.0-draft"
        );
        assert_eq!(
            linked_as("wasi:blobstore/container"),
            "wasi:blobstore/blobstore"
        );
        assert_eq!(
            linked_as("wasi:blobstore/containers"),
            "wasi:blobstore/containers"
        );
        assert_eq!(
            linked_as("wasi:keyvalue/atomics@0.2.0-draft"),
            "wasi:keyvalue/atomics@0.2.0-draft"
        );
        assert_eq!(served_by("wasi:nn/graph@0.2.0-rc"), ServedBy::Nothing);
    }

    #[test]
    fn a_components_imports_and_exports_are_read_without_compiling_it() {
        let wasm = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/components/prebuilt/compat.wasm"
        ))
        .expect("the prebuilt compat component");
        let world = inspect(&wasm).expect("a component");
        for import in [
            "wasmcloud:bus/lattice@1.0.0",
            "wasmcloud:bus/lattice@2.0.1",
            "wasi:config/runtime@0.2.0-draft",
            "wasi:logging/logging",
            "wasi:keyvalue/store@0.2.0-draft",
            "wasi:http/outgoing-handler@0.2.6",
        ] {
            assert!(
                world.imports.iter().any(|i| i == import),
                "{import}: {world:?}"
            );
        }
        assert_eq!(world.exports, ["trellis-test:components/compat@0.1.0"]);
        assert!(matches!(
            inspect(b"\0asm\x01\0\0\0"),
            Err(InspectError::NotAComponent(_))
        ));
        assert!(matches!(
            inspect(b"not wasm"),
            Err(InspectError::Malformed(_))
        ));
    }
}
