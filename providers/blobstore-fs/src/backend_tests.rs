//! The root cannot be escaped: hostile names and symlink layouts (one swapped in during a
//! write) are refused, and nothing outside the root is read, written or deleted.

use std::os::unix::fs::symlink;
use std::path::PathBuf;

use bytes::Bytes;
use futures::StreamExt as _;

use super::*;

/// A root and, beside it, an outside directory holding `secret.txt`.
struct Layout {
    base: PathBuf,
    root: Root,
    outside: PathBuf,
}

impl Layout {
    fn new(tag: &str) -> Self {
        let base = std::env::temp_dir().join(format!(
            "trellis-blobfs-{tag}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let outside = base.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.txt"), b"secret").unwrap();
        let root = Root::open(&base.join("root")).unwrap();
        Self {
            base,
            root,
            outside,
        }
    }

    /// The outside directory holds exactly `secret.txt`, unchanged.
    fn outside_untouched(&self) {
        let names: Vec<_> = std::fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            ["secret.txt"],
            "something was written outside the root"
        );
        assert_eq!(
            std::fs::read(self.outside.join("secret.txt")).unwrap(),
            b"secret"
        );
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn upload(data: &'static [u8]) -> Upload {
    Box::pin(futures::stream::iter([Ok(Bytes::from_static(data))]))
}

async fn read_all(root: &Root, c: &str, o: &str) -> Result<Vec<u8>, Error> {
    let (data, done) = root.read(c.into(), o.into(), 0, u64::MAX).await?;
    let pieces: Vec<Bytes> = data.collect().await;
    done.await?;
    Ok(pieces.concat())
}

async fn write(root: &Root, c: &str, o: &str, data: &'static [u8]) -> Result<(), Error> {
    root.write(c.into(), o.into(), upload(data)).await?.await
}

const HOSTILE_OBJECTS: &[&str] = &[
    "",
    "/",
    "/etc/passwd",
    "//double",
    ".",
    "..",
    "../secret.txt",
    "../../outside/secret.txt",
    "a/../../secret.txt",
    "a/./b",
    "a//b",
    "a/",
    "./a",
    "a/..",
    "nul\0byte",
    "a/nul\0",
    "back\\slash/..\\..",
    ".trellis-upload-0000",
    "dir/.trellis-upload-x",
    "x/../..",
    "..\\..\\secret.txt",
];

const HOSTILE_CONTAINERS: &[&str] = &[
    "",
    ".",
    "..",
    "/",
    "/tmp",
    "a/b",
    "../outside",
    "c\0",
    ".trellis-upload-1",
];

#[tokio::test]
async fn hostile_names_are_refused_and_nothing_outside_is_touched() {
    let l = Layout::new("names");
    l.root.create_container("c".into()).await.unwrap();
    write(&l.root, "c", "ok", b"fine").await.unwrap();
    let mut refused = 0;
    for name in HOSTILE_OBJECTS {
        assert!(
            write(&l.root, "c", name, b"evil").await.is_err(),
            "write {name:?}"
        );
        assert!(read_all(&l.root, "c", name).await.is_err(), "read {name:?}");
        assert!(
            l.root
                .object_info("c".into(), name.to_string())
                .await
                .is_err(),
            "info {name:?}"
        );
        assert!(
            l.root
                .delete_object("c".into(), name.to_string())
                .await
                .is_err(),
            "delete {name:?}"
        );
        let copy = l.root.transfer(
            ("c".into(), "ok".into()),
            ("c".into(), name.to_string()),
            true,
        );
        assert!(copy.await.is_err(), "copy to {name:?}");
        refused += 1;
    }
    for name in HOSTILE_CONTAINERS {
        assert!(
            l.root.create_container(name.to_string()).await.is_err(),
            "create {name:?}"
        );
        assert!(
            l.root.delete_container(name.to_string()).await.is_err(),
            "delete {name:?}"
        );
        assert!(
            l.root.clear_container(name.to_string()).await.is_err(),
            "clear {name:?}"
        );
        assert!(
            l.root.list(name.to_string(), None, None).await.is_err(),
            "list {name:?}"
        );
        refused += 1;
    }
    assert!(refused >= 25, "{refused} hostile names");
    // The root and its container are intact.
    assert_eq!(read_all(&l.root, "c", "ok").await.unwrap(), b"fine");
    l.outside_untouched();
}

#[tokio::test]
async fn symlinks_out_of_the_root_are_refused_anywhere_on_the_path() {
    let l = Layout::new("links");
    l.root.create_container("c".into()).await.unwrap();
    // A container that is a symlink to the outside directory.
    symlink(&l.outside, l.path("evil")).unwrap();
    assert!(read_all(&l.root, "evil", "secret.txt").await.is_err());
    assert!(write(&l.root, "evil", "new", b"x").await.is_err());
    assert!(l.root.clear_container("evil".into()).await.is_err());
    // A directory inside a container that points outside.
    symlink(&l.outside, l.path("c/sub")).unwrap();
    assert!(read_all(&l.root, "c", "sub/secret.txt").await.is_err());
    assert!(write(&l.root, "c", "sub/new", b"x").await.is_err());
    assert!(
        l.root
            .delete_object("c".into(), "sub/secret.txt".into())
            .await
            .is_err()
    );
    // An object that is a symlink to an outside file, relative and absolute.
    symlink("../../outside/secret.txt", l.path("c/rel")).unwrap();
    symlink(l.outside.join("secret.txt"), l.path("c/abs")).unwrap();
    for name in ["rel", "abs"] {
        assert!(
            read_all(&l.root, "c", name).await.is_err(),
            "read through {name}"
        );
        let copy = l
            .root
            .transfer(("c".into(), name.into()), ("c".into(), "copy".into()), true);
        assert!(copy.await.is_err(), "copy through {name}");
    }
    // The listing does not follow them out either.
    let names: Vec<String> = l.root.list("c".into(), None, None).await.unwrap().concat();
    assert!(!names.iter().any(|n| n.contains("secret")), "{names:?}");
    l.outside_untouched();
}

#[tokio::test]
async fn a_symlink_swapped_in_during_a_write_does_not_lead_out() {
    let l = Layout::new("swap");
    l.root.create_container("c".into()).await.unwrap();
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, String>>();
    let done = l
        .root
        .write("c".into(), "dir/obj".into(), Box::pin(rx))
        .await
        .unwrap();
    tx.unbounded_send(Ok(Bytes::from_static(b"first half ")))
        .unwrap();
    // While the upload runs, its directory is replaced by a symlink to the outside.
    std::fs::rename(l.path("c/dir"), l.path("c/moved")).unwrap();
    symlink(&l.outside, l.path("c/dir")).unwrap();
    tx.unbounded_send(Ok(Bytes::from_static(b"second half")))
        .unwrap();
    drop(tx);
    done.await.unwrap();
    // The object landed in the directory the upload opened, never outside.
    l.outside_untouched();
    assert_eq!(
        std::fs::read(l.path("c/moved/obj")).unwrap(),
        b"first half second half"
    );
}

#[tokio::test]
async fn writes_are_atomic_and_a_failed_upload_leaves_nothing() {
    let l = Layout::new("atomic");
    l.root.create_container("c".into()).await.unwrap();
    write(&l.root, "c", "a/b/obj", b"old").await.unwrap();
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, String>>();
    let done = l
        .root
        .write("c".into(), "a/b/obj".into(), Box::pin(rx))
        .await
        .unwrap();
    tx.unbounded_send(Ok(Bytes::from_static(b"new but ")))
        .unwrap();
    tokio::task::yield_now().await;
    // Mid-upload, readers see the old object whole.
    assert_eq!(read_all(&l.root, "c", "a/b/obj").await.unwrap(), b"old");
    tx.unbounded_send(Err("the caller went away".into()))
        .unwrap();
    drop(tx);
    let err = done.await.unwrap_err();
    assert!(err.contains("caller went away"), "{err}");
    assert_eq!(read_all(&l.root, "c", "a/b/obj").await.unwrap(), b"old");
    // No temporary file is left, and none is ever listed.
    let left: Vec<_> = std::fs::read_dir(l.path("c/a/b"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["obj"]);
    assert_eq!(
        l.root.list("c".into(), None, None).await.unwrap().concat(),
        ["a/b/obj"]
    );
}

#[tokio::test]
async fn ranges_are_inclusive_and_cut_at_the_end() {
    let l = Layout::new("ranges");
    l.root.create_container("c".into()).await.unwrap();
    write(&l.root, "c", "o", b"0123456789").await.unwrap();
    let range = |start, end| {
        let root = l.root.clone();
        async move {
            let (data, done) = root.read("c".into(), "o".into(), start, end).await?;
            let pieces: Vec<Bytes> = data.collect().await;
            done.await?;
            Ok::<_, Error>(pieces.concat())
        }
    };
    assert_eq!(range(0, 0).await.unwrap(), b"0");
    assert_eq!(range(2, 4).await.unwrap(), b"234");
    assert_eq!(range(8, 100).await.unwrap(), b"89");
    assert_eq!(range(10, 20).await.unwrap(), b"");
    assert!(range(5, 4).await.is_err());
    let info = l.root.object_info("c".into(), "o".into()).await.unwrap();
    assert_eq!(info.size, 10);
    assert!(info.created_at > 1_600_000_000, "{}", info.created_at);
}
