//! The Trellis provider SDK.
pub mod error;
pub mod subjects;
pub mod transport;
