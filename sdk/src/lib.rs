//! The Trellis provider SDK.
#![warn(missing_docs)]
pub mod admin;
pub mod config;
pub mod connect;
pub mod delivery;
pub mod error;
pub mod events;
pub mod host_data;
pub mod link;
pub mod logging;
pub mod nats_jwt;
pub mod provider;
pub mod runtime;
pub mod sealing;
pub mod secret;
pub mod source_proof;
pub mod store;
pub mod subjects;
pub mod task;
