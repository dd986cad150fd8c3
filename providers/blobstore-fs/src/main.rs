//! The blobstore-fs capability provider. **Not implemented yet** (issue: not filed yet).
//!
//! It exits with an error rather than pretend to serve anything.

fn main() -> std::process::ExitCode {
    eprintln!("trellis-provider-blobstore-fs is not implemented yet (issue: not filed yet)");
    std::process::ExitCode::from(2)
}
