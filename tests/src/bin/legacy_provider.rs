//! `legacy-provider`: a provider speaking only the wasmCloud 1.x protocol, written without
//! the Trellis SDK, for tests of how Trellis treats the 1.x provider binaries its users
//! bring. It reads 1.x host data on stdin, answers `health` and `linkdefs.put`/`del` (and
//! nothing of Trellis's own: no link ping), and on `default.shutdown` answers
//! `shutting down` and exits. It opens the link secrets sealed in its host data with the
//! 1.x xkeys (nkeys directly, as a 1.x provider does) and says which keys it got — never
//! the values.

use std::io::BufRead as _;

use base64::Engine as _;
use futures::StreamExt as _;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let json = base64::engine::general_purpose::STANDARD.decode(line.trim())?;
    let host_data: serde_json::Value = serde_json::from_slice(&json)?;
    let field = |name: &str| {
        host_data[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("host data has no {name}"))
    };
    let (lattice, provider, url) = (
        field("lattice_rpc_prefix")?,
        field("provider_key")?,
        field("lattice_rpc_url")?,
    );
    open_secrets(&host_data)?;
    // As a 1.x provider joins: with the host data's JWT and seed when it has them.
    let jwt = host_data["lattice_rpc_user_jwt"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let seed = host_data["lattice_rpc_user_seed"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let options = if jwt.is_empty() && seed.is_empty() {
        async_nats::ConnectOptions::new()
    } else {
        let key = std::sync::Arc::new(nkeys::KeyPair::from_seed(&seed)?);
        async_nats::ConnectOptions::with_jwt(jwt, move |nonce| {
            let key = std::sync::Arc::clone(&key);
            async move { key.sign(&nonce).map_err(async_nats::AuthError::new) }
        })
    };
    let nats = options.connect(&url).await?;
    let prefix = format!("wasmbus.rpc.{lattice}.{provider}");
    let mut subs = futures::stream::select_all([
        nats.subscribe(format!("{prefix}.health")).await?,
        nats.subscribe(format!("{prefix}.linkdefs.put")).await?,
        nats.subscribe(format!("{prefix}.linkdefs.del")).await?,
        nats.subscribe(format!("{prefix}.default.shutdown")).await?,
    ]);
    eprintln!("legacy-provider {provider} on lattice {lattice}");
    while let Some(msg) = subs.next().await {
        let Some(reply) = msg.reply.clone() else {
            continue;
        };
        let answer: &[u8] = if msg.subject.ends_with(".health") {
            br#"{"healthy":true,"message":"legacy ok"}"#
        } else if msg.subject.ends_with(".shutdown") {
            nats.publish(reply, "shutting down".into()).await?;
            nats.flush().await?;
            return Ok(());
        } else {
            br#"{"success":true}"#
        };
        nats.publish(reply, answer.to_vec().into()).await?;
    }
    Ok(())
}

/// Opens every sealed `source_secrets`/`target_secrets` of the host data's links with the
/// instance's xkey and the host's public xkey; prints the names it found.
fn open_secrets(host_data: &serde_json::Value) -> anyhow::Result<()> {
    let seed = host_data["provider_xkey_private_key"]
        .as_str()
        .unwrap_or("");
    let host = host_data["host_xkey_public_key"].as_str().unwrap_or("");
    if seed.is_empty() || host.is_empty() {
        return Ok(());
    }
    let me = nkeys::XKey::from_seed(seed)?;
    let host = nkeys::XKey::from_public_key(host)?;
    let links = host_data["link_definitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for link in links {
        for side in ["source_secrets", "target_secrets"] {
            let Some(sealed) = link[side].as_array() else {
                continue;
            };
            let bytes: Vec<u8> = sealed
                .iter()
                .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            let plain = me.open(&bytes, &host)?;
            let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&plain)?;
            let names: Vec<&str> = map.keys().map(String::as_str).collect();
            eprintln!(
                "legacy-provider opened the {side} of link {}: {}",
                link["name"].as_str().unwrap_or("?"),
                names.join(", ")
            );
        }
    }
    Ok(())
}
