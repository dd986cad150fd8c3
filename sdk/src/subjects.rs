//! Every NATS subject, queue group and bucket name a Trellis lattice uses.
//!
//! This module is the single place where lattice names are turned into wire names, so the
//! provider SDK, the host and the CLI can never disagree about them. Names marked *1.x* are the
//! ones a wasmCloud 1.x host or provider uses and must not change; the rest are Trellis
//! extensions, specified in `docs/protocol.md`.
//!
//! Every function takes already-validated tokens: use [`validate_token`] on anything that came
//! from configuration or the network before building a subject from it.

use async_nats::HeaderName;

use crate::error::InvalidName;

// The wRPC subjects of a call (invocation, handshake, parameters, results, nested streams)
// belong to the transport; they are re-exported here so every subject is found in one place.
pub use trellis_wrpc_nats::subjects::{
    FLOW_RESULTS_TOKEN, FLOW_TOKEN, PARAMS_COMPLETE_TOKEN, WRPC_PROTOCOL, credit, flow_offer,
    indexed, invocation, params, params_complete, results,
};

// Header names are `HeaderName`s made at compile time: reading or setting a header by `&str`
// builds (and allocates) a `HeaderName` each time, and these are used on every call.

/// *1.x*: the invocation header naming the caller (a component or provider id).
pub const SOURCE_ID_HEADER: HeaderName = HeaderName::from_static("source-id");
/// *1.x*: the invocation header naming the link a call goes over (`default` when absent).
pub const LINK_NAME_HEADER: HeaderName = HeaderName::from_static("link-name");
/// *1.x*: the invocation header naming the callee.
pub const TARGET_ID_HEADER: HeaderName = HeaderName::from_static("target-id");
/// Trellis: the invocation header proving the caller speaks for its `source-id` (see
/// [`crate::source_proof`]).
pub const SOURCE_PROOF_HEADER: HeaderName = HeaderName::from_static("trellis-source-proof");
/// The W3C trace-context header a caller's trace travels in (*1.x* hosts propagate it too).
pub const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static("traceparent");

