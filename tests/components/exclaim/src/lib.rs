//! Test component exporting `trellis-test:greeter/punctuation`: the end of a composed chain
//! (echo → polite → exclaim).

wit_bindgen::generate!({
    path: "../wit",
    world: "trellis-test:components/exclaim-component",
    generate_all,
});

use exports::trellis_test::greeter::punctuation::Guest;

struct Exclaim;

impl Guest for Exclaim {
    fn mark() -> String {
        "!".to_string()
    }
}

export!(Exclaim);
