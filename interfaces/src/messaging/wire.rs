//! The generated serving traits, implemented for [`Consumer`] and [`MessageHandler`], and
//! the conversions of the message record.

use bytes::Bytes;

use super::bindings::exports::wasmcloud::messaging::{consumer, handler};
use super::bindings::wasmcloud::messaging::types::BrokerMessage;
use super::{Consumer, Message, MessageHandler};

/// A handler trait's implementation as the generated bindings serve it.
#[derive(Clone)]
pub(super) struct Wire<H>(pub(super) H);

pub(super) fn from_wire(m: BrokerMessage) -> Message {
    Message {
        subject: m.subject,
        body: m.body,
        reply_to: m.reply_to,
    }
}

pub(super) fn to_wire(m: Message) -> BrokerMessage {
    BrokerMessage {
        subject: m.subject,
        body: m.body,
        reply_to: m.reply_to,
    }
}

impl<C: Send + 'static, H: Consumer<C>> consumer::Handler<C> for Wire<H> {
    async fn request(
        &self,
        cx: C,
        subject: String,
        body: Bytes,
        timeout_ms: u32,
    ) -> anyhow::Result<Result<BrokerMessage, String>> {
        Ok(self
            .0
            .request(cx, subject, body, timeout_ms)
            .await
            .map(to_wire))
    }

    async fn publish(&self, cx: C, msg: BrokerMessage) -> anyhow::Result<Result<(), String>> {
        Ok(self.0.publish(cx, from_wire(msg)).await)
    }
}

impl<C: Send + 'static, H: MessageHandler<C>> handler::Handler<C> for Wire<H> {
    async fn handle_message(
        &self,
        cx: C,
        msg: BrokerMessage,
    ) -> anyhow::Result<Result<(), String>> {
        Ok(self.0.handle_message(cx, from_wire(msg)).await)
    }
}
