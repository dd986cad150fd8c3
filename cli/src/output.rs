//! What the CLI prints: aligned tables for people, JSON for scripts (`--json`).
//!
//! Results go to stdout; notes and progress go to stderr, so `trellis … --json | jq` always
//! reads a single JSON document.

use std::io::Write as _;

use serde::Serialize;

/// A table of text cells.
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new<const N: usize>(header: [&str; N]) -> Self {
        Self {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are empty, extra cells dropped).
    pub fn row<const N: usize>(&mut self, cells: [String; N]) {
        let mut cells: Vec<String> = cells.into_iter().collect();
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as aligned text, one line per row, columns separated by two spaces.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let last = row.len().saturating_sub(1);
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                line.push_str(cell);
                if i < last {
                    let pad = w - cell.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// The output format.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    /// JSON on stdout instead of text.
    pub json: bool,
}

fn stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

fn json_text(value: &impl Serialize) -> String {
    match serde_json::to_string_pretty(value) {
        Ok(text) => text + "\n",
        Err(e) => format!("{{\"error\": {:?}}}\n", e.to_string()),
    }
}

impl Out {
    /// A one-line result (`human`), or `value` as JSON.
    pub fn done(&self, human: &str, value: &impl Serialize) {
        if self.json {
            stdout(&json_text(value));
        } else {
            stdout(&format!("{human}\n"));
        }
    }

    /// A table, or `value` as JSON.
    pub fn table(&self, table: &Table, value: &impl Serialize) {
        if self.json {
            stdout(&json_text(value));
        } else if table.is_empty() {
            self.note("(none)");
        } else {
            stdout(&table.render());
        }
    }

    /// Several titled tables, or `value` as JSON.
    pub fn sections(&self, sections: &[(&str, &Table)], value: &impl Serialize) {
        if self.json {
            stdout(&json_text(value));
            return;
        }
        let mut text = String::new();
        for (i, (title, table)) in sections.iter().enumerate() {
            if i > 0 {
                text.push('\n');
            }
            text.push_str(&format!("{}\n", title.to_uppercase()));
            if table.is_empty() {
                text.push_str("  (none)\n");
            } else {
                for line in table.render().lines() {
                    text.push_str(&format!("  {line}\n"));
                }
            }
        }
        stdout(&text);
    }

    /// A remark for people, on stderr (never mixed into JSON).
    pub fn note(&self, text: &str) {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_trailing_space_is_trimmed() {
        let mut t = Table::new(["A", "LONGER", "C"]);
        t.row(["xyz".into(), "1".into(), String::new()]);
        t.row(["k".into(), "22".into(), "end".into()]);
        assert_eq!(t.render(), "A    LONGER  C\nxyz  1\nk    22      end\n");
    }
}
