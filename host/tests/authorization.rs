//! The lattice's NATS authorization against a real nats-server in operator mode: each
//! identity reaches what its links allow and nothing else, and a link added at runtime takes
//! effect on a config reload without anyone reconnecting.
//!
//! Attacks tried: a host calling a target none of its components links to; a provider
//! serving (subscribing to) another provider's subjects; a provider listening to every
//! inbox to overhear replies; a provider writing a link into the lattice store. Each is
//! refused by the server, which tells the offender ("Permissions Violation").

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use trellis_host::nats_auth::{
    Credentials, LatticeAuth, host_grants, inbox_prefix, provider_grants,
};
use trellis_sdk::store::{LatticeStore, StoredLink};
use trellis_sdk::subjects::LatticeSubjects;
use trellis_tests::OwnNats;

/// A connection as `name`, and the errors the server sent it.
async fn join(
    url: &str,
    name: &str,
    creds: &Credentials,
) -> (async_nats::Client, Arc<Mutex<Vec<String>>>) {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&errors);
    let key = Arc::new(nkeys::KeyPair::from_seed(creds.seed.expose()).expect("seed"));
    let client = async_nats::ConnectOptions::with_jwt(creds.jwt.clone(), move |nonce| {
        let key = Arc::clone(&key);
        async move { key.sign(&nonce).map_err(async_nats::AuthError::new) }
    })
    .custom_inbox_prefix(inbox_prefix(name))
    .event_callback(move |event| {
        let seen = Arc::clone(&seen);
        async move {
            if let async_nats::Event::ServerError(err) = event {
                seen.lock().unwrap().push(err.to_string());
            }
        }
    })
    .connect(url)
    .await
    .unwrap_or_else(|e| panic!("{name} cannot join: {e}"));
    (client, errors)
}

/// Whether `sub` gets a message within a short wait.
async fn receives(sub: &mut async_nats::Subscriber) -> bool {
    tokio::time::timeout(Duration::from_millis(300), sub.next())
        .await
        .is_ok()
}

async fn violation(errors: &Mutex<Vec<String>>, kind: &str, subject: &str) -> bool {
    for _ in 0..50 {
        let found = errors.lock().unwrap().iter().any(|e| {
            e.to_lowercase().contains("permissions violation")
                && e.contains(kind)
                && e.contains(subject)
        });
        if found {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_identity_reaches_only_what_its_links_allow() {
    let s = LatticeSubjects::new("guarded").unwrap();
    let mut links = vec![StoredLink::new("comp", "kv", "wasi", "keyvalue", ["store"])];
    let mut auth = LatticeAuth::new();
    let admin = auth.admin("admin").unwrap();
    let comps = ["comp".to_string()];
    let provs = ["kv".to_string()];
    let host = auth
        .identity("h1", host_grants(&s, "h1", &comps, &provs, &links, &[]))
        .unwrap();
    let kv = auth
        .identity("kv", provider_grants(&s, "kv", "h1", &links, false, None))
        .unwrap();
    let rogue = auth
        .identity(
            "rogue",
            provider_grants(&s, "rogue", "h1", &links, false, None),
        )
        .unwrap();
    let mut server = OwnNats::start_with_config(&auth.server_config().unwrap());
    let url = server.url();

    let (admin_c, _) = join(&url, "admin", &admin).await;
    let store = LatticeStore::open(&admin_c, &s)
        .await
        .expect("admin opens the store");
    store
        .put_link(links[0].clone())
        .await
        .expect("admin writes a link");
    let (host_c, host_errors) = join(&url, "h1", &host).await;
    let (kv_c, _) = join(&url, "kv", &kv).await;
    let (rogue_c, rogue_errors) = join(&url, "rogue", &rogue).await;

    // A provider reads its links from the lattice store (as the SDK does at start).
    let kv_store = LatticeStore::open(&kv_c, &s)
        .await
        .expect("kv opens the store");
    let found = kv_store.links_for("kv").await.expect("kv reads its links");
    assert_eq!(found.links.len(), 1);

    // The host calls the linked target; the provider serves it.
    let serving = format!("{}.wrpc.>", s.wrpc_prefix("kv"));
    let mut kv_sub = kv_c.subscribe(serving.clone()).await.unwrap();
    // Attack: another provider subscribes to kv's subjects to answer its calls.
    let mut stolen = rogue_c.subscribe(serving.clone()).await.unwrap();
    // Attack: it listens to every inbox to overhear replies.
    let mut overheard = rogue_c.subscribe("_INBOX.>").await.unwrap();
    kv_c.flush().await.unwrap();
    rogue_c.flush().await.unwrap();
    let call = format!(
        "{}.wrpc.0.0.1.wrpc:keyvalue/store@0.2.0-draft.get",
        s.wrpc_prefix("kv")
    );
    host_c.publish(call.clone(), "x".into()).await.unwrap();
    host_c
        .publish(format!("{}.reply", inbox_prefix("h1")), "y".into())
        .await
        .unwrap();
    host_c.flush().await.unwrap();
    assert!(
        receives(&mut kv_sub).await,
        "kv did not get the linked call"
    );
    assert!(!receives(&mut stolen).await, "rogue served kv's subject");
    assert!(violation(&rogue_errors, "Subscription", &serving).await);
    assert!(!receives(&mut overheard).await, "rogue overheard an inbox");
    assert!(violation(&rogue_errors, "Subscription", "_INBOX.>").await);

    // Attack: the host calls a target no link of its components names.
    let other = format!("{}.wrpc.>", s.wrpc_prefix("other"));
    let mut other_sub = admin_c.subscribe(other.clone()).await.unwrap();
    admin_c.flush().await.unwrap();
    let unlinked = format!("{}.wrpc.0.0.1.x.y", s.wrpc_prefix("other"));
    host_c.publish(unlinked.clone(), "x".into()).await.unwrap();
    host_c.flush().await.unwrap();
    assert!(
        !receives(&mut other_sub).await,
        "an unlinked call went through"
    );
    assert!(violation(&host_errors, "Publish", &unlinked).await);

    // Attack: a provider writes a link into the lattice store.
    let rogue_store = LatticeStore::open(&rogue_c, &s)
        .await
        .expect("reading is allowed");
    let forged = StoredLink::new("comp", "rogue", "wasi", "keyvalue", ["store"]).named("evil");
    assert!(
        rogue_store.put_link(forged).await.is_err(),
        "rogue wrote a link"
    );
    let stored = store.component("comp").await.unwrap().unwrap_or_default();
    assert_eq!(stored.links.len(), 1, "{:?}", stored.links);

    // A link put at runtime: the host's grants follow on a reload, same connection.
    links.push(StoredLink::new(
        "comp",
        "other",
        "wasi",
        "keyvalue",
        ["store"],
    ));
    let changed = auth
        .set_grants("h1", host_grants(&s, "h1", &comps, &provs, &links, &[]))
        .unwrap();
    assert!(changed);
    let connects = |c: &async_nats::Client| {
        c.statistics()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let kv_before = connects(&kv_c);
    server.reconfigure(&auth.server_config().unwrap());
    host_c.publish(unlinked, "x".into()).await.unwrap();
    host_c.flush().await.unwrap();
    assert!(
        receives(&mut other_sub).await,
        "the new link's calls are still refused"
    );
    // The server reconnects the identities whose grants changed (their clients rejoin by
    // themselves), and leaves the others alone.
    assert_eq!(
        connects(&kv_c),
        kv_before,
        "kv was disconnected by the reload"
    );
}
