//! The http-server capability provider. **Not implemented yet** (issue: 5).
//!
//! It exits with an error rather than pretend to serve anything.

fn main() -> std::process::ExitCode {
    eprintln!("trellis-provider-http-server is not implemented yet (issue: 5)");
    std::process::ExitCode::from(2)
}
