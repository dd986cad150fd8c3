//! The NATS subjects of one wRPC call: the invocation subject, the `.params` / `.results`
//! subjects of the handshake, indexed subjects of nested streams (all *1.x*, as
//! `wrpc-transport-nats` names them) and the Trellis tokens a reply subject may carry to
//! negotiate extensions (see `docs/protocol.md`).

use std::sync::Arc;

/// The wRPC protocol token that appears in every invocation subject (*1.x*).
pub const WRPC_PROTOCOL: &str = "wrpc.0.0.1";

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
    fn invocation_subjects_match_1x() {
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
}
