//! The keyvalue-nats capability provider. **Not implemented yet** (issue: 4).
//!
//! It exits with an error rather than pretend to serve anything.

fn main() -> std::process::ExitCode {
    eprintln!("trellis-provider-keyvalue-nats is not implemented yet (issue: 4)");
    std::process::ExitCode::from(2)
}
