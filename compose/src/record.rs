//! The record of a composition kept inside the composed component: a custom section named
//! [`SECTION`] whose payload is the JSON of a [`Record`]. Custom sections do not change what
//! a component does; the host reads this one to show a composed component's parts in its
//! inventory, and `trellis component inspect` to show how it was wired.
//!
//! The format is this module's: `{"main": NAME, "parts": [{"name", "sha256"}…],
//! "wires": [{"importer", "import", "exporter", "export"}…]}`; readers ignore fields they do
//! not know.

use serde::{Deserialize, Serialize};

use crate::plan::Wire;

/// The custom section's name.
pub const SECTION: &str = "trellis:composition";

/// One part as recorded: its name and the SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedPart {
    /// Its name in the plan.
    pub name: String,
    /// Lower-case hex SHA-256 of its bytes (so a part can be matched to a file).
    pub sha256: String,
}

/// What a composed component was made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The main component.
    pub main: String,
    /// Every part composed in, the main component first.
    pub parts: Vec<RecordedPart>,
    /// The wiring.
    pub wires: Vec<Wire>,
}

/// The record in composed component `wasm`, if it has a readable one (a record in a nested
/// component or module does not count).
pub fn read(wasm: &[u8]) -> Option<Record> {
    use wasmparser::{Parser, Payload};
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.ok()? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::CustomSection(c) if depth == 0 && c.name() == SECTION => {
                return serde_json::from_slice(c.data()).ok();
            }
            _ => {}
        }
    }
    None
}

/// `wasm` (a component) with `record` appended as a custom section. A custom section may
/// come last in a component, so the component's other bytes stay as they are.
pub fn append(wasm: Vec<u8>, record: &Record) -> Vec<u8> {
    // Serializing plain strings cannot fail; an empty object keeps the section well formed
    // if it ever did.
    let payload = serde_json::to_vec(record).unwrap_or_else(|_| b"{}".to_vec());
    append_payload(wasm, &payload)
}

/// `wasm` with a [`SECTION`] custom section holding `payload` as it is (what readers of
/// records test hostile payloads with).
pub fn append_payload(mut wasm: Vec<u8>, payload: &[u8]) -> Vec<u8> {
    use wasm_encoder::ComponentSection as _;
    wasm_encoder::CustomSection {
        name: SECTION.into(),
        data: payload.into(),
    }
    .append_to_component(&mut wasm);
    wasm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_appended_whole() {
        let wasm = append_payload(b"prefix".to_vec(), &[7u8; 200]);
        // id 0, size 1 + 19 + 200 = 220 (two LEB128 bytes), name length 19, name, payload.
        assert_eq!(&wasm[..6], b"prefix");
        assert_eq!(&wasm[6..10], [0x00, 0xdc, 0x01, 19]);
        assert_eq!(&wasm[10..29], SECTION.as_bytes());
        assert_eq!(&wasm[29..], [7u8; 200]);
    }
}
