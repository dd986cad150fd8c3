//! `keyvalue::serve` and `keyvalue::Client` end to end over a real nats-server: a handler
//! written against the plain trait answers the typed client with every function, the
//! interface's errors come back typed, a missing server comes back as a transport error, and
//! the parameter checks refuse a forged `set-many` without disturbing the server.

use bytes::Bytes;
use trellis_interfaces::CallError;
use trellis_interfaces::keyvalue::{self, Client, Error};
use trellis_tests::{self as common, MemKv};
use trellis_wrpc_nats::{Connection, TransportError, TransportOptions};

/// Serves a `MemKv` (bucket `mem`) under a fresh prefix with the keyvalue parameter checks; returns a transport
/// client for it (the server lives as long as the test's runtime).
async fn serve_mem() -> (trellis_wrpc_nats::Client, MemKv) {
    let (server, client, conn) = common::fresh_server("kv-iface").await;
    let server = server.with_param_checks(keyvalue::param_checks());
    let mem = MemKv::new("mem").with_page(2);
    common::spawn_invocations(keyvalue::serve(&server, mem.clone()).await.expect("serves"));
    common::keep_serving(conn).await;
    (client, mem)
}

#[tokio::test]
async fn every_function_round_trips() {
    let (wrpc, mem) = serve_mem().await;
    let kv = Client::new(&wrpc, None);
    let v = Bytes::from_static(b"v1");
    kv.set("mem", "a", &v).await.unwrap();
    assert_eq!(kv.get("mem", "a").await.unwrap(), Some(v.clone()));
    assert_eq!(mem.contents().get("a"), Some(&v), "the handler stored it");
    assert!(kv.exists("mem", "a").await.unwrap());
    assert_eq!(kv.get("mem", "missing").await.unwrap(), None);
    assert_eq!(kv.increment("mem", "n", 5).await.unwrap(), 5);
    assert_eq!(kv.increment("mem", "n", 2).await.unwrap(), 7);

    let (x, y) = (Bytes::from_static(b"x"), Bytes::from_static(b"y"));
    kv.set_many("mem", &[("b", &x), ("c", &y)]).await.unwrap();
    assert_eq!(
        kv.get_many("mem", &["b", "nope", "c"]).await.unwrap(),
        vec![Some(("b".into(), x)), None, Some(("c".into(), y))]
    );

    let mut listed = Vec::new();
    let mut cursor = None;
    loop {
        let page = kv.list_keys("mem", cursor).await.unwrap();
        assert!(page.keys.len() <= 2);
        listed.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(listed, ["a", "b", "c", "n"]);

    kv.delete_many("mem", &["b", "c"]).await.unwrap();
    kv.delete("mem", "a").await.unwrap();
    assert!(!kv.exists("mem", "a").await.unwrap());
    assert_eq!(mem.contents().into_keys().collect::<Vec<_>>(), ["n"]);
}

#[tokio::test]
async fn interface_errors_come_back_typed() {
    let (wrpc, _) = serve_mem().await;
    let kv = Client::new(&wrpc, None);
    assert!(matches!(
        kv.get("other", "k").await,
        Err(CallError::Interface(Error::NoSuchStore))
    ));
    kv.set("mem", "t", &Bytes::from_static(b"text"))
        .await
        .unwrap();
    match kv.increment("mem", "t", 1).await {
        Err(CallError::Interface(Error::Other(why))) => assert_eq!(why, "not a number"),
        other => panic!("expected other(\"not a number\"), got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_server_is_a_transport_error() {
    let conn = Connection::new(common::nats().await, TransportOptions::default())
        .await
        .unwrap();
    let wrpc = conn.client(common::unique_lattice("nobody"));
    let err = Client::new(&wrpc, None).get("mem", "k").await.unwrap_err();
    assert!(
        matches!(
            err.transport_error(),
            Some(TransportError::NoResponders { .. })
        ),
        "{err:?}"
    );
    // Folded the way a component sees it: `other` with the reason.
    let folded = Error::from(err);
    assert!(
        matches!(&folded, Error::Other(why) if why.contains("no responders")),
        "{folded:?}"
    );
}

#[tokio::test]
async fn a_forged_set_many_is_refused_and_the_server_keeps_serving() {
    let (wrpc, _) = serve_mem().await;
    // bucket "mem", then a list length of 2^32 - 1 with nothing behind it.
    let mut params = vec![3u8];
    params.extend_from_slice(b"mem");
    params.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    let why = common::forged_call(
        &wrpc,
        None,
        "wrpc:keyvalue/batch@0.2.0-draft",
        "set-many",
        params.into(),
    )
    .await;
    assert!(why.contains("malformed parameters"), "{why}");
    let kv = Client::new(&wrpc, None);
    kv.set("mem", "after", &Bytes::from_static(b"ok"))
        .await
        .unwrap();
    assert!(kv.exists("mem", "after").await.unwrap());
}
