//! Typed errors of the SDK.
//!
//! Each concern has its own error type so a caller can match on what went wrong; all of them
//! implement `std::error::Error` and carry a message that names the offending thing without
//! ever including a secret.

/// A name that cannot be used as a subject token (lattice, component id, link name, …) or
/// a subject.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct InvalidName {
    /// What the name was for.
    pub kind: &'static str,
    /// The (truncated) value.
    pub value: String,
    /// Why it was rejected.
    pub reason: &'static str,
}

pub use trellis_wrpc_nats::TransportError;
