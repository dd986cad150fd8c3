//! The running `trellis up`, as other `trellis` commands see it.
//!
//! `up` takes an exclusive lock on `{home}/up.lock` for its whole life (an OS file lock: it
//! is released when the process ends, however it ends, so a crash never leaves a stale
//! lock) and writes where its lattice is to `{home}/up.json`. A second `up` fails on the
//! lock and says which one runs; `link`, `config` and `inventory` read the state file to
//! find the lattice when no NATS URL was given.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a running `up` publishes about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The `up` process.
    pub pid: u32,
    /// The app it runs.
    pub app: String,
    /// Its lattice.
    pub lattice: String,
    /// Its NATS URL.
    pub nats_url: String,
    /// The HTTP addresses it serves, if any.
    #[serde(default)]
    pub urls: Vec<String>,
    /// The credentials of its lattice's admin identity, when the NATS it started admits
    /// only the identities its authorization issued (readable by the user only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_creds: Option<std::path::PathBuf>,
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Another `up` holds the lock.
    #[error(
        "another `trellis up` is running{}; stop it (Ctrl-C in its terminal, or `trellis down`) first",
        .0.as_ref().map(|s| format!(" (pid {}, app {:?}, lattice {:?} on {})", s.pid, s.app, s.lattice, s.nats_url)).unwrap_or_default()
    )]
    Busy(Option<Box<State>>),
    /// The state directory is unusable.
    #[error("cannot use {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Trellis's own directory: `$TRELLIS_HOME`, else `~/.cache/trellis`.
pub fn home() -> PathBuf {
    if let Some(dir) = std::env::var_os("TRELLIS_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let user = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    user.join(".cache").join("trellis")
}

fn state_path(home: &Path) -> PathBuf {
    home.join("up.json")
}

/// The state of the running `up`, if one runs.
pub fn running(home: &Path) -> Option<State> {
    let text = std::fs::read(state_path(home)).ok()?;
    let state: State = serde_json::from_slice(&text).ok()?;
    // The file outlives a crashed `up`; the lock does not.
    let lock = File::open(home.join("up.lock")).ok()?;
    match lock.try_lock() {
        Ok(()) => None,
        Err(_) => Some(state),
    }
}

/// The lock of a running `up`; dropping it removes the state file and releases the lock.
#[derive(Debug)]
pub struct Session {
    home: PathBuf,
    _lock: File,
}

impl Session {
    /// Takes the lock, or says which `up` holds it.
    pub fn acquire(home: &Path) -> Result<Self, SessionError> {
        let io = |path: PathBuf| move |source| SessionError::Io { path, source };
        std::fs::create_dir_all(home).map_err(io(home.to_path_buf()))?;
        let path = home.join("up.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(path.clone()))?;
        match lock.try_lock() {
            Ok(()) => Ok(Self {
                home: home.to_path_buf(),
                _lock: lock,
            }),
            Err(std::fs::TryLockError::WouldBlock) => Err(SessionError::Busy(
                std::fs::read(state_path(home))
                    .ok()
                    .and_then(|t| serde_json::from_slice(&t).ok())
                    .map(Box::new),
            )),
            Err(std::fs::TryLockError::Error(source)) => Err(SessionError::Io { path, source }),
        }
    }

    /// Publishes `state` (atomically: readers never see half a file).
    pub fn publish(&self, state: &State) -> Result<(), SessionError> {
        let path = state_path(&self.home);
        let tmp = path.with_extension("json.tmp");
        let io = |source| SessionError::Io {
            path: path.clone(),
            source,
        };
        let mut file = File::create(&tmp).map_err(io)?;
        let text = serde_json::to_vec_pretty(state).map_err(|e| io(std::io::Error::other(e)))?;
        file.write_all(&text).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(state_path(&self.home));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_session_is_refused_and_names_the_first() {
        let home = std::env::temp_dir().join(format!("trellis-session-{}", std::process::id()));
        let first = Session::acquire(&home).expect("first");
        let state = State {
            pid: 42,
            app: "demo".into(),
            lattice: "default".into(),
            nats_url: "nats://127.0.0.1:4222".into(),
            urls: vec![],
            nats_creds: None,
        };
        first.publish(&state).expect("publish");
        assert_eq!(running(&home), Some(state));
        let err = Session::acquire(&home).expect_err("busy").to_string();
        assert!(err.contains("pid 42") && err.contains("\"demo\""), "{err}");
        drop(first);
        assert_eq!(running(&home), None);
        Session::acquire(&home).expect("free again");
        let _ = std::fs::remove_dir_all(&home);
    }
}
