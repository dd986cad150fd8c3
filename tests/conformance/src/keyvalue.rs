//! The keyvalue conformance suite: `wrpc:keyvalue/{store,atomics,batch}@0.2.0-draft` as
//! every provider must serve it. Each check panics with what differs.
//!
//! The caller provides two clients linked to the provider under test (links `a` and `b`),
//! whose configs both map the bucket name [`BUCKET`] — to different places — and map nothing
//! to [`UNKNOWN_BUCKET`].

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use trellis_sdk::runtime::LinkedClient;

use trellis_interfaces::SplitCall as _;
pub use trellis_interfaces::keyvalue::{Client, Error};

/// The typed keyvalue client over `c`: every call of the suite goes through it.
pub fn kv(c: &LinkedClient) -> Client<'_, LinkedClient> {
    Client::new(c, ())
}

/// The bucket name both links map (to different places).
pub const BUCKET: &str = "conformance";
/// A bucket name no link maps.
pub const UNKNOWN_BUCKET: &str = "no-such-bucket";

type Res<T> = Result<T, Error>;

fn refs(pairs: &[(String, Bytes)]) -> Vec<(&str, &Bytes)> {
    pairs.iter().map(|(k, v)| (k.as_str(), v)).collect()
}

fn strs(keys: &[String]) -> Vec<&str> {
    keys.iter().map(String::as_str).collect()
}

async fn get(c: &LinkedClient, bucket: &str, key: &str) -> Res<Option<Bytes>> {
    kv(c)
        .get(bucket, key)
        .await
        .split()
        .expect("wRPC get failed")
}

async fn set(c: &LinkedClient, bucket: &str, key: &str, value: &[u8]) -> Res<()> {
    kv(c)
        .set(bucket, key, &Bytes::copy_from_slice(value))
        .await
        .split()
        .expect("wRPC set failed")
}

async fn delete(c: &LinkedClient, bucket: &str, key: &str) -> Res<()> {
    kv(c)
        .delete(bucket, key)
        .await
        .split()
        .expect("wRPC delete failed")
}

async fn exists(c: &LinkedClient, bucket: &str, key: &str) -> Res<bool> {
    kv(c)
        .exists(bucket, key)
        .await
        .split()
        .expect("wRPC exists failed")
}

/// Every key of `bucket`, page by page, checking no page repeats a key.
pub async fn list_all(c: &LinkedClient, bucket: &str) -> Vec<String> {
    let mut cursor = None;
    let mut keys = Vec::new();
    let mut pages = 0;
    loop {
        let page = kv(c)
            .list_keys(bucket, cursor)
            .await
            .split()
            .expect("wRPC list-keys failed")
            .unwrap_or_else(|e| panic!("list-keys failed: {e:?}"));
        keys.extend(page.keys);
        pages += 1;
        assert!(pages < 100_000, "list-keys never ends");
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return keys,
        }
    }
}

/// Waits until the provider has the link (it pulls links from the lattice store).
pub async fn wait_linked(c: &LinkedClient) {
    wait_linked_bucket(c, BUCKET).await
}

