//! The errors every interface module shares: a call that failed (in the interface or in the
//! transport), and serving that could not start.

/// Why a typed client's call failed: the interface's own error (`E`), or the call itself (no
/// link, nobody serving, a timeout, a malformed answer).
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// The callee answered with the interface's error.
    #[error(transparent)]
    Interface(E),
    /// The call did not complete: the transport's reason.
    #[error("the wRPC call failed: {0:#}")]
    Transport(anyhow::Error),
}

impl<E> CallError<E> {
    /// The same failure with the interface's error converted by `f`.
    pub fn map_interface<F>(self, f: impl FnOnce(E) -> F) -> CallError<F> {
        match self {
            CallError::Interface(e) => CallError::Interface(f(e)),
            CallError::Transport(e) => CallError::Transport(e),
        }
    }

    /// The transport's typed reason, when the call failed in the transport.
    pub fn transport_error(&self) -> Option<&trellis_wrpc_nats::TransportError> {
        match self {
            CallError::Interface(_) => None,
            CallError::Transport(e) => trellis_wrpc_nats::TransportError::find(e),
        }
    }
}

/// Folds what a generated client function answers into a typed call result.
pub(crate) fn fold<T, E>(res: anyhow::Result<Result<T, E>>) -> Result<T, CallError<E>> {
    match res {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(CallError::Interface(e)),
        Err(e) => Err(CallError::Transport(e)),
    }
}

/// Serving an interface could not start (subscribing to its functions failed).
#[derive(Debug, thiserror::Error)]
#[error("cannot serve {interface}: {error:#}")]
pub struct ServeError {
    /// The wire instance (or instances) that was to be served.
    pub interface: &'static str,
    /// What the transport said (part of the message, so not also a `source`).
    pub error: anyhow::Error,
}

/// Splits a typed client's answer the way a caller that treats the two failures differently
/// wants it: `Err` when the call itself failed, `Ok(Err(_))` for the interface's error.
pub trait SplitCall<T, E> {
    /// `Ok(Ok(value))`, `Ok(Err(interface error))` or `Err(transport error)`.
    fn split(self) -> anyhow::Result<Result<T, E>>;
}

impl<T, E> SplitCall<T, E> for Result<T, CallError<E>> {
    fn split(self) -> anyhow::Result<Result<T, E>> {
        match self {
            Ok(v) => Ok(Ok(v)),
            Err(CallError::Interface(e)) => Ok(Err(e)),
            Err(CallError::Transport(e)) => Err(e),
        }
    }
}
