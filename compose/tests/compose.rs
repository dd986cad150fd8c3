//! Composition of the project's test components (tests/components/prebuilt): a pair, a chain
//! of three, and the refusals — ambiguity, version mismatch, nothing to compose, cycles.
//! Running composed components is tested with the host, in the CLI's tests.

use trellis_compose::record::{Record, SECTION};
use trellis_compose::{ComposeError, Composer, Part, Use};
use wac_graph::CompositionGraph;
use wac_graph::types::Package;

const GREET: &str = "trellis-test:greeter/greet@0.1.0";

fn part(name: &str) -> Part {
    let path = format!(
        "{}/../tests/components/prebuilt/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    Part::new(
        name,
        std::fs::read(&path).expect("a prebuilt test component"),
    )
}

/// The top-level imports and exports of a component.
fn world(wasm: &[u8]) -> (Vec<String>, Vec<String>) {
    let mut graph = CompositionGraph::new();
    let package = Package::from_bytes("t:t", None, wasm.to_vec(), graph.types_mut())
        .expect("the result is a component");
    let world = &graph.types()[package.ty()];
    (
        world.imports.keys().cloned().collect(),
        world.exports.keys().cloned().collect(),
    )
}

/// The record in the composed component's custom section.
fn record(wasm: &[u8]) -> Record {
    let name = SECTION.as_bytes();
    let at = wasm
        .windows(name.len())
        .rposition(|w| w == name)
        .expect("the composition record");
    serde_json::from_slice(&wasm[at + name.len()..]).expect("the record is JSON")
}

fn compose(names: &[&str], uses: &[Use]) -> Result<(trellis_compose::Plan, Vec<u8>), ComposeError> {
    let composer = Composer::new(names.iter().map(|n| part(n)).collect())?;
    let plan = composer.plan(uses)?;
    let wasm = composer.encode(&plan)?;
    Ok((plan, wasm))
}

#[test]
fn a_pair_is_wired_by_the_interface_one_imports_and_the_other_exports() {
    let (plan, wasm) = compose(&["echo.wasm", "greeter.wasm"], &[]).expect("composes");
    assert_eq!(plan.main, "echo.wasm");
    assert_eq!(plan.wires.len(), 1, "{plan:#?}");
    let wire = &plan.wires[0];
    assert_eq!(
        (
            wire.importer.as_str(),
            wire.import.as_str(),
            wire.exporter.as_str()
        ),
        ("echo.wasm", GREET, "greeter.wasm")
    );
    assert!(plan.unused.is_empty());
    let open: Vec<&str> = plan.open.iter().map(|o| o.import.as_str()).collect();
    assert!(
        open.contains(&"wasi:keyvalue/store@0.2.0-draft"),
        "{open:?}"
    );
    assert!(!open.contains(&GREET), "{open:?}");

    let (imports, exports) = world(&wasm);
    assert!(!imports.iter().any(|i| i == GREET), "{imports:?}");
    assert!(
        imports.iter().any(|i| i == "wasi:config/store@0.2.0-draft"),
        "both parts' import, once: {imports:?}"
    );
    assert_eq!(exports, ["trellis-test:components/echo@0.1.0"]);
    let record = record(&wasm);
    let names: Vec<&str> = record.parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["echo.wasm", "greeter.wasm"]);
    assert_eq!(record.parts[1].sha256.len(), 64);
    assert_eq!(record.wires, plan.wires);
}

#[test]
fn a_chain_of_three_is_wired_transitively() {
    let (plan, wasm) =
        compose(&["echo.wasm", "polite.wasm", "exclaim.wasm"], &[]).expect("composes");
    let wires: Vec<(&str, &str)> = plan
        .wires
        .iter()
        .map(|w| (w.importer.as_str(), w.exporter.as_str()))
        .collect();
    assert_eq!(
        wires,
        [
            ("echo.wasm", "polite.wasm"),
            ("polite.wasm", "exclaim.wasm")
        ]
    );
    let (imports, _) = world(&wasm);
    assert!(
        !imports
            .iter()
            .any(|i| i.starts_with("trellis-test:greeter/")),
        "{imports:?}"
    );
}

