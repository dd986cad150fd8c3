//! Test component exporting `trellis-test:greeter/greet`: another component's import can be
//! linked to it (component-to-component calls through the lattice).

wit_bindgen::generate!({
    path: "../wit",
    world: "trellis-test:components/greeter-component",
    generate_all,
});

use exports::trellis_test::greeter::greet::Guest;

struct Greeter;

impl Guest for Greeter {
    fn greeting(name: String) -> String {
        let greeting = wasi::config::store::get("greeting")
            .ok()
            .flatten()
            .unwrap_or_else(|| "hello".to_string());
        format!("{greeting} from a component, {name}")
    }

    fn slow(_ms: u32) -> String {
        "done".to_string()
    }
}

export!(Greeter);
