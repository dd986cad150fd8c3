//! `blobstore::serve` and `blobstore::Client` end to end over a real nats-server: a handler
//! written against the plain trait answers the typed client with every function, object data
//! streams both ways in pieces, the read range's end is inclusive, and errors come back as
//! the interface's strings.

use bytes::Bytes;
use futures::StreamExt as _;
use trellis_interfaces::CallError;
use trellis_interfaces::blobstore::{self, ByteStream, Client, ObjectId};
use trellis_tests::{self as common, MemBlobs};

/// Serves a `MemBlobs` under a fresh prefix; returns a transport client for it.
async fn serve_blobs() -> (trellis_wrpc_nats::Client, MemBlobs) {
    let (server, client, conn) = common::fresh_server("blob-iface").await;
    let server = server.with_param_checks(blobstore::param_checks());
    let blobs = MemBlobs::default();
    common::spawn_invocations(
        blobstore::serve(&server, blobs.clone())
            .await
            .expect("serves"),
    );
    common::keep_serving(conn).await;
    (client, blobs)
}

/// `len` bytes of a recognisable pattern, sent in 100 KiB pieces.
fn pattern(len: usize) -> (Bytes, ByteStream) {
    let data = Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let pieces: Vec<Bytes> = (0..len)
        .step_by(100 << 10)
        .map(|i| data.slice(i..(i + (100 << 10)).min(len)))
        .collect();
    (data, Box::pin(futures::stream::iter(pieces)))
}

async fn read_all(mut data: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(piece) = data.next().await {
        out.extend_from_slice(&piece);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_stream_both_ways_and_every_function_answers() {
    let (wrpc, blobs) = serve_blobs().await;
    let bs = Client::new(&wrpc, None);
    bs.create_container("a").await.unwrap();
    bs.create_container("b").await.unwrap();
    assert!(bs.container_exists("a").await.unwrap());
    assert!(!bs.container_exists("nope").await.unwrap());
    assert_eq!(bs.get_container_info("a").await.unwrap().created_at, 1);

    // Three MiB: several NATS messages each way.
    let big = ObjectId::new("a", "big");
    let (data, stream) = pattern(3 << 20);
    bs.write_container_data(&big, stream).await.unwrap();
    assert_eq!(blobs.object(&big), Some(data.clone()), "stored whole");
    assert_eq!(bs.get_object_info(&big).await.unwrap().size, 3 << 20);
    let (all, done) = bs.get_container_data(&big, 0, u64::MAX).await.unwrap();
    assert_eq!(read_all(all).await, data);
    done.await.unwrap();
    // The range's end is inclusive: bytes 10..=19 are ten bytes.
    let (part, _) = bs.get_container_data(&big, 10, 19).await.unwrap();
    assert_eq!(read_all(part).await, &data[10..20]);

    for name in ["x", "y", "z"] {
        let (_, stream) = pattern(10);
        bs.write_container_data(&ObjectId::new("a", name), stream)
            .await
            .unwrap();
    }
    let (names, done) = bs.list_container_objects("a", None, None).await.unwrap();
    let chunks: Vec<Vec<String>> = names.collect().await;
    done.await.unwrap();
    assert!(
        chunks.iter().all(|c| c.len() <= 2),
        "listed in chunks: {chunks:?}"
    );
    assert_eq!(chunks.concat(), ["big", "x", "y", "z"]);
    let (names, _) = bs
        .list_container_objects("a", Some(2), Some(1))
        .await
        .unwrap();
    assert_eq!(names.collect::<Vec<_>>().await.concat(), ["x", "y"]);

    // Across containers.
    let (x, bx) = (ObjectId::new("a", "x"), ObjectId::new("b", "x"));
    bs.copy_object(&x, &bx).await.unwrap();
    assert!(bs.has_object(&x).await.unwrap() && bs.has_object(&bx).await.unwrap());
    let by = ObjectId::new("b", "y");
    bs.move_object(&ObjectId::new("a", "y"), &by).await.unwrap();
    assert!(!bs.has_object(&ObjectId::new("a", "y")).await.unwrap());
    assert!(bs.has_object(&by).await.unwrap());

    bs.delete_objects("a", &["x", "z"]).await.unwrap();
    bs.delete_object(&big).await.unwrap();
    let (names, _) = bs.list_container_objects("a", None, None).await.unwrap();
    assert!(names.collect::<Vec<_>>().await.concat().is_empty());
    bs.clear_container("b").await.unwrap();
    assert!(!bs.has_object(&bx).await.unwrap());
    bs.delete_container("b").await.unwrap();
    assert!(!bs.container_exists("b").await.unwrap());
}

#[tokio::test]
async fn errors_come_back_as_the_interface_strings() {
    let (wrpc, _) = serve_blobs().await;
    let bs = Client::new(&wrpc, None);
    let missing = ObjectId::new("nope", "k");
    match bs.get_object_info(&missing).await {
        Err(CallError::Interface(why)) => assert!(why.contains("does not exist"), "{why}"),
        other => panic!(
            "expected the interface's error, got {:?}",
            other.map(|_| ())
        ),
    }
    let (_, stream) = pattern(10);
    match bs.write_container_data(&missing, stream).await {
        Err(CallError::Interface(why)) => assert!(why.contains("does not exist"), "{why}"),
        other => panic!("expected the interface's error, got {other:?}"),
    }
}

/// `delete-objects` takes a `list<string>`, whose decoder reads names as they come rather
/// than reserving room for the count: a forged count fails that call only.
#[tokio::test]
async fn a_forged_name_count_fails_the_call_and_the_server_keeps_serving() {
    let (wrpc, _) = serve_blobs().await;
    let mut params = vec![1u8, b'a'];
    params.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, b'x']);
    let why = common::forged_call(
        &wrpc,
        None,
        "wrpc:blobstore/blobstore@0.2.0",
        "delete-objects",
        params.into(),
    )
    .await;
    assert!(!why.is_empty());
    let bs = Client::new(&wrpc, None);
    bs.create_container("after").await.unwrap();
    assert!(bs.container_exists("after").await.unwrap());
}
