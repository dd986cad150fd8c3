//! Test component: points its calls of the `echo` interface at a target it picks at runtime
//! (`trellis:routing/target`), then calls it — for the host's target-policy tests.

wit_bindgen::generate!({
    path: "../wit",
    world: "trellis-test:components/picker-component",
    generate_all,
});

use exports::trellis_test::components::picker::Guest;
use trellis::routing::target::{self, TargetError};
use trellis_test::components::echo;

struct Picker;

impl Guest for Picker {
    fn pick(target: String, key: String) -> Result<Option<String>, String> {
        let interfaces = ["trellis-test:components/echo".to_string()];
        target::set_target(&target, &interfaces).map_err(|e| match e {
            TargetError::NoSuchTarget(why) => format!("no-such-target: {why}"),
            TargetError::NotAllowed(why) => format!("not-allowed: {why}"),
            TargetError::NotAnswering(why) => format!("not-answering: {why}"),
        })?;
        Ok(echo::config_value(&key))
    }
}

export!(Picker);
