//! Why a call failed at the transport level, as a typed error that survives the `std::io`
//! streams of `wrpc-transport`.

use std::time::Duration;

/// Why one wRPC call failed at the transport level.
///
/// These travel inside `std::io::Error` (the byte streams of `wrpc-transport` speak
/// `std::io`); use [`TransportError::from_io`] or `anyhow::Error::downcast_ref` to get them back.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TransportError {
    /// Nobody serves the invoked function: NATS answered "no responders".
    #[error(
        "no responders on {subject}: nothing serves this function (is the target running and linked?)"
    )]
    NoResponders {
        /// The invocation subject.
        subject: String,
    },
    /// The peer sent nothing for longer than the call's timeout.
    #[error("timed out after {timeout:?} waiting for {what}")]
    TimedOut {
        /// What we were waiting for.
        what: &'static str,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// The peer sent more unread data than the per-call buffer allows.
    #[error("peer sent more than {limit} unread bytes on one call; the call was aborted")]
    BufferOverflow {
        /// The per-call limit in bytes.
        limit: usize,
    },
    /// The peer refused the call with a NATS status.
    #[error("peer answered with status {code}: {description}")]
    Status {
        /// NATS status code.
        code: u16,
        /// Status description sent by the server.
        description: String,
    },
    /// The server refused the call (for example: no active link from the caller, the link
    /// was purged, the provider is shutting down).
    #[error("call refused: {0}")]
    Refused(String),
    /// The server accepted the call but failed it (a trap, a limit, a cancelled handler).
    #[error("call failed on the server: {0}")]
    Failed(String),
    /// The handshake reply had no reply subject, so parameters cannot be sent.
    #[error("peer did not specify a reply subject")]
    NoReplySubject,
    /// The NATS connection is gone.
    #[error("the NATS connection is closed: {0}")]
    Disconnected(String),
    /// A value does not fit into one NATS message and cannot be split (headers too large).
    #[error("{0}")]
    Protocol(String),
    /// A call's parameters do not have the shape of the function's parameter types (see
    /// [`crate::wire_shape`]); the call was dropped before anything decoded them.
    #[error("malformed parameters: {0}")]
    MalformedParams(crate::wire_shape::ShapeError),
}

impl TransportError {
    /// Wraps the error into the `std::io::Error` the byte streams return.
    pub fn into_io(self) -> std::io::Error {
        let kind = match &self {
            TransportError::NoResponders { .. } => std::io::ErrorKind::NotConnected,
            TransportError::TimedOut { .. } => std::io::ErrorKind::TimedOut,
            TransportError::BufferOverflow { .. } => std::io::ErrorKind::OutOfMemory,
            TransportError::Failed(_) => std::io::ErrorKind::Other,
            TransportError::Status { .. } | TransportError::Refused(_) => {
                std::io::ErrorKind::ConnectionRefused
            }
            TransportError::NoReplySubject
            | TransportError::Protocol(_)
            | TransportError::MalformedParams(_) => std::io::ErrorKind::InvalidData,
            TransportError::Disconnected(_) => std::io::ErrorKind::BrokenPipe,
        };
        std::io::Error::new(kind, self)
    }

    /// Finds a transport error in an `std::io::Error`, if there is one.
    pub fn from_io(err: &std::io::Error) -> Option<&TransportError> {
        err.get_ref()
            .and_then(|e| e.downcast_ref::<TransportError>())
    }

    /// Finds a transport error anywhere in an `anyhow` error chain.
    pub fn find(err: &anyhow::Error) -> Option<&TransportError> {
        err.chain().find_map(|e| {
            e.downcast_ref::<TransportError>().or_else(|| {
                e.downcast_ref::<std::io::Error>()
                    .and_then(TransportError::from_io)
            })
        })
    }
}

impl From<TransportError> for std::io::Error {
    fn from(err: TransportError) -> Self {
        err.into_io()
    }
}
