//! Drives the `counter_provider` example from the outside, the way a host would: links a
//! (pretend) component to it through the lattice store, calls it over wRPC, and shows what
//! link ping reports.
//!
//! `cargo run -p trellis-sdk --example counter_client -- <nats-url> <lattice> [calls]`

use std::time::Duration;

use async_nats::HeaderMap;
use trellis_sdk::admin;
use trellis_sdk::store::{LatticeStore, StoredLink};
use trellis_sdk::subjects::LatticeSubjects;
use trellis_wrpc_nats::{Connection, TransportOptions};

wit_bindgen_wrpc::generate!({
    // Calls go through the transport's leaner `InvokeExt` (see `trellis_wrpc_nats::wrpc_transport`).
    wrpc_transport_path: "::trellis_wrpc_nats::wrpc_transport",
    inline: "
        package trellis-example:counter@0.1.0;
        interface counter { increment: func(by: u64) -> u64; }
        world caller { import counter; }
    ",
});

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let lattice = args.next().unwrap_or_else(|| "default".into());
    let calls: u64 = args.next().map(|n| n.parse()).transpose()?.unwrap_or(3);

    let nats = async_nats::connect(url.as_str()).await?;
    let subjects = LatticeSubjects::new(&lattice)?;
    let store = LatticeStore::open(&nats, &subjects).await?;
    store
        .put_config(
            "demo-counter",
            &[("start".to_string(), "0".to_string())].into(),
        )
        .await?;
    store
        .put_link(
            StoredLink::new(
                "demo-component",
                "counter",
                "trellis-example",
                "counter",
                ["counter"],
            )
            .with_target_config(["demo-counter"]),
        )
        .await?;

    let conn = Connection::new(nats.clone(), TransportOptions::default()).await?;
    let client = conn.client(subjects.wrpc_prefix("counter"));
    let mut headers = HeaderMap::new();
    headers.insert("source-id", "demo-component");
    for attempt in 0.. {
        // The provider picks the link up from the store within milliseconds.
        match trellis_example::counter::counter::increment(&client, Some(headers.clone()), 0).await
        {
            Ok(_) => break,
            Err(_) if attempt < 50 => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(err) => return Err(err.context("the counter provider never accepted the link")),
        }
    }
    for _ in 0..calls {
        let n =
            trellis_example::counter::counter::increment(&client, Some(headers.clone()), 1).await?;
        println!("counter = {n}");
    }
    for reply in admin::ping_links(
        &nats,
        &subjects,
        Some("counter"),
        Duration::from_millis(300),
    )
    .await?
    {
        for link in reply.links {
            println!(
                "link {} -> {}: {}, {} calls",
                link.link.source_id,
                link.link.target,
                serde_json::to_value(&link.state)?["state"],
                link.calls
            );
        }
    }
    Ok(())
}
