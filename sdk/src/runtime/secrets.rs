//! Link secrets for pulled links: a link from the lattice store names its secrets only by
//! reference, so the provider asks the host that started it to seal them for this instance.
//!
//! Only that host can: it holds the secret store's key, checks the store's policy (may this
//! provider read this secret?) and seals the answer to the xkey it gave this instance in its
//! host data, so an answer overheard on NATS opens for no one else. An unchanged link keeps
//! the secrets it was sealed last, so following the store does not ask again on every change.

use std::time::Duration;

use super::Inner;
use crate::link::{LinkDefinition, LinkSecrets, LinkState};
use crate::sealing::{LinkSecretsReply, LinkSecretsRequest};

/// Fills in the sealed secrets of the provider's side of `link`, or says why it cannot.
pub(crate) async fn seal_in(inner: &Inner, link: &mut LinkDefinition) -> Result<(), String> {
    let is_target = link.target == inner.config.provider_id;
    if let Some(known) = unchanged_secrets(inner, link, is_target) {
        *side(link, is_target) = Some(known);
        return Ok(());
    }
    let Some(host) = inner.config.host_id.as_deref() else {
        return Err(
            "the link names secrets, but this provider runs standalone: only the host \
                    that starts a provider can seal secrets for it"
                .into(),
        );
    };
    if inner.config.secret_keys.is_none() {
        return Err(format!(
            "the link names secrets, but host {host} gave this provider no xkey to open them"
        ));
    }
    let request = LinkSecretsRequest {
        provider_id: inner.config.provider_id.clone(),
        link: link.key(),
    };
    let body = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
    let subject = inner.subjects.link_secrets(host);
    let timeout = inner.config.rpc_timeout.max(Duration::from_secs(1));
    let answer = tokio::time::timeout(timeout, inner.nats.request(subject, body.into()))
        .await
        .map_err(|_| {
            format!("host {host} did not answer for the link's secrets within {timeout:?}")
        })?
        .map_err(|e| format!("cannot ask host {host} for the link's secrets: {e}"))?;
    let reply: LinkSecretsReply = serde_json::from_slice(&answer.payload)
        .map_err(|e| format!("host {host} answered for the link's secrets with {e}"))?;
    match (reply.sealed, reply.error) {
        (_, Some(error)) => Err(format!("host {host} refused the link's secrets: {error}")),
        (Some(sealed), None) => {
            *side(link, is_target) = Some(LinkSecrets::from_sealed(&sealed));
            Ok(())
        }
        (None, None) => Err(format!(
            "host {host} answered for the link's secrets with nothing"
        )),
    }
}

fn side(link: &mut LinkDefinition, is_target: bool) -> &mut Option<LinkSecrets> {
    if is_target {
        &mut link.target_secrets
    } else {
        &mut link.source_secrets
    }
}

/// The sealed secrets of the same link as set up already, when nothing else changed.
fn unchanged_secrets(inner: &Inner, link: &LinkDefinition, is_target: bool) -> Option<LinkSecrets> {
    let definition = {
        let table = inner.table();
        let entry = table.get(&link.key())?;
        if entry.state != LinkState::Active {
            return None;
        }
        std::sync::Arc::clone(&entry.definition)
    };
    let mut known = (*definition).clone();
    let secrets = side(&mut known, is_target).take()?;
    let mut plain = link.clone();
    plain.source_secrets = None;
    plain.target_secrets = None;
    known.source_secrets = None;
    known.target_secrets = None;
    (known == plain).then_some(secrets)
}
