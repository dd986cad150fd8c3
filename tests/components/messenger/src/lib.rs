//! Test component for messaging: every message it handles is answered, upper-cased, on the
//! message's reply subject through the linked `wasmcloud:messaging/consumer`.

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
        let Some(reply_to) = msg.reply_to else {
            return Err(format!("message on {} has no reply subject", msg.subject));
        };
        consumer::publish(&BrokerMessage {
            subject: reply_to,
            body: msg.body.to_ascii_uppercase(),
            reply_to: None,
        })
    }
}

export!(Messenger);