/// Waits until the provider has the link and serves `bucket` through it.
pub async fn wait_linked_bucket(c: &LinkedClient, bucket: &str) {
    for _ in 0..100 {
        if let Ok(Ok(_)) = kv(c).exists(bucket, "probe").await.split() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the provider did not pick up the link within 10 s");
}

/// Runs every check.
pub async fn run_all(a: &LinkedClient, b: &LinkedClient) {
    wait_linked(a).await;
    wait_linked(b).await;
    crud(a).await;
    values(a).await;
    keys(a).await;
    batch_ops(a).await;
    isolation(a, b).await;
    unknown_bucket(a).await;
    concurrent_increments(a).await;
    listing(b, 10_000).await;
}

/// Set, get, exists, overwrite, delete; missing keys.
pub async fn crud(c: &LinkedClient) {
    assert_eq!(get(c, BUCKET, "crud:missing").await.unwrap(), None);
    assert!(!exists(c, BUCKET, "crud:missing").await.unwrap());
    delete(c, BUCKET, "crud:missing")
        .await
        .expect("deleting a missing key is not an error");
    set(c, BUCKET, "crud:k", b"v1").await.unwrap();
    assert_eq!(
        get(c, BUCKET, "crud:k").await.unwrap().as_deref(),
        Some(&b"v1"[..])
    );
    assert!(exists(c, BUCKET, "crud:k").await.unwrap());
    set(c, BUCKET, "crud:k", b"v2").await.unwrap();
    assert_eq!(
        get(c, BUCKET, "crud:k").await.unwrap().as_deref(),
        Some(&b"v2"[..])
    );
    delete(c, BUCKET, "crud:k").await.unwrap();
    assert_eq!(get(c, BUCKET, "crud:k").await.unwrap(), None);
    assert!(!exists(c, BUCKET, "crud:k").await.unwrap());
}

/// Empty, binary and large values (16 MiB is far beyond NATS's 1 MiB max payload).
pub async fn values(c: &LinkedClient) {
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let big: Vec<u8> = (0..16usize << 20).map(|i| (i * 31 % 255) as u8).collect();
    let just_over: Vec<u8> = vec![7u8; (1 << 20) + 1];
    for (name, value) in [
        ("empty", &b""[..]),
        ("binary", &binary[..]),
        ("just-over-1mib", &just_over[..]),
        ("16mib", &big[..]),
    ] {
        let key = format!("values:{name}");
        set(c, BUCKET, &key, value)
            .await
            .unwrap_or_else(|e| panic!("set {name}: {e:?}"));
        let got = get(c, BUCKET, &key)
            .await
            .unwrap_or_else(|e| panic!("get {name}: {e:?}"))
            .unwrap_or_else(|| panic!("{name}: value missing after set"));
        assert_eq!(got.len(), value.len(), "{name}: length differs");
        assert!(got == value, "{name}: bytes differ");
        assert!(exists(c, BUCKET, &key).await.unwrap(), "{name}: exists");
    }
    // A large value replaced by a small one, and deleted.
    set(c, BUCKET, "values:16mib", b"small").await.unwrap();
    assert_eq!(
        get(c, BUCKET, "values:16mib").await.unwrap().as_deref(),
        Some(&b"small"[..])
    );
    set(c, BUCKET, "values:just-over-1mib", &just_over)
        .await
        .unwrap();
    delete(c, BUCKET, "values:just-over-1mib").await.unwrap();
    assert_eq!(get(c, BUCKET, "values:just-over-1mib").await.unwrap(), None);
    for name in ["empty", "binary", "16mib"] {
        delete(c, BUCKET, &format!("values:{name}")).await.unwrap();
    }
}

/// Keys with unicode, spaces, slashes, dots and wildcard characters round-trip and list
/// back as they were written.
pub async fn keys(c: &LinkedClient) {
    let odd = [
        "ключ/ü 🚀",
        "with space",
        "a/b/c",
        ".leading.dot",
        "trailing.",
        "double..dot",
        "star*and>gt",
        "=equals",
        "[brackets]?",
        "tab\tand\"quote",
    ];
    for (i, key) in odd.iter().enumerate() {
        set(c, BUCKET, key, format!("v{i}").as_bytes())
            .await
            .unwrap_or_else(|e| panic!("set {key:?}: {e:?}"));
    }
    for (i, key) in odd.iter().enumerate() {
        assert_eq!(
            get(c, BUCKET, key).await.unwrap().as_deref(),
            Some(format!("v{i}").as_bytes()),
            "{key:?}"
        );
    }
    let listed: HashSet<String> = list_all(c, BUCKET).await.into_iter().collect();
    for key in odd {
        assert!(listed.contains(key), "{key:?} not listed: {listed:?}");
    }
    for key in odd {
        delete(c, BUCKET, key).await.unwrap();
    }
}

/// get-many keeps order and reports missing keys; set-many and delete-many.
pub async fn batch_ops(c: &LinkedClient) {
    let pairs: Vec<(String, Bytes)> = (0..5)
        .map(|i| (format!("batch:{i}"), Bytes::from(format!("value {i}"))))
        .collect();
    kv(c)
        .set_many(BUCKET, &refs(&pairs))
        .await
        .split()
        .expect("wRPC set-many failed")
        .unwrap();
    let wanted = vec![
        "batch:3".to_string(),
        "batch:missing".to_string(),
        "batch:0".to_string(),
    ];
    let got = kv(c)
        .get_many(BUCKET, &strs(&wanted))
        .await
        .split()
        .expect("wRPC get-many failed")
        .unwrap();
    assert_eq!(
        got,
        vec![
            Some(("batch:3".to_string(), Bytes::from("value 3"))),
            None,
            Some(("batch:0".to_string(), Bytes::from("value 0"))),
        ]
    );
    let all: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
    kv(c)
        .delete_many(BUCKET, &strs(&all))
        .await
        .split()
        .expect("wRPC delete-many failed")
        .unwrap();
    let got = kv(c)
        .get_many(BUCKET, &strs(&all))
        .await
        .split()
        .expect("wRPC get-many failed")
        .unwrap();
    assert!(got.iter().all(Option::is_none), "{got:?}");
    // Empty batches are fine.
    kv(c).set_many(BUCKET, &[]).await.split().unwrap().unwrap();
    assert!(
        kv(c)
            .get_many(BUCKET, &[])
            .await
            .split()
            .unwrap()
            .unwrap()
            .is_empty()
    );
}

/// The same bucket name on two links is two places.
pub async fn isolation(a: &LinkedClient, b: &LinkedClient) {
    set(a, BUCKET, "iso:k", b"from a").await.unwrap();
    assert_eq!(
        get(b, BUCKET, "iso:k").await.unwrap(),
        None,
        "b sees a's key"
    );
    assert!(!exists(b, BUCKET, "iso:k").await.unwrap(), "b sees a's key");
    assert!(
        !list_all(b, BUCKET).await.iter().any(|k| k == "iso:k"),
        "b lists a's key"
    );
    set(b, BUCKET, "iso:k", b"from b").await.unwrap();
    assert_eq!(
        get(a, BUCKET, "iso:k").await.unwrap().as_deref(),
        Some(&b"from a"[..])
    );
    delete(a, BUCKET, "iso:k").await.unwrap();
    assert_eq!(
        get(b, BUCKET, "iso:k").await.unwrap().as_deref(),
        Some(&b"from b"[..]),
        "deleting in a removed b's key"
    );
    delete(b, BUCKET, "iso:k").await.unwrap();
}

/// A bucket the link does not map is `no-such-store`, for every operation.
pub async fn unknown_bucket(c: &LinkedClient) {
    let u = UNKNOWN_BUCKET;
    assert!(matches!(get(c, u, "k").await, Err(Error::NoSuchStore)));
    assert!(matches!(
        set(c, u, "k", b"v").await,
        Err(Error::NoSuchStore)
    ));
    assert!(matches!(exists(c, u, "k").await, Err(Error::NoSuchStore)));
    assert!(matches!(delete(c, u, "k").await, Err(Error::NoSuchStore)));
    assert!(matches!(
        kv(c).list_keys(u, None).await.split().unwrap(),
        Err(Error::NoSuchStore)
    ));
    assert!(matches!(
        kv(c).increment(u, "k", 1).await.split().unwrap(),
        Err(Error::NoSuchStore)
    ));
    assert!(matches!(
        kv(c).get_many(u, &["k"]).await.split().unwrap(),
        Err(Error::NoSuchStore)
    ));
}

/// 16 callers increment one key concurrently: nothing is lost.
pub async fn concurrent_increments(c: &LinkedClient) {
    const CALLERS: u64 = 16;
    const EACH: u64 = 25;
    let key = "counter:shared";
    delete(c, BUCKET, key).await.unwrap();
    assert_eq!(
        kv(c)
            .increment(BUCKET, "counter:fresh", 5)
            .await
            .split()
            .unwrap()
            .unwrap(),
        5,
        "increment of a missing key starts at 0"
    );
    let tasks: Vec<_> = (0..CALLERS)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let mut last = 0;
                for _ in 0..EACH {
                    last = kv(&c)
                        .increment(BUCKET, key, i + 1)
                        .await
                        .split()
                        .expect("wRPC increment failed")
                        .unwrap_or_else(|e| panic!("increment failed: {e:?}"));
                }
                last
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("increment task");
    }
    let expected: u64 = (1..=CALLERS).map(|d| d * EACH).sum();
    assert_eq!(
        kv(c)
            .increment(BUCKET, key, 0)
            .await
            .split()
            .unwrap()
            .unwrap(),
        expected
    );
    // The counter reads back as its decimal text.
    assert_eq!(
        get(c, BUCKET, key).await.unwrap().as_deref(),
        Some(expected.to_string().as_bytes())
    );
    // A value that is not a number cannot be incremented, and is left alone.
    set(c, BUCKET, "counter:text", b"hello").await.unwrap();
    assert!(matches!(
        kv(c)
            .increment(BUCKET, "counter:text", 1)
            .await
            .split()
            .unwrap(),
        Err(Error::Other(_))
    ));
    assert_eq!(
        get(c, BUCKET, "counter:text").await.unwrap().as_deref(),
        Some(&b"hello"[..])
    );
    for k in [key, "counter:fresh", "counter:text"] {
        delete(c, BUCKET, k).await.unwrap();
    }
}

/// `n` keys listed by cursor: every one exactly once.
pub async fn listing(c: &LinkedClient, n: usize) {
    let before = list_all(c, BUCKET).await;
    assert!(
        before.is_empty(),
        "bucket not empty before listing: {before:?}"
    );
    let keys: Vec<String> = (0..n).map(|i| format!("list/{i:05}")).collect();
    for chunk in keys.chunks(500) {
        let pairs: Vec<(String, Bytes)> = chunk
            .iter()
            .map(|k| (k.clone(), Bytes::from_static(b"x")))
            .collect();
        kv(c)
            .set_many(BUCKET, &refs(&pairs))
            .await
            .split()
            .expect("wRPC set-many failed")
            .unwrap();
    }
    let listed = list_all(c, BUCKET).await;
    let unique: HashSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "duplicates in the listing");
    assert_eq!(listed.len(), n, "lost or extra keys");
    for k in &keys {
        assert!(unique.contains(k), "{k} missing");
    }
    for chunk in keys.chunks(500) {
        kv(c)
            .delete_many(BUCKET, &strs(chunk))
            .await
            .split()
            .unwrap()
            .unwrap();
    }
    assert!(list_all(c, BUCKET).await.is_empty());
}
