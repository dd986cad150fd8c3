//! A root directory and everything done under it.
//!
//! The root is opened once as a directory handle (`cap_std::fs::Dir`); every container and
//! object is then reached relative to that handle. `cap-std` resolves each path component
//! itself and refuses any that leads outside the handle — `..` past the root, an absolute
//! path, a symlink pointing out, also one swapped in while a call runs — so what is checked
//! is what is used. Names are checked first as well ([`container_name`], [`object_name`]):
//! no empty names, no `.` or `..` segments, no NUL, nothing that names the root itself.
//!
//! Writes go to a temporary file beside the object and are renamed over it once whole, so a
//! reader sees the old object or the new one, never half of one; an upload that fails is
//! deleted. The operations are blocking file system calls, run on tokio's blocking pool.

use std::io::{Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use cap_std::fs::Dir;
use futures::StreamExt as _;
use trellis_interfaces::blobstore::{ByteStream, ContainerInfo, Done, ObjectInfo, Upload};

/// Temporary files of uploads in progress start with this; names that do are refused.
const TEMP_PREFIX: &str = ".trellis-upload-";
/// The largest piece of an object read at once.
const PIECE: usize = 256 << 10;
/// Names per chunk of a listing.
const NAMES_PER_CHUNK: usize = 1000;

/// Why an operation failed, as the component reads it (the interface's errors are strings).
pub type Error = String;

/// A container name: one path segment, not `.`/`..`, no NUL, not an upload's temporary name.
pub fn container_name(name: &str) -> Result<&str, Error> {
    segment(name).map_err(|why| format!("invalid container name {name:?}: {why}"))?;
    Ok(name)
}

/// An object name: segments separated by `/` (parents are created), each a valid segment.
pub fn object_name(name: &str) -> Result<&str, Error> {
    let bad = |why: &str| format!("invalid object name {name:?}: {why}");
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.starts_with('/') {
        return Err(bad("absolute"));
    }
    for part in name.split('/') {
        segment(part).map_err(&bad)?;
    }
    Ok(name)
}

/// One path segment.
fn segment(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("an empty name or path segment");
    }
    if s == "." || s == ".." {
        return Err("`.` and `..` are not names");
    }
    if s.contains('\0') {
        return Err("contains NUL");
    }
    if s.contains('/') || s.contains('\\') {
        return Err("contains a path separator");
    }
    if s.starts_with(TEMP_PREFIX) {
        return Err("reserved for uploads in progress");
    }
    if s.len() > 255 {
        return Err("longer than 255 bytes");
    }
    Ok(())
}

/// Seconds since the epoch of `meta`'s creation (its modification where the file system
/// keeps no creation time).
fn created(meta: &cap_std::fs::Metadata) -> u64 {
    let at = meta
        .created()
        .or_else(|_| meta.modified())
        .map(|t| t.into_std())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What an I/O error means for a named thing.
fn io(what: &str, err: std::io::Error) -> Error {
    match err.kind() {
        std::io::ErrorKind::NotFound => format!("{what} does not exist"),
        std::io::ErrorKind::PermissionDenied => format!("{what}: not allowed ({err})"),
        _ => format!("{what}: {err}"),
    }
}

/// A link's root.
#[derive(Clone, Debug)]
pub struct Root {
    dir: Arc<Dir>,
    path: PathBuf,
}

/// Runs `op` on the blocking pool.
async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(op)
        .await
        .unwrap_or_else(|e| Err(format!("the file system task failed: {e}")))
}

