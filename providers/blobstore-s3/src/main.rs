//! The blobstore-s3 capability provider. **Not implemented yet**.
//!
//! It exits with an error rather than pretend to serve anything.

fn main() -> std::process::ExitCode {
    eprintln!("blobstore-s3 is not implemented yet");
    std::process::ExitCode::from(2)
}
