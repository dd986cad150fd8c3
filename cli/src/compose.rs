//! `trellis compose` and the composed components of manifests: reading the parts, asking
//! [`trellis_compose`] for the plan, printing it (what was wired to what, what stays an
//! import and what will serve it), and writing the result without touching the originals.
//! `trellis up` composes through [`compose_cached`], keyed by the parts' content.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use trellis_compose::{Composer, Part, Plan, Use};
use trellis_host::imports::{ServedBy, served_by};

/// What `trellis compose` was asked to do.
pub struct ComposeOptions {
    /// Where to write the result.
    pub out: PathBuf,
    /// The main component, then the components it may use.
    pub parts: Vec<PathBuf>,
    /// Choices among parts exporting the same interface.
    pub uses: Vec<Use>,
    /// Print the plan only.
    pub dry_run: bool,
    /// Print JSON rather than a table.
    pub json: bool,
}

/// The parts at `paths`, each named by its file name (by its path as given when two share a
/// file name), and `uses` with their parts named the same way.
fn read_parts(paths: &[PathBuf], uses: &[Use]) -> anyhow::Result<(Vec<Part>, Vec<Use>)> {
    let file_name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.display().to_string())
    };
    let names: Vec<String> = paths
        .iter()
        .map(|p| {
            let name = file_name(p);
            let shared = paths.iter().filter(|q| file_name(q) == name).count() > 1;
            if shared {
                p.display().to_string()
            } else {
                name
            }
        })
        .collect();
    let mut parts = Vec::with_capacity(paths.len());
    for (path, name) in paths.iter().zip(&names) {
        let wasm =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        parts.push(Part::new(name.clone(), wasm));
    }
    // A use may name its part by path or by file name.
    let uses = uses
        .iter()
        .map(|u| {
            let part = paths
                .iter()
                .zip(&names)
                .find(|(p, _)| p.display().to_string() == u.part)
                .map_or_else(|| u.part.clone(), |(_, n)| n.clone());
            Use {
                interface: u.interface.clone(),
                part,
            }
        })
        .collect();
    Ok((parts, uses))
}

/// `trellis compose`.
pub fn compose_command(opts: ComposeOptions) -> anyhow::Result<()> {
    if opts.parts.len() < 2 {
        bail!("give the main component and at least one component it uses");
    }
    refuse_overwriting_a_part(&opts.out, &opts.parts)?;
    let (parts, uses) = read_parts(&opts.parts, &opts.uses)?;
    let composer = Composer::new(parts)?;
    let plan = composer.plan(&uses)?;
    // Encoded on a dry run too: some conflicts (parts importing one name with different
    // types) only show when the component is built.
    let wasm = composer.encode(&plan)?;
    let written = if opts.dry_run {
        None
    } else {
        write_atomically(&opts.out, &wasm)?;
        Some(wasm.len())
    };
    if opts.json {
        let report = Report {
            out: (!opts.dry_run).then(|| opts.out.display().to_string()),
            bytes: written,
            wires: &plan.wires,
            open: plan
                .open
                .iter()
                .map(|o| OpenReport {
                    importer: &o.importer,
                    import: &o.import,
                    served_by: served_label(&o.import),
                })
                .collect(),
            unused: &plan.unused,
            exports: &plan.exports,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&plan));
        match written {
            Some(bytes) => println!("wrote {} ({bytes} bytes)", opts.out.display()),
            None => println!("dry run: nothing written"),
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct Report<'a> {
    out: Option<String>,
    bytes: Option<usize>,
    wires: &'a [trellis_compose::Wire],
    open: Vec<OpenReport<'a>>,
    unused: &'a [String],
    exports: &'a [String],
}

#[derive(Serialize)]
struct OpenReport<'a> {
    importer: &'a str,
    import: &'a str,
    served_by: &'static str,
}

/// What will serve an import left open, in the words of the table.
fn served_label(import: &str) -> &'static str {
    match served_by(import) {
        ServedBy::Host => "the host",
        ServedBy::HostViaLink | ServedBy::Link => "a link",
        ServedBy::Nothing => "nothing (a WASI interface Trellis does not provide)",
    }
}