impl Root {
    /// Opens (creating it if needed) the directory at `path`.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(path)?;
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority())?;
        Ok(Self {
            dir: Arc::new(dir),
            path: path.to_path_buf(),
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Container `name`'s directory handle.
    fn container(&self, name: &str) -> Result<Dir, Error> {
        let name = container_name(name)?;
        self.dir
            .open_dir(name)
            .map_err(|e| io(&format!("container {name}"), e))
    }

    pub async fn create_container(&self, name: String) -> Result<(), Error> {
        let root = self.clone();
        blocking(move || {
            let name = container_name(&name)?;
            match root.dir.create_dir(name) {
                Ok(()) => Ok(()),
                // Already there (as a directory): nothing to do, as in 1.x.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    root.container(name).map(drop)
                }
                Err(e) => Err(io(&format!("container {name}"), e)),
            }
        })
        .await
    }

    pub async fn container_exists(&self, name: String) -> Result<bool, Error> {
        let root = self.clone();
        blocking(move || {
            let name = container_name(&name)?;
            match root.dir.open_dir(name) {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(io(&format!("container {name}"), e)),
            }
        })
        .await
    }

    pub async fn delete_container(&self, name: String) -> Result<(), Error> {
        let root = self.clone();
        blocking(move || {
            let name = container_name(&name)?;
            root.dir
                .remove_dir_all(name)
                .map_err(|e| io(&format!("container {name}"), e))
        })
        .await
    }

    pub async fn clear_container(&self, name: String) -> Result<(), Error> {
        let root = self.clone();
        blocking(move || {
            let dir = root.container(&name)?;
            let entries = dir.entries().map_err(|e| io(&name, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| io(&name, e))?;
                let file_name = entry.file_name();
                let is_dir = entry.file_type().map_err(|e| io(&name, e))?.is_dir();
                let removed = if is_dir {
                    dir.remove_dir_all(&file_name)
                } else {
                    dir.remove_file(&file_name)
                };
                removed.map_err(|e| io(&format!("{name}/{file_name:?}"), e))?;
            }
            Ok(())
        })
        .await
    }

    pub async fn container_info(&self, name: String) -> Result<ContainerInfo, Error> {
        let root = self.clone();
        blocking(move || {
            let name = container_name(&name)?;
            let meta = root
                .dir
                .metadata(name)
                .map_err(|e| io(&format!("container {name}"), e))?;
            if !meta.is_dir() {
                return Err(format!("container {name} does not exist"));
            }
            Ok(ContainerInfo {
                created_at: created(&meta),
            })
        })
        .await
    }

    /// Every object name of container `name`, sorted (so pages are stable), from `offset`,
    /// at most `limit`; in chunks.
    pub async fn list(
        &self,
        name: String,
        limit: Option<u64>,
        offset: Option<u64>,
    ) -> Result<Vec<Vec<String>>, Error> {
        let root = self.clone();
        blocking(move || {
            let dir = root.container(&name)?;
            let mut names = Vec::new();
            walk(&dir, "", &mut names).map_err(|e| io(&format!("container {name}"), e))?;
            names.sort();
            let skip = usize::try_from(offset.unwrap_or(0)).unwrap_or(usize::MAX);
            let take = limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
            let page: Vec<String> = names.into_iter().skip(skip).take(take).collect();
            Ok(page
                .chunks(NAMES_PER_CHUNK)
                .map(<[String]>::to_vec)
                .collect())
        })
        .await
    }

    pub async fn object_info(
        &self,
        container: String,
        object: String,
    ) -> Result<ObjectInfo, Error> {
        let root = self.clone();
        blocking(move || {
            let dir = root.container(&container)?;
            let object = object_name(&object)?;
            let meta = dir
                .metadata(object)
                .map_err(|e| io(&format!("object {container}/{object}"), e))?;
            if !meta.is_file() {
                return Err(format!("object {container}/{object} does not exist"));
            }
            Ok(ObjectInfo {
                created_at: created(&meta),
                size: meta.len(),
            })
        })
        .await
    }

    pub async fn has_object(&self, container: String, object: String) -> Result<bool, Error> {
        let root = self.clone();
        blocking(move || {
            let dir = root.container(&container)?;
            let object = object_name(&object)?;
            match dir.metadata(object) {
                Ok(meta) => Ok(meta.is_file()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(io(&format!("object {container}/{object}"), e)),
            }
        })
        .await
    }

    /// Deletes an object; deleting an absent one succeeds.
    pub async fn delete_object(&self, container: String, object: String) -> Result<(), Error> {
        let root = self.clone();
        blocking(move || {
            let dir = root.container(&container)?;
            let object = object_name(&object)?;
            match dir.remove_file(object) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io(&format!("object {container}/{object}"), e)),
            }
        })
        .await
    }

    /// Copies (`keep`) or moves an object, across containers too; atomic at the destination.
    pub async fn transfer(
        &self,
        src: (String, String),
        dest: (String, String),
        keep: bool,
    ) -> Result<(), Error> {
        let root = self.clone();
        blocking(move || {
            let (src_dir, dest_dir) = (root.container(&src.0)?, root.container(&dest.0)?);
            let (src_name, dest_name) = (object_name(&src.1)?, object_name(&dest.1)?);
            let what = format!("object {}/{src_name}", src.0);
            let dest_parent = parent_of(&dest_dir, dest_name)?;
            if keep {
                let mut from = src_dir.open(src_name).map_err(|e| io(&what, e))?;
                let (temp, mut to) = temp_file(&dest_parent)?;
                let copied = std::io::copy(&mut from, &mut to).and_then(|_| to.sync_all());
                finish(&dest_parent, &temp, leaf(dest_name), copied)
            } else {
                src_dir
                    .metadata(src_name)
                    .map_err(|e| io(&what, e))
                    .and_then(|m| {
                        m.is_file()
                            .then_some(())
                            .ok_or(format!("{what} does not exist"))
                    })?;
                src_dir
                    .rename(src_name, &dest_parent, leaf(dest_name))
                    .map_err(|e| io(&what, e))
            }
        })
        .await
    }

    /// Bytes `start..=end` of an object, read as the stream is pulled; the `Done` says how
    /// the read ended. A range past the end is cut at the end (empty past it).
    pub async fn read(
        &self,
        container: String,
        object: String,
        start: u64,
        end: u64,
    ) -> Result<(ByteStream, Done), Error> {
        if start > end {
            return Err(format!("bad range: start {start} is after end {end}"));
        }
        let root = self.clone();
        let (file, len) = blocking(move || {
            let dir = root.container(&container)?;
            let object = object_name(&object)?;
            let what = format!("object {container}/{object}");
            let mut file = dir.open(object).map_err(|e| io(&what, e))?;
            let size = file.metadata().map_err(|e| io(&what, e))?.len();
            if start >= size {
                return Ok((None, 0));
            }
            let last = end.min(size - 1);
            file.seek(SeekFrom::Start(start))
                .map_err(|e| io(&what, e))?;
            Ok((Some(file.into_std()), last - start + 1))
        })
        .await?;
        let Some(file) = file else {
            return Ok(trellis_interfaces::blobstore::download(
                futures::stream::empty(),
            ));
        };
        let reader = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(file), len);
        let pieces = tokio_util::io::ReaderStream::with_capacity(reader, PIECE)
            .map(|piece| piece.map_err(|e| format!("reading the object failed: {e}")));
        Ok(trellis_interfaces::blobstore::download(pieces))
    }

    /// Starts storing `data` as an object: the container must exist; parents are created; the
    /// object appears (atomically) only once the whole upload is written and synced.
    pub async fn write(
        &self,
        container: String,
        object: String,
        data: Upload,
    ) -> Result<Done, Error> {
        let root = self.clone();
        let (parent, temp, file, name) = blocking(move || {
            let dir = root.container(&container)?;
            let object = object_name(&object)?;
            let parent = parent_of(&dir, object)?;
            let (temp, file) = temp_file(&parent)?;
            Ok((parent, temp, file.into_std(), leaf(object).to_string()))
        })
        .await?;
        Ok(Box::pin(store(data, parent, temp, file, name)))
    }
}

