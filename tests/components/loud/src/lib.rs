//! Test component wrapping `trellis-test:greeter/greet`: imports it and exports it again,
//! shouting, and exports `trellis-test:greeter/punctuation`. The composer's wrapper case
//! (echo → loud → greeter) and, with polite, its cycle case.

wit_bindgen::generate!({
    path: "../wit",
    world: "trellis-test:components/loud-component",
    generate_all,
});

use trellis_test::greeter::greet;

struct Loud;

impl exports::trellis_test::greeter::greet::Guest for Loud {
    fn greeting(name: String) -> String {
        greet::greeting(&name).to_uppercase()
    }

    fn slow(ms: u32) -> String {
        greet::slow(ms)
    }
}

impl exports::trellis_test::greeter::punctuation::Guest for Loud {
    fn mark() -> String {
        "!!".to_string()
    }
}

export!(Loud);
