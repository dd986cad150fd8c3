//! The blobstore providers over the lattice, called as a linked component calls them: one
//! suite (`conforms`) for blobstore-fs, blobstore-s3 (against the S3-compatible server) and
//! blobstore-azure (against the Azure blob emulator) —
//! container lifecycle, objects streamed both ways (3 MiB), inclusive ranges at the edges,
//! listing by page with no loss or duplicate, copy and move across containers, names with
//! unicode, spaces and slashes, typed not-found errors; then what is each one's own (hostile
//! names for fs; multipart uploads and copies and container aliases for S3), 1 GiB each way
//! in bounded memory through each, and a stalled reader.
//! A component in the host stores and reads blobs through each. (The security table of the
//! file system itself is in the provider's unit tests.)

mod support;

use std::collections::HashMap;

use bytes::Bytes;
use futures::StreamExt as _;
use trellis_conformance::lattice::ProviderProcess;
use trellis_host::read_component;
use trellis_interfaces::CallError;
use trellis_interfaces::blobstore::{ByteStream, Client, ObjectId};
use trellis_sdk::runtime::LinkedClient;
use trellis_sdk::store::StoredLink;
use trellis_tests as common;
use trellis_tests::components::trellis_test::components::echo;

const ECHO_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../components/prebuilt/echo.wasm"
);

fn pattern(len: usize) -> (Bytes, ByteStream) {
    let data = Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let pieces: Vec<Bytes> = (0..len)
        .step_by(100 << 10)
        .map(|i| data.slice(i..(i + (100 << 10)).min(len)))
        .collect();
    (data, Box::pin(futures::stream::iter(pieces)))
}

async fn read(bs: &Client<'_, LinkedClient>, id: &ObjectId, start: u64, end: u64) -> Vec<u8> {
    let (data, done) = bs.get_container_data(id, start, end).await.expect("read");
    let pieces: Vec<Bytes> = data.collect().await;
    done.await.expect("read to the end");
    pieces.concat()
}

/// `bin` linked with `config` (and waited for).
async fn linked(bin: &str, config: HashMap<String, String>) -> (ProviderProcess, LinkedClient) {
    linked_with(bin, &[], config).await
}

/// blobstore-fs (started with `args`) linked with a fresh root; the root.
async fn fs_linked(args: &[&str]) -> (ProviderProcess, LinkedClient, std::path::PathBuf) {
    let root = fresh_root();
    let config = [("root".to_string(), root.display().to_string())].into();
    let (p, c) = linked_with("blobstore-fs", args, config).await;
    (p, c, root)
}

/// [`linked`], the provider started with `args`.
async fn linked_with(
    bin: &str,
    args: &[&str],
    config: HashMap<String, String>,
) -> (ProviderProcess, LinkedClient) {
    let id = format!("{bin}-{}", &common::unique_lattice("")[1..9]);
    let p = ProviderProcess::start_with(bin, &id, args).await;
    let c = p
        .link("app", "wasi", "blobstore", &["blobstore"], config)
        .await;
    let bs = Client::new(&c, ());
    common::eventually(|| async {
        Ok::<_, anyhow::Error>(
            bs.container_exists("probe-x")
                .await
                .map_err(|e| format!("{e:?}")),
        )
    })
    .await
    .unwrap()
    .expect("the link is served");
    (p, c)
}

/// A fresh directory for blobstore-fs.
fn fresh_root() -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "trellis-blobs-{}",
        &common::unique_lattice("")[1..9]
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobstore_fs_conforms() {
    let (_p, c, root) = fs_linked(&[]).await;
    conforms(&c, "conf-a", "conf-b").await;
    assert!(root.join("conf-b").is_dir(), "the root itself is intact");
    // Hostile names are refused with the reason, and the root is untouched.
    let bs = Client::new(&c, ());
    match bs.delete_container("..").await {
        Err(CallError::Interface(e)) => assert!(e.contains("invalid container name"), "{e}"),
        other => panic!("{other:?}"),
    }
    let escape = ObjectId::new("conf-b", "../../escape");
    let (_, stream) = pattern(10);
    assert!(matches!(
        bs.write_container_data(&escape, stream).await,
        Err(CallError::Interface(_))
    ));
    assert!(!root.parent().unwrap().join("escape").exists());
    let _ = std::fs::remove_dir_all(&root);
}

/// Two fresh container (bucket) names.
fn two_containers() -> (String, String) {
    let suffix = &common::unique_lattice("")[1..9];
    (format!("conf-a-{suffix}"), format!("conf-b-{suffix}"))
}

