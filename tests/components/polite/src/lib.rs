//! Test component exporting `trellis-test:greeter/greet` and importing
//! `trellis-test:greeter/punctuation`: the middle of a composed chain (echo → polite →
//! exclaim), and a second exporter of `greet` for the composition's ambiguity case.

wit_bindgen::generate!({
    path: "../wit",
    world: "trellis-test:components/polite-component",
    generate_all,
});

use exports::trellis_test::greeter::greet::Guest;
use trellis_test::greeter::punctuation;

struct Polite;

impl Guest for Polite {
    fn greeting(name: String) -> String {
        format!("good day, {name}{}", punctuation::mark())
    }

    fn slow(_ms: u32) -> String {
        "done".to_string()
    }
}

export!(Polite);