/// Checks that `value` can be used as a single subject token (a lattice name, a component or
/// provider id, a link name).
///
/// A token must be non-empty, at most 256 bytes and must not contain `.`, `*`, `>` or white
/// space: any of those would let a hostile or mistaken value reach other subjects.
pub fn validate_token(kind: &'static str, value: &str) -> Result<(), InvalidName> {
    let reason = if value.is_empty() {
        Some("it is empty")
    } else if value.len() > 256 {
        Some("it is longer than 256 bytes")
    } else if value.contains(['.', '*', '>']) {
        Some("it contains '.', '*' or '>'")
    } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("it contains white space or a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(InvalidName {
            kind,
            value: value.chars().take(64).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks that `value` is a whole NATS subject: tokens separated by `.`, none empty, no white
/// space or control characters, at most 4096 bytes; `*` and `>` only as whole tokens (`>`
/// last), and only when `wildcards` (a subscription's, not a publish's subject).
pub fn validate_subject(
    kind: &'static str,
    value: &str,
    wildcards: bool,
) -> Result<(), InvalidName> {
    let tokens: Vec<&str> = value.split('.').collect();
    let reason =
        if value.is_empty() {
            Some("it is empty")
        } else if value.len() > 4096 {
            Some("it is longer than 4096 bytes")
        } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some("it contains white space or a control character")
        } else if tokens.iter().any(|t| t.is_empty()) {
            Some("it has an empty token (a leading, trailing or doubled '.')")
        } else if !wildcards && tokens.iter().any(|t| *t == "*" || *t == ">") {
            Some("it contains a wildcard ('*' or '>'), which only a subscription may use")
        } else if tokens.iter().enumerate().any(|(i, t)| {
            t.len() > 1 && t.contains(['*', '>']) || (*t == ">" && i + 1 != tokens.len())
        }) {
            Some("'*' and '>' must be whole tokens, '>' the last")
        } else {
            None
        };
    match reason {
        Some(reason) => Err(InvalidName {
            kind,
            value: value.chars().take(64).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Trellis: the inbox prefix of NATS identity `name` (a host, provider or external service
/// id): replies to its requests arrive under it, and on a lattice whose authorization is
/// derived from its links, only it may subscribe there.
pub fn inbox_prefix(name: &str) -> String {
    format!("_INBOX.{name}")
}

/// Subjects of one lattice. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatticeSubjects {
    lattice: String,
}

impl LatticeSubjects {
    /// Subjects for `lattice`, which must be a valid token (see [`validate_token`]).
    pub fn new(lattice: &str) -> Result<Self, InvalidName> {
        validate_token("lattice name", lattice)?;
        Ok(Self {
            lattice: lattice.to_string(),
        })
    }

    /// The lattice name.
    pub fn lattice(&self) -> &str {
        &self.lattice
    }

    fn rpc(&self, id: &str, rest: &str) -> String {
        format!("wasmbus.rpc.{}.{id}.{rest}", self.lattice)
    }

    /// *1.x*: link put sent to one provider instance (`id` is the provider id, or the
    /// instance's xkey public key as a 1.x host addresses it).
    pub fn link_put(&self, id: &str) -> String {
        self.rpc(id, "linkdefs.put")
    }

    /// *1.x*: link delete, sent to the source and the target of the link.
    pub fn link_del(&self, provider_id: &str) -> String {
        self.rpc(provider_id, "linkdefs.del")
    }

    /// *1.x*: health request/reply.
    pub fn health(&self, provider_id: &str) -> String {
        self.rpc(provider_id, "health")
    }

    /// *1.x*: shutdown request (payload names the host).
    pub fn shutdown(&self, provider_id: &str) -> String {
        self.rpc(provider_id, "default.shutdown")
    }

    /// *1.x*: the whole merged provider config.
    pub fn config_update(&self, provider_id: &str) -> String {
        self.rpc(provider_id, "config.update")
    }

    /// Trellis: link ping addressed to every instance of one provider (scatter-gather).
    pub fn link_ping(&self, provider_id: &str) -> String {
        self.rpc(provider_id, "link.ping")
    }

    /// Trellis: link ping addressed to every provider instance in the lattice (scatter-gather).
    pub fn link_ping_all(&self) -> String {
        format!("wasmbus.rpc.{}.link.ping", self.lattice)
    }

    /// Trellis: link purge addressed to every instance of one provider (scatter-gather).
    pub fn link_purge(&self, provider_id: &str) -> String {
        self.rpc(provider_id, "link.purge")
    }

    /// Trellis: a provider's request to the host that started it for a link's secrets,
    /// sealed to the instance (request/reply; see [`crate::sealing`]).
    pub fn link_secrets(&self, host_id: &str) -> String {
        self.rpc(host_id, "link.secrets")
    }

    /// *1.x*: host ping on the control interface, answered by every host of the lattice
    /// (scatter-gather). Trellis hosts answer with their whole inventory.
    pub fn host_ping(&self) -> String {
        format!("wasmbus.ctl.v1.{}.host.ping", self.lattice)
    }

    /// *1.x*: inventory request to one host.
    pub fn host_inventory(&self, host_id: &str) -> String {
        format!("wasmbus.ctl.v1.{}.host.get.{host_id}", self.lattice)
    }

    /// *1.x*: where lattice events of type `event` are published (CloudEvents).
    pub fn event(&self, event: &str) -> String {
        format!("wasmbus.evt.{}.{event}", self.lattice)
    }

    /// *1.x*: the prefix under which `target_id` serves its wRPC exports.
    pub fn wrpc_prefix(&self, target_id: &str) -> String {
        format!("{}.{target_id}", self.lattice)
    }

    /// *1.x*: the queue group every instance of `target_id` joins, so instances on several
    /// hosts share the load.
    pub fn wrpc_queue_group(&self, target_id: &str) -> String {
        format!("{}.{target_id}", self.lattice)
    }

    /// *1.x*: JetStream KV bucket holding component specifications, with their links.
    pub fn lattice_data_bucket(&self) -> String {
        format!("LATTICEDATA_{}", self.lattice)
    }

    /// *1.x*: JetStream KV bucket holding named configuration.
    pub fn config_data_bucket(&self) -> String {
        format!("CONFIGDATA_{}", self.lattice)
    }

    /// Trellis: JetStream KV bucket holding the lattice's secrets, each sealed to the secret
    /// store's xkey (values never in the clear).
    pub fn secret_data_bucket(&self) -> String {
        format!("SECRETDATA_{}", self.lattice)
    }
}

/// *1.x*: the key prefix of component specifications in the lattice data bucket.
pub const COMPONENT_KEY_PREFIX: &str = "COMPONENT_";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_1x() {
        let s = LatticeSubjects::new("default").unwrap();
        assert_eq!(s.link_put("VABC"), "wasmbus.rpc.default.VABC.linkdefs.put");
        assert_eq!(s.shutdown("p1"), "wasmbus.rpc.default.p1.default.shutdown");
        assert_eq!(
            s.event("linkdef_set_failed"),
            "wasmbus.evt.default.linkdef_set_failed"
        );
        assert_eq!(s.wrpc_prefix("comp"), "default.comp");
    }

    #[test]
    fn hostile_tokens_are_rejected() {
        for bad in ["", "a.b", "a*", ">", "a b", "a\nb"] {
            assert!(validate_token("id", bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_token("id", &"x".repeat(257)).is_err());
        assert!(LatticeSubjects::new("a.b").is_err());
        assert!(
            validate_token(
                "id",
                "MBCFOPM6JW2APJLXJD3Z5O4CN7CPYJ2B4FTKLJUR5YR5MITIU7HD3WD5"
            )
            .is_ok()
        );
    }

    #[test]
    fn whole_subjects_are_checked() {
        for ok in ["a", "a.b", "orders.eu-1", "_INBOX.x"] {
            assert!(validate_subject("subject", ok, false).is_ok(), "{ok}");
        }
        for ok in ["a.*", "a.>", "*.b", ">"] {
            assert!(validate_subject("subject", ok, true).is_ok(), "{ok}");
            assert!(validate_subject("subject", ok, false).is_err(), "{ok}");
        }
        for bad in ["", "a b", "a..b", ".a", "a.", "a.>.b", "a*", "a.b>", "a\tb"] {
            assert!(validate_subject("subject", bad, true).is_err(), "{bad:?}");
        }
    }
}