#[test]
fn two_exporters_of_one_interface_are_refused_until_one_is_picked() {
    let err = compose(
        &["echo.wasm", "greeter.wasm", "polite.wasm", "exclaim.wasm"],
        &[],
    )
    .expect_err("ambiguous");
    let message = err.to_string();
    assert!(matches!(err, ComposeError::Ambiguous { .. }), "{err:?}");
    assert_eq!(
        message,
        format!(
            "echo.wasm imports {GREET}, which greeter.wasm and polite.wasm export: pick one with --use trellis-test:greeter/greet=greeter.wasm"
        )
    );

    let pick: Use = "trellis-test:greeter/greet=polite.wasm"
        .parse()
        .expect("a use");
    let (plan, _) = compose(
        &["echo.wasm", "greeter.wasm", "polite.wasm", "exclaim.wasm"],
        &[pick],
    )
    .expect("picked");
    assert_eq!(plan.wires.len(), 2, "{plan:#?}");
    assert_eq!(plan.unused, ["greeter.wasm"]);

    let wrong: Use = "trellis-test:greeter/greet=exclaim.wasm"
        .parse()
        .expect("a use");
    let err =
        compose(&["echo.wasm", "greeter.wasm", "exclaim.wasm"], &[wrong]).expect_err("wrong pick");
    assert!(
        err.to_string()
            .contains("exclaim.wasm: it does not export trellis-test:greeter/greet@0.1.0"),
        "{err}"
    );
    let missing: Use = "trellis-test:greeter/greet=nope.wasm"
        .parse()
        .expect("a use");
    let err = compose(&["echo.wasm", "greeter.wasm"], &[missing]).expect_err("no such part");
    assert!(
        err.to_string()
            .contains("no such part (the parts: greeter.wasm)"),
        "{err}"
    );
}