/// The plan as a table: the wires, then the imports left open, the exports and the unused
/// parts.
pub fn render(plan: &Plan) -> String {
    let rows: Vec<(&str, String, String)> = plan
        .wires
        .iter()
        .map(|w| {
            let to = if w.export == w.import {
                w.exporter.clone()
            } else {
                format!("{} (as {})", w.exporter, w.export)
            };
            (w.import.as_str(), w.importer.clone(), to)
        })
        .chain(open_by_import(plan).into_iter().map(|(import, importers)| {
            (
                import,
                importers,
                format!("stays an import: {}", served_label(import)),
            )
        }))
        .collect();
    let width = rows.iter().map(|r| r.0.len()).chain([6]).max().unwrap_or(6);
    let of = rows.iter().map(|r| r.1.len()).chain([2]).max().unwrap_or(2);
    let mut out = String::new();
    let _ = writeln!(out, "{:<width$}  {:<of$}  WIRED TO", "IMPORT", "OF");
    for (import, importer, to) in &rows {
        let _ = writeln!(out, "{import:<width$}  {importer:<of$}  {to}");
    }
    let _ = writeln!(out, "\nEXPORT (of {})", plan.main);
    for e in &plan.exports {
        let _ = writeln!(out, "{e}");
    }
    if !plan.unused.is_empty() {
        let _ = writeln!(
            out,
            "\nnot used: {} (nothing imports what they export, or --use picked another)",
            plan.unused.join(", ")
        );
    }
    out
}

/// The imports left open, each once with the parts importing it (`a.wasm, b.wasm`), in the
/// plan's order.
fn open_by_import(plan: &Plan) -> Vec<(&str, String)> {
    let mut grouped: Vec<(&str, Vec<&str>)> = Vec::new();
    for o in &plan.open {
        match grouped.iter_mut().find(|(i, _)| *i == o.import) {
            Some((_, importers)) => importers.push(&o.importer),
            None => grouped.push((&o.import, vec![&o.importer])),
        }
    }
    grouped
        .into_iter()
        .map(|(i, importers)| (i, importers.join(", ")))
        .collect()
}

/// Refuses to write the result over one of its parts: the originals stay as they are.
fn refuse_overwriting_a_part(out: &Path, parts: &[PathBuf]) -> anyhow::Result<()> {
    let Ok(out_real) = std::fs::canonicalize(out) else {
        return Ok(()); // it does not exist yet
    };
    for p in parts {
        if std::fs::canonicalize(p).is_ok_and(|p| p == out_real) {
            bail!(
                "{} is one of the parts: write the composed component elsewhere (the originals are kept)",
                out.display()
            );
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file beside it, so a failure leaves no
/// half-written component.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// A component composed for `trellis up`: its bytes, where they are cached, and the plan.
pub struct Composed {
    /// The composed component.
    pub wasm: Vec<u8>,
    /// The file it is cached in (what the host's inventory shows as its reference), or
    /// `None` when the cache could not be written.
    pub path: Option<PathBuf>,
    /// The plan it was built from.
    pub plan: Plan,
}

impl Composed {
    /// The reference the host shows for it: its cached file, else what it was made of.
    pub fn reference(&self) -> String {
        match &self.path {
            Some(path) => path.display().to_string(),
            None => format!("composed: {} (not cached)", self.plan.main),
        }
    }
}

/// How many compositions the cache keeps (the oldest go first).
const CACHE_KEEP: usize = 32;

/// Composes `parts` (the main component first, named as the manifest names them) with
/// `uses`, or takes the result from `cache_dir` when the same parts and choices were
/// composed before by this release. The cache key is the SHA-256 of the release, the parts'
/// bytes and names and the choices; a cached file is used only when the record it carries
/// says it is this composition (anything else is rebuilt over it).
pub fn compose_cached(
    parts: Vec<Part>,
    uses: &[Use],
    cache_dir: &Path,
) -> Result<Composed, trellis_compose::ComposeError> {
    let mut key = Sha256::new();
    key.update(concat!("trellis ", env!("CARGO_PKG_VERSION"), "\n").as_bytes());
    for p in &parts {
        key.update((p.name.len() as u64).to_le_bytes());
        key.update(p.name.as_bytes());
        key.update((p.wasm.len() as u64).to_le_bytes());
        key.update(&p.wasm);
    }
    for u in uses {
        key.update(format!("{}={}\n", u.interface, u.part).as_bytes());
    }
    let key = key.finalize();
    let name: String = key.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let path = cache_dir.join(format!("{name}.wasm"));
    let composer = Composer::new(parts)?;
    let plan = composer.plan(uses)?;
    if let Ok(wasm) = std::fs::read(&path)
        && composer.is_composition_of(&plan, &wasm)
    {
        return Ok(Composed {
            wasm,
            path: Some(path),
            plan,
        });
    }
    let wasm = composer.encode(&plan)?;
    // The cache is an optimisation: a composition that cannot be cached still runs.
    let cached =
        std::fs::create_dir_all(cache_dir).is_ok() && write_atomically(&path, &wasm).is_ok();
    if cached {
        prune(cache_dir, CACHE_KEEP);
    } else {
        tracing::warn!(path = %path.display(), "cannot cache the composed component");
    }
    Ok(Composed {
        wasm,
        path: cached.then_some(path),
        plan,
    })
}

/// Removes all but the `keep` most recently written compositions from `dir`.
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let path = e.path();
            if path.extension().is_none_or(|x| x != "wasm") {
                return None;
            }
            Some((e.metadata().ok()?.modified().ok()?, path))
        })
        .collect();
    if files.len() <= keep {
        return;
    }
    files.sort();
    for (_, path) in &files[..files.len() - keep] {
        let _ = std::fs::remove_file(path);
    }
}

