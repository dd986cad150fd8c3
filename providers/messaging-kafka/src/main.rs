//! The messaging-kafka capability provider. **Not implemented yet**.
//!
//! It exits with an error rather than pretend to serve anything.

fn main() -> std::process::ExitCode {
    eprintln!("messaging-kafka is not implemented yet");
    std::process::ExitCode::from(2)
}