/// `wasm` with every `from` replaced by `to` (same length, so the binary stays well formed).
fn renamed(mut wasm: Vec<u8>, from: &str, to: &str) -> Vec<u8> {
    let (from, to) = (from.as_bytes(), to.as_bytes());
    assert_eq!(to.len(), from.len());
    let mut i = 0;
    let mut replaced = 0;
    while i + from.len() <= wasm.len() {
        if &wasm[i..i + from.len()] == from {
            wasm[i..i + from.len()].copy_from_slice(to);
            replaced += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(replaced > 0);
    wasm
}

/// `greeter.wasm` with its interface renamed to another version: a component built against
/// an incompatible release of the interface.
fn greeter_at(version: &str) -> Part {
    let to = format!("trellis-test:greeter/greet@{version}");
    Part::new(
        format!("greeter-{version}.wasm"),
        renamed(part("greeter.wasm").wasm, GREET, &to),
    )
}

#[test]
fn a_wrapper_takes_its_own_import_from_the_others() {
    // loud imports and exports greet: picked for echo, it takes its own from greeter.
    let pick: Use = "trellis-test:greeter/greet=loud.wasm"
        .parse()
        .expect("a use");
    let (plan, wasm) =
        compose(&["echo.wasm", "loud.wasm", "greeter.wasm"], &[pick]).expect("composes");
    let wires: Vec<(&str, &str)> = plan
        .wires
        .iter()
        .map(|w| (w.importer.as_str(), w.exporter.as_str()))
        .collect();
    assert_eq!(
        wires,
        [("echo.wasm", "loud.wasm"), ("loud.wasm", "greeter.wasm")]
    );
    let (imports, _) = world(&wasm);
    assert!(!imports.iter().any(|i| i == GREET), "{imports:?}");
    // Without the choice the two exporters are ambiguous.
    let err = compose(&["echo.wasm", "loud.wasm", "greeter.wasm"], &[]).expect_err("ambiguous");
    assert!(matches!(err, ComposeError::Ambiguous { .. }), "{err:?}");
}

#[test]
fn parts_importing_from_each_other_are_refused_as_a_cycle() {
    // echo ← polite (greet); polite ← loud (punctuation); loud ← polite (greet).
    let pick: Use = "trellis-test:greeter/greet=polite.wasm"
        .parse()
        .expect("a use");
    let err = compose(&["echo.wasm", "polite.wasm", "loud.wasm"], &[pick]).expect_err("a cycle");
    assert_eq!(
        err.to_string(),
        "the parts import from each other in a cycle: polite.wasm → loud.wasm → polite.wasm"
    );
}

#[test]
fn same_name_and_version_with_other_types_is_refused() {
    // greeter's `greeting` renamed `greetinx`: echo's import wants the function it lacks
    // (an import lists only the functions the component calls, so renaming `slow` would
    // still fit).
    let wasm = renamed(part("greeter.wasm").wasm, "greeting", "greetinx");
    let composer =
        Composer::new(vec![part("echo.wasm"), Part::new("greeter-x.wasm", wasm)]).expect("parts");
    let err = composer.plan(&[]).expect_err("other types");
    assert!(matches!(err, ComposeError::TypeMismatch { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "echo.wasm imports trellis-test:greeter/greet@0.1.0, but greeter-x.wasm's export of it has other types: instance is missing expected function export `greeting`"
    );
}

#[test]
fn a_choice_nothing_needs_is_refused() {
    let unused: Use = "wasi:nn/graph=greeter.wasm".parse().expect("a use");
    let err = compose(&["echo.wasm", "greeter.wasm"], &[unused]).expect_err("unused choice");
    assert_eq!(
        err.to_string(),
        "--use wasi:nn/graph=greeter.wasm: no part that is used imports it"
    );
    let main: Use = "trellis-test:greeter/greet=echo.wasm"
        .parse()
        .expect("a use");
    let err = compose(&["echo.wasm", "greeter.wasm"], &[main]).expect_err("main");
    assert!(
        err.to_string()
            .ends_with("the main component serves no import"),
        "{err}"
    );
}

#[test]
fn an_incompatible_version_is_refused_with_both_versions_named() {
    let composer = Composer::new(vec![part("echo.wasm"), greeter_at("9.0.0")]).expect("parts");
    let err = composer.plan(&[]).expect_err("mismatch");
    assert!(
        matches!(err, ComposeError::VersionMismatch { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "version mismatch: echo.wasm imports trellis-test:greeter/greet@0.1.0 (version 0.1.0), but greeter-9.0.0.wasm exports trellis-test:greeter/greet@9.0.0 (version 9.0.0); rebuild one against the other's version"
    );
    // A compatible release (0.1.x for 0.1.0) is wired.
    let composer = Composer::new(vec![part("echo.wasm"), greeter_at("0.1.7")]).expect("parts");
    let plan = composer.plan(&[]).expect("compatible");
    assert_eq!(plan.wires[0].export, "trellis-test:greeter/greet@0.1.7");
    composer.encode(&plan).expect("encodes");
}

#[test]
fn parts_that_serve_nothing_and_bad_inputs_are_refused() {
    let err = compose(&["echo.wasm", "exclaim.wasm"], &[]).expect_err("nothing to wire");
    assert!(
        matches!(err, ComposeError::NothingToCompose { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("no import of echo.wasm is exported by exclaim.wasm"),
        "{err}"
    );

    let err = Composer::new(vec![
        part("echo.wasm"),
        Part::new("junk.wasm", b"\0asm junk".to_vec()),
    ])
    .err()
    .expect("not a component");
    assert!(
        err.to_string().starts_with("junk.wasm is not a component"),
        "{err}"
    );
    let err = Composer::new(vec![part("echo.wasm"), part("echo.wasm")])
        .err()
        .expect("twice");
    assert_eq!(err.to_string(), "echo.wasm is given twice");
    assert!(matches!(
        Composer::new(Vec::new()),
        Err(ComposeError::NoMain)
    ));
}
