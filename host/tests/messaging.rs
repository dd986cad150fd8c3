//! Messaging through a component, both directions: a provider delivers a message to the
//! component's `wasmcloud:messaging/handler` export (provider → component), and the component
//! publishes its answer through its `consumer` import, routed by link back to the provider.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use trellis_host::read_component;
use trellis_sdk::link::LinkDefinition;
use trellis_sdk::provider::Provider;
use trellis_sdk::runtime::CallContext;
use trellis_sdk::store::StoredLink;
use trellis_tests as common;

mod support;

use trellis_interfaces::SplitCall as _;
use trellis_interfaces::messaging::{self, HandlerClient, Message};

const MESSENGER_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/components/prebuilt/messenger.wasm"
);

/// A broker stand-in that records what components publish.
#[derive(Clone, Default)]
struct Broker(Arc<Mutex<Vec<(String, String, Bytes)>>>);
impl Provider for Broker {}
impl messaging::Consumer<CallContext> for Broker {
    async fn request(
        &self,
        _: CallContext,
        subject: String,
        _body: Bytes,
        _t: u32,
    ) -> Result<Message, String> {
        Err(format!("no responders on {subject}"))
    }
    async fn publish(&self, cx: CallContext, msg: Message) -> Result<(), String> {
        self.0
            .lock()
            .unwrap()
            .push((cx.source_id, msg.subject, msg.body));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_the_component_and_its_replies_reach_the_provider() {
    let lattice = common::unique_lattice("msg");
    let broker = Broker::default();
    let provider = support::provider(&lattice, "broker", broker.clone()).await;
    provider
        .serve(
            messaging::serve_consumer(&provider.server(), broker.clone())
                .await
                .unwrap(),
        )
        .unwrap();

    let host = support::host(&lattice).await;
    host.admin()
        .put_link(StoredLink::new(
            "messenger",
            "broker",
            "wasmcloud",
            "messaging",
            ["consumer"],
        ))
        .await
        .unwrap();
    let _c = host
        .start_component("messenger", read_component(MESSENGER_WASM).unwrap(), &[])
        .await
        .unwrap();

    let to_component = provider.linked_client(&LinkDefinition {
        source_id: "broker".into(),
        target: "messenger".into(),
        name: "default".into(),
        wit_namespace: "wasmcloud".into(),
        wit_package: "messaging".into(),
        interfaces: vec!["handler".into()],
        source_config: Default::default(),
        target_config: Default::default(),
        source_secrets: None,
        target_secrets: None,
    });
    let msg = Message {
        subject: "orders".into(),
        body: Bytes::from("new order"),
        reply_to: Some("orders.reply".into()),
    };
    let handler = HandlerClient::new(&to_component, ());
    common::eventually(|| async { handler.handle_message(msg.clone()).await.split() })
        .await
        .unwrap()
        .unwrap();
    let published = broker.0.lock().unwrap().clone();
    assert_eq!(
        published.last(),
        Some(&(
            "messenger".to_string(),
            "orders.reply".to_string(),
            Bytes::from("NEW ORDER")
        ))
    );

    // The component's own errors come back as the interface's error value.
    let failing = Message {
        body: Bytes::from("fail"),
        ..msg
    };
    let err = handler
        .handle_message(failing)
        .await
        .split()
        .unwrap()
        .unwrap_err();
    assert!(err.contains("asked to fail"), "{err}");

    // A message whose body claims 2^32 - 1 bytes with none behind them. The runtime's reader
    // would reserve room for that many list elements at once and abort the host (this
    // process); the host's parameter check fails the call instead, and the host serves on.
    let err = forged_message(&to_component).await;
    assert!(err.contains("malformed parameters"), "{err}");
    let msg = Message {
        subject: "orders".into(),
        body: Bytes::from("after"),
        reply_to: Some("orders.reply".into()),
    };
    handler.handle_message(msg).await.unwrap();
}

/// Sends `handle-message` a broker message (subject `s`) whose body length is forged;
/// returns how the call failed.
async fn forged_message(c: &trellis_sdk::runtime::LinkedClient) -> String {
    let params = Bytes::from_static(b"\x01s\xff\xff\xff\xff\x0f");
    common::forged_call(
        c,
        (),
        "wasmcloud:messaging/handler@0.2.0",
        "handle-message",
        params,
    )
    .await
}
