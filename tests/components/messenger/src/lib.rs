//! Test component for messaging: every message it handles that has a reply subject is
//! answered, upper-cased, on it through the linked `wasmcloud:messaging/consumer`; one
//! without is handled with nothing to answer (the messaging benchmark's load); one whose
//! body is `fail` fails (for tests of a component's errors).

wit_bindgen::generate!({
    path: "../wit",
    world: "trellis-test:components/messenger-component",
    generate_all,
});

use exports::wasmcloud::messaging::handler::Guest;
use wasmcloud::messaging::consumer;
use wasmcloud::messaging::types::BrokerMessage;

struct Messenger;

impl Guest for Messenger {
    fn handle_message(msg: BrokerMessage) -> Result<(), String> {
        if msg.body == b"fail" {
            return Err(format!("asked to fail (on {})", msg.subject));
        }
        let Some(reply_to) = msg.reply_to else {
            return Ok(());
        };
        consumer::publish(&BrokerMessage {
            subject: reply_to,
            body: msg.body.to_ascii_uppercase(),
            reply_to: None,
        })
    }
}

export!(Messenger);