/// Upload pieces gathered for one blocking write: a tokio file write per piece would cost a
/// thread hand-off and a copy each.
const WRITE_BATCH: usize = 1 << 20;

/// Writes `data` into the temporary file (in batches of about [`WRITE_BATCH`] bytes), syncs
/// it, then renames it to `name` — or deletes it if anything failed.
async fn store(
    mut data: Upload,
    parent: Dir,
    temp: String,
    file: std::fs::File,
    name: String,
) -> Result<(), Error> {
    let mut file = Some(file);
    let mut batch: Vec<bytes::Bytes> = Vec::new();
    let mut batched = 0;
    let mut outcome: std::io::Result<()> = Ok(());
    loop {
        let ended = match data.next().await {
            Some(Ok(piece)) => {
                batched += piece.len();
                batch.push(piece);
                false
            }
            Some(Err(why)) => {
                outcome = Err(std::io::Error::other(why));
                break;
            }
            None => true,
        };
        if batched >= WRITE_BATCH || ended {
            let pieces = std::mem::take(&mut batch);
            batched = 0;
            let last = ended;
            let Some(mut f) = file.take() else { break };
            let task = blocking(move || {
                use std::io::Write as _;
                let written = pieces.iter().try_for_each(|p| f.write_all(p));
                // The whole object is written: make it durable before it gets its name.
                let written = written.and_then(|()| if last { f.sync_all() } else { Ok(()) });
                Ok((f, written))
            });
            match task.await {
                Ok((back, Ok(()))) => file = Some(back),
                Ok((_, Err(err))) => {
                    outcome = Err(err);
                    break;
                }
                Err(why) => {
                    outcome = Err(std::io::Error::other(why));
                    break;
                }
            }
        }
        if ended {
            break;
        }
    }
    drop(file);
    blocking(move || finish(&parent, &temp, &name, outcome)).await
}

