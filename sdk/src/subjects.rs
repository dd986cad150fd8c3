//! Every NATS subject, queue group and bucket name a Trellis lattice uses.
//!
//! This module is the single place where lattice names are turned into wire names, so the
//! provider SDK, the host and the CLI can never disagree about them. Names marked *1.x* are the
//! ones a wasmCloud 1.x host or provider uses and must not change; the rest are Trellis
//! extensions, specified in `docs/protocol.md`.
//!
//! Every function takes already-validated tokens: use [`validate_token`] on anything that came
//! from configuration or the network before building a subject from it.

use std::sync::Arc;

use async_nats::HeaderName;

use crate::error::InvalidName;

/// The wRPC protocol token that appears in every invocation subject (*1.x*).
pub const WRPC_PROTOCOL: &str = "wrpc.0.0.1";

// Header names are `HeaderName`s made at compile time: reading or setting a header by `&str`
// builds (and allocates) a `HeaderName` each time, and these are used on every call.

/// *1.x*: the invocation header naming the caller (a component or provider id).
pub const SOURCE_ID_HEADER: HeaderName = HeaderName::from_static("source-id");
/// *1.x*: the invocation header naming the link a call goes over (`default` when absent).
pub const LINK_NAME_HEADER: HeaderName = HeaderName::from_static("link-name");
/// *1.x*: the invocation header naming the callee.
pub const TARGET_ID_HEADER: HeaderName = HeaderName::from_static("target-id");
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
}

/// *1.x*: the key prefix of component specifications in the lattice data bucket.
pub const COMPONENT_KEY_PREFIX: &str = "COMPONENT_";

/// *1.x*: the invocation subject for `func` of `instance` under `prefix`
/// (`{prefix}.wrpc.0.0.1.{instance}.{func}`).
pub fn invocation(prefix: &str, instance: &str, func: &str) -> String {
    let mut s =
        String::with_capacity(prefix.len() + WRPC_PROTOCOL.len() + instance.len() + func.len() + 3);
    if !prefix.is_empty() {
        s.push_str(prefix);
        s.push('.');
    }
    s.push_str(WRPC_PROTOCOL);
    s.push('.');
    if !instance.is_empty() {
        s.push_str(instance);
        s.push('.');
    }
    s.push_str(func);
    s
}

/// Trellis: the last token of a client's reply subject when the invocation message carries
/// all synchronous parameters. A Trellis server serving a function without async parameters
/// then needs nothing more from the client and skips the handshake, so a call costs two
/// messages, like plain request/reply. 1.x clients never end a reply subject with it (theirs
/// end in a NUID, which has no `-`), and 1.x servers treat the reply subject as opaque.
pub const PARAMS_COMPLETE_TOKEN: &str = "p-complete";

/// Trellis: a token of a client's reply subject (before any `p-complete`) offering flow
/// control for the call; [`FLOW_RESULTS_TOKEN`] when its results stream, asking for the
/// handshake. A token, not a header, for the same reason as `p-complete`.
pub const FLOW_TOKEN: &str = "t-flow";
/// See [`FLOW_TOKEN`].
pub const FLOW_RESULTS_TOKEN: &str = "t-flow-r";

/// Whether reply subject `reply` offers flow control: `Some(true)` when its results stream.
pub fn flow_offer(reply: &str) -> Option<bool> {
    reply.rsplit('.').take(2).find_map(|t| match t {
        FLOW_TOKEN => Some(false),
        FLOW_RESULTS_TOKEN => Some(true),
        _ => None,
    })
}

/// Whether reply subject `reply` says all synchronous parameters came in the first message.
pub fn params_complete(reply: &str) -> bool {
    reply
        .rsplit('.')
        .next()
        .is_some_and(|last| last == PARAMS_COMPLETE_TOKEN)
}

/// *1.x*: the subject on which a wRPC server receives the parameters of one call, after the
/// handshake (`{rx}.params`).
pub fn params(rx: &str) -> String {
    suffixed(rx, ".params")
}

/// *1.x*: the subject on which a wRPC client receives the results of one call
/// (`{rx}.results`).
pub fn results(rx: &str) -> String {
    suffixed(rx, ".results")
}

/// Trellis: where the peer of a call grants credit for what the holder of `rx` sends
/// (`{rx}.credit`; see the transport's flow control).
pub fn credit(rx: &str) -> String {
    suffixed(rx, ".credit")
}

/// [`params`] as a shared string, in one allocation (the transport keys its routes with it).
pub(crate) fn params_shared(rx: &str) -> Arc<str> {
    suffixed_shared(rx, ".params")
}

/// [`results`] as a shared string, in one allocation (the transport keys its routes with it).
pub(crate) fn results_shared(rx: &str) -> Arc<str> {
    suffixed_shared(rx, ".results")
}

/// `rx` followed by `suffix` as a shared string, in one allocation (through a `String` it
/// would be two).
fn suffixed_shared(rx: &str, suffix: &str) -> Arc<str> {
    let n = rx.len() + suffix.len();
    let mut buf = [0u8; 256];
    if let Some(dst) = buf.get_mut(..n) {
        let (head, tail) = dst.split_at_mut(rx.len());
        head.copy_from_slice(rx.as_bytes());
        tail.copy_from_slice(suffix.as_bytes());
        // Two strings end to end are UTF-8; the check only avoids `unsafe`.
        if let Ok(s) = std::str::from_utf8(dst) {
            return Arc::from(s);
        }
    }
    Arc::from(suffixed(rx, suffix))
}

/// `rx` followed by `suffix`, in one allocation (these are made for every call).
fn suffixed(rx: &str, suffix: &str) -> String {
    let mut s = String::with_capacity(rx.len() + suffix.len());
    s.push_str(rx);
    s.push_str(suffix);
    s
}

/// *1.x*: the subject of a nested (async) value at `path` below `base`
/// (`{base}.{i}.{j}…`); `None` is a wildcard (`*`) used when subscribing.
pub fn indexed(base: &str, path: &[Option<usize>]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(base.len() + path.len() * 3);
    s.push_str(base);
    for p in path {
        match p {
            // Writing to a String cannot fail.
            Some(i) => {
                let _ = write!(s, ".{i}");
            }
            None => s.push_str(".*"),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_subjects_match_the_owned_ones() {
        // Short subjects are built on the stack, long ones through a `String`.
        for rx in ["_INBOX.abc.x1", &format!("_INBOX.{}", "é".repeat(200))] {
            assert_eq!(&*results_shared(rx), results(rx));
            assert_eq!(&*params_shared(rx), params(rx));
        }
    }

    #[test]
    fn flow_offers_are_read_from_reply_subjects() {
        assert_eq!(flow_offer("_INBOX.a.b.t-flow"), Some(false));
        assert_eq!(flow_offer("_INBOX.a.b.t-flow-r.p-complete"), Some(true));
        assert_eq!(flow_offer("_INBOX.a.b.p-complete"), None);
        assert_eq!(flow_offer("_INBOX.abcdefghijklmnopqrstuv"), None);
        assert!(params_complete("_INBOX.a.t-flow.p-complete"));
    }

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
        assert_eq!(
            invocation("default.comp", "wrpc:keyvalue/store@0.2.0-draft", "get"),
            "default.comp.wrpc.0.0.1.wrpc:keyvalue/store@0.2.0-draft.get"
        );
        assert_eq!(invocation("", "", "f"), "wrpc.0.0.1.f");
        assert_eq!(
            indexed("x.results", &[Some(0), None, Some(12)]),
            "x.results.0.*.12"
        );
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
}
