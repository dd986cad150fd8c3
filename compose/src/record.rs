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

/// `wasm` (a component) with `record` appended as a custom section. A custom section may
/// come last in a component, so the component's other bytes stay as they are.
pub fn append(mut wasm: Vec<u8>, record: &Record) -> Vec<u8> {
    // Serializing plain strings cannot fail; an empty object keeps the section well formed
    // if it ever did.
    let payload = serde_json::to_vec(record).unwrap_or_else(|_| b"{}".to_vec());
    let mut name = Vec::new();
    leb128(&mut name, SECTION.len());
    name.extend_from_slice(SECTION.as_bytes());
    wasm.push(0); // custom section id
    leb128(&mut wasm, name.len() + payload.len());
    wasm.extend_from_slice(&name);
    wasm.extend_from_slice(&payload);
    wasm
}

/// Appends `n` as unsigned LEB128.
fn leb128(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_leb128() {
        let mut out = Vec::new();
        leb128(&mut out, 3);
        leb128(&mut out, 624_485);
        assert_eq!(out, [0x03, 0xe5, 0x8e, 0x26]);
    }
}