/// Composes manifest component `c` from its parts: its own wasm (loaded in `loaded`, by id)
/// first, then each `compose:` entry — another component's wasm, or a file — with the
/// choices its composed links make.
pub fn compose_component(
    c: &crate::manifest::Component,
    loaded: &std::collections::HashMap<String, crate::up::Loaded>,
    cache_dir: &Path,
) -> anyhow::Result<Composed> {
    let own = |id: &str| {
        loaded
            .get(id)
            .map(|l| l.wasm.clone())
            .with_context(|| format!("component {id} was not loaded"))
    };
    let (parts, uses) = component_parts(c, own(&c.id)?, own)?;
    Ok(compose_cached(parts, &uses, cache_dir)?)
}

/// The parts of manifest component `c` — `main` (its own wasm) first, then each `compose:`
/// entry, another component's wasm from `wasm_of` or a file — and the choices its composed
/// links make.
pub fn component_parts(
    c: &crate::manifest::Component,
    main: Vec<u8>,
    wasm_of: impl Fn(&str) -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<(Vec<Part>, Vec<Use>)> {
    use crate::manifest::ComposePart;
    let mut parts = vec![Part::new(c.id.clone(), main)];
    for part in &c.compose {
        let wasm = match part {
            ComposePart::Component(id) => wasm_of(id)?,
            ComposePart::Path { path, .. } => {
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
            }
        };
        parts.push(Part::new(part.name(), wasm));
    }
    let uses: Vec<Use> = c
        .compose_uses
        .iter()
        .map(|(interface, part)| Use {
            interface: interface.clone(),
            part: part.clone(),
        })
        .collect();
    Ok((parts, uses))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(name: &str) -> Part {
        let path = format!(
            "{}/../tests/components/prebuilt/{name}.wasm",
            env!("CARGO_MANIFEST_DIR")
        );
        Part::new(
            name,
            std::fs::read(path).expect("a prebuilt test component"),
        )
    }

    #[test]
    fn the_same_parts_compose_once_and_other_parts_again() {
        let dir =
            std::env::temp_dir().join(format!("trellis-compose-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pair = || vec![part("echo"), part("greeter")];
        let first = compose_cached(pair(), &[], &dir).expect("composed");
        let path = first.path.clone().expect("cached");
        let written = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .expect("mtime");
        let again = compose_cached(pair(), &[], &dir).expect("cached");
        assert_eq!(again.path.as_ref(), Some(&path));
        assert_eq!(again.wasm, first.wasm);
        assert_eq!(
            std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .expect("mtime"),
            written,
            "read from the cache, not written again"
        );
        // A damaged cached file is not trusted: it is composed again over.
        std::fs::write(&path, &first.wasm[..first.wasm.len() / 2]).expect("damage");
        let repaired = compose_cached(pair(), &[], &dir).expect("recomposed");
        assert_eq!(repaired.wasm, first.wasm);
        assert_eq!(std::fs::read(&path).expect("cached"), first.wasm);
        let pick = Use {
            interface: "trellis-test:greeter/greet".into(),
            part: "greeter".into(),
        };
        let other = compose_cached(pair(), &[pick], &dir).expect("composed");
        assert_ne!(other.path, first.path, "the choices are part of the key");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_cache_keeps_the_newest() {
        let dir =
            std::env::temp_dir().join(format!("trellis-compose-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        for i in 0..5 {
            std::fs::write(dir.join(format!("{i}.wasm")), b"x").expect("write");
            let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i);
            std::fs::File::options()
                .write(true)
                .open(dir.join(format!("{i}.wasm")))
                .and_then(|f| f.set_modified(t))
                .expect("mtime");
        }
        std::fs::write(dir.join("notes.txt"), b"kept").expect("write");
        prune(&dir, 2);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .expect("dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        left.sort();
        assert_eq!(left, ["3.wasm", "4.wasm", "notes.txt"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