fn config(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// blobstore-s3's link config for the S3-compatible server, and `extra`.
fn s3_config(extra: &[(&str, String)]) -> HashMap<String, String> {
    let mut c = config(&[
        ("endpoint", common::s3_url()),
        ("access_key_id", "test".to_string()),
        ("secret_access_key", "test".to_string()),
        ("force_path_style", "true".to_string()),
    ]);
    c.extend(config(extra));
    c
}

/// blobstore-azure's link config for the emulator, and `extra`.
fn azure_config(extra: &[(&str, String)]) -> HashMap<String, String> {
    let mut c = config(&[
        ("endpoint", common::azure_url()),
        ("account", "devstoreaccount1".to_string()),
        ("access_key", common::AZURITE_KEY.to_string()),
    ]);
    c.extend(config(extra));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobstore_s3_conforms() {
    let (a, b) = two_containers();
    let config = s3_config(&[
        // Multipart above 5 MiB, in 5 MiB parts: the 12 MiB object below takes three; so
        // does its copy.
        ("multipart_threshold", "5MiB".to_string()),
        ("part_size", "5MiB".to_string()),
        ("copy_threshold", "5MiB".to_string()),
        ("copy_part_size", "5MiB".to_string()),
        // Container `photos` is the bucket of the same name as `a`.
        ("container.photos", a.clone()),
    ]);
    let (_p, c) = linked("blobstore-s3", config).await;
    conforms(&c, &a, &b).await;
    // Multipart: 12 MiB in three parts, read back whole; through an alias.
    let bs = Client::new(&c, ());
    bs.create_container(&a).await.unwrap();
    let id = ObjectId::new("photos", "multi/part.bin");
    let (data, stream) = pattern(12 << 20);
    bs.write_container_data(&id, stream).await.unwrap();
    assert_eq!(bs.get_object_info(&id).await.unwrap().size, 12 << 20);
    assert!(read(&bs, &id, 0, u64::MAX).await == data[..]);
    assert!(
        bs.has_object(&ObjectId::new(&a, "multi/part.bin"))
            .await
            .unwrap()
    );
    // Above the copy threshold a copy goes part by part (UploadPartCopy), whole and exact.
    let copy = ObjectId::new(&a, "multi/copy.bin");
    bs.copy_object(&id, &copy).await.unwrap();
    assert_eq!(bs.get_object_info(&copy).await.unwrap().size, 12 << 20);
    assert!(read(&bs, &copy, 0, u64::MAX).await == data[..]);
    assert_eq!(
        read(&bs, &copy, (5 << 20) - 3, (5 << 20) + 2).await,
        data[(5 << 20) - 3..(5 << 20) + 3]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobstore_azure_conforms() {
    let (a, b) = two_containers();
    // 1 MiB blocks: the 3 MiB object of the suite is staged in three.
    let config = azure_config(&[("block_size", "1MiB".to_string())]);
    let (_p, c) = linked("blobstore-azure", config).await;
    conforms(&c, &a, &b).await;
}

/// Objects the suite lists by page.
const LISTED: usize = 5000;

/// What every blobstore provider does, on two fresh containers `a` and `b`.
async fn conforms(c: &LinkedClient, a: &str, b: &str) {
    let bs = Client::new(c, ());
    bs.create_container(a).await.unwrap();
    bs.create_container(b).await.unwrap();
    assert!(bs.container_exists(a).await.unwrap());
    assert!(!bs.container_exists("nope").await.unwrap());
    assert!(bs.get_container_info(a).await.unwrap().created_at > 1_600_000_000);

    // 3 MiB both ways; ranges inclusive, cut at the end, empty past it.
    let big = ObjectId::new(a, "dir/sub/big file ü.bin");
    let (data, stream) = pattern(3 << 20);
    bs.write_container_data(&big, stream).await.unwrap();
    assert_eq!(bs.get_object_info(&big).await.unwrap().size, 3 << 20);
    assert!(read(&bs, &big, 0, u64::MAX).await == data[..]);
    assert_eq!(read(&bs, &big, 5, 5).await, data[5..6]);
    assert_eq!(
        read(&bs, &big, (3 << 20) - 2, u64::MAX).await,
        data[(3 << 20) - 2..]
    );
    assert!(read(&bs, &big, 3 << 20, (3 << 20) + 10).await.is_empty());
    let empty = ObjectId::new(a, "empty");
    bs.write_container_data(&empty, Box::pin(futures::stream::empty()))
        .await
        .unwrap();
    assert_eq!(bs.get_object_info(&empty).await.unwrap().size, 0);

    // 5,000 objects (written 32 at a time) listed by page: no loss, no duplicate.
    futures::stream::iter(0..LISTED)
        .for_each_concurrent(32, |i| {
            let bs = &bs;
            async move {
                let id = ObjectId::new(b, format!("n/{i:05}"));
                let one: ByteStream = Box::pin(futures::stream::iter([Bytes::from(i.to_string())]));
                bs.write_container_data(&id, one).await.unwrap();
            }
        })
        .await;
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let (names, done) = bs
            .list_container_objects(b, Some(700), Some(offset))
            .await
            .unwrap();
        let page: Vec<String> = names.collect::<Vec<_>>().await.concat();
        done.await.unwrap();
        if page.is_empty() {
            break;
        }
        offset += page.len() as u64;
        seen.extend(page);
    }
    let expected: Vec<String> = (0..LISTED).map(|i| format!("n/{i:05}")).collect();
    assert_eq!(seen, expected);

    // Copy and move across containers.
    let copy = ObjectId::new(b, "copy of big");
    bs.copy_object(&big, &copy).await.unwrap();
    assert!(read(&bs, &copy, 0, u64::MAX).await == data[..]);
    let moved = ObjectId::new(a, "moved/here");
    bs.move_object(&copy, &moved).await.unwrap();
    assert!(!bs.has_object(&copy).await.unwrap());
    assert!(bs.has_object(&moved).await.unwrap());

    // Typed not-found errors with the name; deleting an absent object succeeds.
    let missing = ObjectId::new(a, "missing");
    match bs.get_object_info(&missing).await {
        Err(CallError::Interface(e)) => {
            assert!(e.contains(&format!("{a}/missing does not exist")), "{e}")
        }
        other => panic!("{other:?}"),
    }
    bs.delete_object(&missing).await.unwrap();
    match bs.get_container_info("nope").await {
        Err(CallError::Interface(e)) => assert!(e.contains("container nope does not exist"), "{e}"),
        other => panic!("{other:?}"),
    }
    bs.delete_objects(b, &["n/00000", "n/00001"]).await.unwrap();
    bs.clear_container(a).await.unwrap();
    let (names, _) = bs.list_container_objects(a, None, None).await.unwrap();
    assert!(names.collect::<Vec<_>>().await.concat().is_empty());
    bs.delete_container(a).await.unwrap();
    assert!(!bs.container_exists(a).await.unwrap());
}

/// A component in the host storing and reading a blob through each provider: created,
/// written as a stream, read back checked, listed, deleted.
#[test]
fn a_component_stores_blobs_through_blobstore_fs() {
    common::run_with_large_stacks(async {
        let root = fresh_root();
        let config = [("root".to_string(), root.display().to_string())].into();
        component_round_trip("blobstore-fs", config).await;
        assert!(
            root.join("photos").is_dir(),
            "the container is a directory of the root"
        );
        let _ = std::fs::remove_dir_all(&root);
    });
}

#[test]
fn a_component_stores_blobs_through_blobstore_s3() {
    common::run_with_large_stacks(async {
        // The component's container `photos` is a bucket of this test's own.
        let (bucket, _) = two_containers();
        let config = s3_config(&[("container.photos", bucket)]);
        component_round_trip("blobstore-s3", config).await;
    });
}

#[test]
fn a_component_stores_blobs_through_blobstore_azure() {
    common::run_with_large_stacks(async {
        let (container, _) = two_containers();
        let config = azure_config(&[("container.photos", container)]);
        component_round_trip("blobstore-azure", config).await;
    });
}

async fn component_round_trip(bin: &str, config: HashMap<String, String>) {
    let p = ProviderProcess::start(bin, &format!("{bin}-e2e")).await;
    p.store.put_config("blob-config", &config).await.unwrap();
    let host = support::host(&p.lattice).await;
    host.admin()
        .put_link(
            StoredLink::new("blob-comp", &p.id, "wasi", "blobstore", ["blobstore"])
                .with_target_config(["blob-config"]),
        )
        .await
        .unwrap();
    let _c = host
        .start_component("blob-comp", read_component(ECHO_WASM).unwrap(), &[])
        .await
        .unwrap();
    let client = support::caller(&p.lattice, "blob-comp").await;
    let call = |size: u32| echo::blob(&client, None, "photos", "2026/cat.jpg", size);
    let res = common::eventually(|| call(1000)).await.unwrap();
    assert_eq!(
        res.unwrap(),
        "size=1000 read=1000 mismatches=0 listed=2026/cat.jpg had=true gone=true"
    );
    let size = 3 << 20;
    assert_eq!(
        call(size).await.unwrap().unwrap(),
        format!("size={size} read={size} mismatches=0 listed=2026/cat.jpg had=true gone=true")
    );
}

/// A caller that goes silent mid-upload: the provider's read of the upload times out, the
/// upload fails, and neither the object nor its temporary file is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_upload_leaves_nothing() {
    let (_p, c, root) = fs_linked(&["--rpc-timeout-ms", "1000"]).await;
    let bs = Client::new(&c, ());
    bs.create_container("c").await.unwrap();
    let container = root.join("c");
    let files = || -> Vec<String> {
        std::fs::read_dir(&container)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    // 100 KiB, then silence.
    let first = futures::stream::iter([Bytes::from(vec![7u8; 100 << 10])]);
    let data: ByteStream = Box::pin(first.chain(futures::stream::pending()));
    let c2 = c.clone();
    let upload = tokio::spawn(async move {
        let bs = Client::new(&c2, ());
        bs.write_container_data(&ObjectId::new("c", "partial"), data)
            .await
    });
    let started = std::time::Instant::now();
    while files().is_empty() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the upload never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(files()[0].starts_with(".trellis-upload-"), "{:?}", files());
    upload.abort();
    // The provider's idle timeout (1 s) fails the upload; its temporary file goes.
    while !files().is_empty() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "left behind: {:?}",
            files()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!bs.has_object(&ObjectId::new("c", "partial")).await.unwrap());
    let (names, _) = bs.list_container_objects("c", None, None).await.unwrap();
    assert!(names.collect::<Vec<_>>().await.concat().is_empty());
    let _ = std::fs::remove_dir_all(&root);
}

/// 1 GiB written and read back through each provider in bounded memory: its peak resident
/// memory stays under 64 MiB (the data never sits whole anywhere but in the backend).
#[test]
fn a_gibibyte_object_streams_through_blobstore_fs_in_bounded_memory() {
    common::run_with_large_stacks(async {
        let (p, c, root) = fs_linked(&["--rpc-timeout-ms", "60000"]).await;
        gibibyte(&p, &c, "big").await;
        let _ = std::fs::remove_dir_all(&root);
    });
}

#[test]
fn a_gibibyte_object_streams_through_blobstore_s3_in_bounded_memory() {
    common::run_with_large_stacks(async {
        let (p, c) = linked_with(
            "blobstore-s3",
            &["--rpc-timeout-ms", "60000"],
            s3_config(&[]),
        )
        .await;
        let (bucket, _) = two_containers();
        gibibyte(&p, &c, &bucket).await;
        Client::new(&c, ()).delete_container(&bucket).await.unwrap();
    });
}

#[test]
fn a_gibibyte_object_streams_through_blobstore_azure_in_bounded_memory() {
    common::run_with_large_stacks(async {
        let config = azure_config(&[]);
        let (p, c) = linked_with("blobstore-azure", &["--rpc-timeout-ms", "60000"], config).await;
        let (container, _) = two_containers();
        gibibyte(&p, &c, &container).await;
        Client::new(&c, ())
            .delete_container(&container)
            .await
            .unwrap();
    });
}

/// The same 256 KiB piece, 4096 times: 1 GiB, as a stream; its byte sum tells a whole read
/// from a short one.
const PIECE: usize = 256 << 10;

fn repeated(pieces: usize) -> (ByteStream, u64) {
    let piece = Bytes::from((0..PIECE).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let sum: u64 = piece.iter().map(|b| u64::from(*b)).sum();
    (
        Box::pin(futures::stream::repeat(piece).take(pieces)),
        sum * pieces as u64,
    )
}

/// Length and byte sum of a read.
async fn length_and_sum(data: ByteStream) -> (u64, u64) {
    data.fold((0u64, 0u64), |(len, sum), b| async move {
        (
            len + b.len() as u64,
            sum + b.iter().map(|x| u64::from(*x)).sum::<u64>(),
        )
    })
    .await
}

async fn gibibyte(p: &ProviderProcess, c: &LinkedClient, container: &str) {
    const SIZE: u64 = 1 << 30;
    let bs = Client::new(c, ());
    bs.create_container(container).await.unwrap();
    let id = ObjectId::new(container, "gib");
    let (upload, expected_sum) = repeated((SIZE / PIECE as u64) as usize);
    let (_, peak_idle) = common::memory_kib(p.pid());
    bs.write_container_data(&id, upload).await.expect("stored");
    assert_eq!(bs.get_object_info(&id).await.unwrap().size, SIZE);
    let (_, peak_up) = common::memory_kib(p.pid());
    let (data, done) = bs.get_container_data(&id, 0, u64::MAX).await.expect("read");
    let (len, sum) = length_and_sum(data).await;
    done.await.expect("read to the end");
    assert_eq!(len, SIZE);
    assert_eq!(sum, expected_sum);
    let (_, peak) = common::memory_kib(p.pid());
    eprintln!(
        "{} peak resident memory: {peak_idle} KiB linked, {peak_up} KiB after 1 GiB in, {peak} KiB after 1 GiB out",
        p.id
    );
    assert!(
        peak < 64 << 10,
        "{}'s peak memory was {peak} KiB for 1 GiB each way",
        p.id
    );
    bs.delete_object(&id).await.unwrap();
}

/// A reader that stops reading stalls the download: the provider does not read the object
/// ahead into memory (its resident memory stays far below the object while the reader
/// waits), and once the reader goes on it gets every byte.
#[test]
fn a_stalled_reader_stalls_the_download() {
    common::run_with_large_stacks(async {
        const PIECES: usize = 1024; // 256 MiB
        let (p, c, root) = fs_linked(&["--rpc-timeout-ms", "60000"]).await;
        let bs = Client::new(&c, ());
        bs.create_container("slow").await.unwrap();
        let id = ObjectId::new("slow", "quarter-gib");
        let (upload, expected_sum) = repeated(PIECES);
        bs.write_container_data(&id, upload).await.expect("stored");
        let (mut data, done) = bs.get_container_data(&id, 0, u64::MAX).await.expect("read");
        let first = data.next().await.expect("a first piece");
        // The reader stops. Were the provider reading ahead regardless, it would hold the
        // rest (255 MiB) within these two seconds: loopback moves that in well under one.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let (now, _) = common::memory_kib(p.pid());
        assert!(
            now < 64 << 10,
            "the provider holds {now} KiB while its reader is stalled"
        );
        let (len, sum) = length_and_sum(data).await;
        done.await.expect("read to the end after the stall");
        let first_sum: u64 = first.iter().map(|b| u64::from(*b)).sum();
        assert_eq!(len + first.len() as u64, (PIECES * PIECE) as u64);
        assert_eq!(sum + first_sum, expected_sum);
        let _ = std::fs::remove_dir_all(&root);
    });
}

/// An upload the provider cuts at its call deadline fails at the caller with an error, soon:
/// it neither hangs nor stores anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_at_the_deadline_fails_at_the_caller() {
    let (_p, c, root) = fs_linked(&["--call-deadline-ms", "1000"]).await;
    let bs = Client::new(&c, ());
    bs.create_container("c").await.unwrap();
    // A piece every 100 ms, for ten seconds.
    let slow: ByteStream = Box::pin(futures::stream::iter(0..100).then(|_| async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        Bytes::from(vec![1u8; 1024])
    }));
    let started = std::time::Instant::now();
    let id = ObjectId::new("c", "slow");
    let result = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        bs.write_container_data(&id, slow),
    )
    .await
    .expect("the caller hangs");
    eprintln!("after {:?}: {result:?}", started.elapsed());
    assert!(result.is_err(), "{result:?}");
    assert!(!bs.has_object(&id).await.unwrap());
    let _ = std::fs::remove_dir_all(&root);
}