/// Renames the temporary file to `name` if `written` succeeded; deletes it otherwise.
fn finish(parent: &Dir, temp: &str, name: &str, written: std::io::Result<()>) -> Result<(), Error> {
    match written {
        Ok(()) => parent
            .rename(temp, parent, name)
            .map_err(|e| io(&format!("object {name}"), e)),
        Err(err) => {
            let _ = parent.remove_file(temp);
            Err(format!("the object was not stored: {err}"))
        }
    }
}

/// A new temporary file in `dir`.
fn temp_file(dir: &Dir) -> Result<(String, cap_std::fs::File), Error> {
    let temp = format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple());
    let mut opts = cap_std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    let file = dir
        .open_with(&temp, &opts)
        .map_err(|e| io("a temporary file", e))?;
    Ok((temp, file))
}

/// The last segment of an object name.
fn leaf(object: &str) -> &str {
    object.rsplit('/').next().unwrap_or(object)
}

/// The directory an object lives in, created if needed.
fn parent_of(dir: &Dir, object: &str) -> Result<Dir, Error> {
    match object.rsplit_once('/') {
        None => dir.try_clone().map_err(|e| io("the container", e)),
        Some((parents, _)) => {
            dir.create_dir_all(parents)
                .map_err(|e| io(&format!("directory {parents}"), e))?;
            dir.open_dir(parents)
                .map_err(|e| io(&format!("directory {parents}"), e))
        }
    }
}

/// Collects the object names under `dir` (prefixed `prefix`), skipping uploads in progress.
fn walk(dir: &Dir, prefix: &str, names: &mut Vec<String>) -> std::io::Result<()> {
    for entry in dir.entries()? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue; // not UTF-8: not a name a component could have written
        };
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        let full = format!("{prefix}{name}");
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&entry.open_dir()?, &format!("{full}/"), names)?;
        } else if kind.is_file() {
            names.push(full);
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "backend_tests.rs"]
mod tests;
