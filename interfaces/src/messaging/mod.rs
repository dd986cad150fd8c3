//! Messaging on the wire: `wasmcloud:messaging/consumer@0.2.0` (components publish and
//! request through a provider) and `wasmcloud:messaging/handler@0.2.0` (a provider delivers
//! messages to a component).
//!
//! The two directions are served apart: a messaging provider serves [`Consumer`] with
//! [`serve_consumer`] and delivers through [`HandlerClient`]; whatever stands for a component
//! (a host, a test) serves [`MessageHandler`] with [`serve_handler`]. Errors are the
//! interface's plain strings.

pub mod bindings;
mod wire;

use std::future::Future;

use bytes::Bytes;
use trellis_wrpc_nats::wrpc_transport::Invoke;

use crate::error::fold;
use crate::{CallError, Invocations, ServeError};

use bindings::wasmcloud::messaging::{consumer as consumer_client, handler as handler_client};

/// The wire instance of the consumer (what a provider serves).
pub const CONSUMER: &str = "wasmcloud:messaging/consumer@0.2.0";
/// The wire instance of the handler (what a component exports).
pub const HANDLER: &str = "wasmcloud:messaging/handler@0.2.0";

/// The parameter checks of the interface: none are needed (no function takes a list of
/// tuples, records or options, which the generated decoders would size from a forged length
/// prefix); providers pass it all the same, so a check added here reaches every provider.
pub fn param_checks() -> trellis_wrpc_nats::wire_shape::ParamChecks {
    trellis_wrpc_nats::wire_shape::ParamChecks::new()
}

/// A message (`wasmcloud:messaging/types.broker-message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The subject (topic) it was published on.
    pub subject: String,
    /// Its payload.
    pub body: Bytes,
    /// Where an answer goes, if one is expected.
    pub reply_to: Option<String>,
}

/// What a messaging provider serves to components: publishing and request/reply, for calls
/// with context `C`.
pub trait Consumer<C: Send + 'static>: Clone + Send + Sync + 'static {
    /// Sends `subject` a request and waits up to `timeout_ms` for one answer.
    fn request(
        &self,
        cx: C,
        subject: String,
        body: Bytes,
        timeout_ms: u32,
    ) -> impl Future<Output = Result<Message, String>> + Send;
    /// Publishes `msg`.
    fn publish(&self, cx: C, msg: Message) -> impl Future<Output = Result<(), String>> + Send;
}

/// What receives messages: a component's `handle-message` export, for calls with context `C`.
pub trait MessageHandler<C: Send + 'static>: Clone + Send + Sync + 'static {
    /// Handles one message; an error asks the provider to deliver it again (if it can).
    fn handle_message(
        &self,
        cx: C,
        msg: Message,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// Serves `consumer` (publish, request) on `server`.
pub async fn serve_consumer<S, H>(server: &S, consumer: H) -> Result<Invocations, ServeError>
where
    S: wrpc_transport::Serve,
    S::Context: Send + 'static,
    H: Consumer<S::Context>,
{
    bindings::exports::wasmcloud::messaging::consumer::serve_interface(server, wire::Wire(consumer))
        .await
        .map(Vec::from)
        .map_err(|error| ServeError {
            interface: CONSUMER,
            error,
        })
}

/// Serves `handler` (`handle-message`) on `server`.
pub async fn serve_handler<S, H>(server: &S, handler: H) -> Result<Invocations, ServeError>
where
    S: wrpc_transport::Serve,
    S::Context: Send + 'static,
    H: MessageHandler<S::Context>,
{
    bindings::exports::wasmcloud::messaging::handler::serve_interface(server, wire::Wire(handler))
        .await
        .map(Vec::from)
        .map_err(|error| ServeError {
            interface: HANDLER,
            error,
        })
}

/// Calls a messaging provider's consumer over `wrpc`, every call with context `cx`.
pub struct ConsumerClient<'a, I: Invoke> {
    wrpc: &'a I,
    cx: I::Context,
}

impl<'a, I: Invoke> ConsumerClient<'a, I>
where
    I::Context: Clone,
{
    /// A client calling over `wrpc` with context `cx`.
    pub fn new(wrpc: &'a I, cx: I::Context) -> Self {
        Self { wrpc, cx }
    }

    /// `consumer.request`.
    pub async fn request(
        &self,
        subject: &str,
        body: &Bytes,
        timeout_ms: u32,
    ) -> Result<Message, CallError<String>> {
        let res =
            consumer_client::request(self.wrpc, self.cx.clone(), subject, body, timeout_ms).await;
        fold(res).map(wire::from_wire)
    }

    /// `consumer.publish`.
    pub async fn publish(&self, msg: Message) -> Result<(), CallError<String>> {
        fold(consumer_client::publish(self.wrpc, self.cx.clone(), &wire::to_wire(msg)).await)
    }
}

/// Delivers messages to a component's handler over `wrpc`, every call with context `cx`.
pub struct HandlerClient<'a, I: Invoke> {
    wrpc: &'a I,
    cx: I::Context,
}

impl<'a, I: Invoke> HandlerClient<'a, I>
where
    I::Context: Clone,
{
    /// A client calling over `wrpc` with context `cx`.
    pub fn new(wrpc: &'a I, cx: I::Context) -> Self {
        Self { wrpc, cx }
    }

    /// `handler.handle-message`.
    pub async fn handle_message(&self, msg: Message) -> Result<(), CallError<String>> {
        let msg = wire::to_wire(msg);
        fold(handler_client::handle_message(self.wrpc, self.cx.clone(), &msg).await)
    }
}