/// Health tells the truth: each provider answers healthy with its backend there, and
/// unhealthy — naming the link, and only that one — when a link's backend cannot be used
/// (S3 and Azure at a port nobody listens on, the fs root removed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_each_links_backend() {
    let closed = format!("http://127.0.0.1:{}", common::free_port());
    for (bin, good, bad) in [
        (
            "blobstore-s3",
            s3_config(&[]),
            s3_config(&[("endpoint", closed.clone())]),
        ),
        (
            "blobstore-azure",
            azure_config(&[]),
            azure_config(&[("endpoint", format!("{closed}/devstoreaccount1"))]),
        ),
    ] {
        let (p, _c) = linked(bin, good).await;
        assert_eq!(p.health().await, (true, String::new()), "{bin}");
        let _down = p
            .link("down", "wasi", "blobstore", &["blobstore"], bad)
            .await;
        let (_, message) = p
            .health_until(bin, |ok, m| !ok && m.contains("link down -> "))
            .await;
        assert!(!message.contains("link app -> "), "{bin}: {message}");
    }
    let (p, _c, root) = fs_linked(&[]).await;
    assert_eq!(p.health().await, (true, String::new()));
    std::fs::remove_dir_all(&root).unwrap();
    let (_, message) = p.health_until("blobstore-fs", |ok, _| !ok).await;
    assert!(
        message.contains("link app -> ") && message.contains("its root"),
        "{message}"
    );
}
