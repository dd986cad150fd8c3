//! The secret store and link secrets against a real nats-server and a redis-server that
//! requires a password: keyvalue-redis, started by the host, gets the password from the
//! store sealed to its instance (in its host data, and pulled for a link put later); a link
//! whose secret the policy keeps from it fails with the reason; and the attacks on the way —
//! asking the host in a provider's name, copying a sealed value under another name, a host
//! with another key, a component reading what it was not granted — each come to nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use trellis_host::secret_store::{SecretStore, SecretStoreError};
use trellis_host::secrets::SecretValue as ComponentSecret;
use trellis_host::supervisor::{ProviderSpec, SupervisorOptions};
use trellis_host::{Host, HostError, HostOptions};
use trellis_sdk::admin::{ping_links, provider_health};
use trellis_sdk::host_data::SecretValue;
use trellis_sdk::link::{LinkKey, LinkState};
use trellis_sdk::sealing::{LinkSecretsReply, LinkSecretsRequest, SecretReference, XKeyPair};
use trellis_sdk::secret::Secret;
use trellis_sdk::store::StoredLink;
use trellis_sdk::subjects::LatticeSubjects;
use trellis_tests as common;

fn text(value: &str) -> SecretValue {
    SecretValue::String(Secret::new(value))
}

fn kv_link(name: &str, secret_ref: &str) -> StoredLink {
    StoredLink::new("comp", "kv", "wasi", "keyvalue", ["store"])
        .named(name)
        .with_target_config(["kv-url", secret_ref])
}

/// Each link's state in kv's ping answer, by link name.
async fn link_states(
    nats: &async_nats::Client,
    subjects: &LatticeSubjects,
) -> BTreeMap<String, LinkState> {
    let replies = ping_links(nats, subjects, Some("kv"), Duration::from_millis(500))
        .await
        .unwrap_or_default();
    replies
        .into_iter()
        .flat_map(|r| r.links)
        .map(|l| (l.link.name, l.state))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_secrets_reach_only_the_provider_the_policy_names() {
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let redis = common::OwnRedis::start_with(&["--requirepass", &password]);
    let nats = common::nats().await;
    let lattice = common::unique_lattice("secrets");
    let subjects = LatticeSubjects::new(&lattice).unwrap();
    let key = Arc::new(XKeyPair::generate());
    let host_id = format!("secrets-host-{}", uuid::Uuid::new_v4().simple());
    let host = Host::new(
        nats.clone(),
        HostOptions {
            lattice: lattice.clone(),
            host_id: host_id.clone(),
            nats_url: common::nats_url(),
            secrets_key: Some(Arc::clone(&key)),
            ..HostOptions::default()
        },
    )
    .await
    .expect("host");

    let store = SecretStore::open(&nats, &subjects).await.unwrap();
    let kv = ["kv".to_string()];
    store.put("redis-pw", &text(&password), &kv).await.unwrap();
    store.put("wrong-pw", &text("not-it"), &kv).await.unwrap();
    let others = ["someone-else".to_string()];
    store
        .put("not-for-kv", &text(&password), &others)
        .await
        .unwrap();
    let listed = store.list().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["not-for-kv", "redis-pw", "wrong-pw"]);
    assert_eq!(listed[1].readers, ["kv"]);
    assert_eq!(listed[1].kind, "string");

    let admin = host.admin();
    let url = HashMap::from([("url".to_string(), redis.url())]);
    admin.put_config("kv-url", &url).await.unwrap();
    for (name, secret) in [
        ("SECRET_kv-pw", "redis-pw"),
        ("SECRET_wrong", "wrong-pw"),
        ("SECRET_denied", "not-for-kv"),
    ] {
        let reference = SecretReference::to_store("password", secret);
        admin
            .put_config(name, &reference.to_config())
            .await
            .unwrap();
    }
    // Before the start: the sealed password travels in the host data.
    admin
        .put_link(kv_link("default", "SECRET_kv-pw"))
        .await
        .unwrap();
    let provider = host
        .start_provider(
            ProviderSpec {
                id: "kv".into(),
                path: common::workspace_bin("keyvalue-redis"),
                config: HashMap::new(),
            },
            SupervisorOptions::default(),
        )
        .expect("start keyvalue-redis");
    // After: the provider pulls each link and asks the host for its secrets.
    for (name, reference) in [
        ("live", "SECRET_kv-pw"),
        ("wrong", "SECRET_wrong"),
        ("denied", "SECRET_denied"),
    ] {
        admin.put_link(kv_link(name, reference)).await.unwrap();
    }

    let mut states = BTreeMap::new();
    for _ in 0..100 {
        states = link_states(&nats, &subjects).await;
        if states.len() == 4 && states.get("denied") != Some(&LinkState::Active) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        states.get("default"),
        Some(&LinkState::Active),
        "{states:?}"
    );
    assert_eq!(states.get("live"), Some(&LinkState::Active), "{states:?}");
    match states.get("denied") {
        Some(LinkState::Failed { error }) => {
            assert!(error.contains("may not be read by kv"), "{error}");
            assert!(!error.contains(&password), "the value leaked: {error}");
        }
        other => panic!("the denied link is {other:?}"),
    }
    // The password really is what opens Redis: the links holding it pass the health check,
    // the one holding another value does not (failed at set-up, or unhealthy).
    let health = provider_health(&nats, &subjects, "kv", Duration::from_secs(5))
        .await
        .expect("health");
    let message = health.message.clone().unwrap_or_default();
    assert!(
        !message.contains("(default)") && !message.contains("(live)"),
        "{message}"
    );
    let wrong_failed = matches!(states.get("wrong"), Some(LinkState::Failed { .. }));
    assert!(
        wrong_failed || message.contains("(wrong)"),
        "a wrong password passed: {states:?} {message}"
    );
    assert!(!message.contains(&password));

    // Attack: asking the host for kv's secrets in kv's name yields bytes sealed to kv's
    // instance, which no other key opens.
    let request = LinkSecretsRequest {
        provider_id: "kv".into(),
        link: LinkKey {
            source_id: "comp".into(),
            target: "kv".into(),
            name: "default".into(),
            wit_namespace: "wasi".into(),
            wit_package: "keyvalue".into(),
            interfaces: vec!["store".into()],
        },
    };
    let body = serde_json::to_vec(&request).unwrap();
    let answer = nats
        .request(subjects.link_secrets(&host_id), body.into())
        .await
        .expect("the host answers");
    let reply: LinkSecretsReply = serde_json::from_slice(&answer.payload).unwrap();
    let sealed = reply.sealed.expect("sealed bytes");
    assert!(
        !sealed
            .windows(password.len())
            .any(|w| w == password.as_bytes())
    );
    let thief = XKeyPair::generate();
    assert!(thief.open_map(&sealed, &thief.public_key()).is_err());
    // Hostile requests get a clear error, and the host keeps answering.
    for garbage in [
        &b"not json"[..],
        b"{}",
        b"{\"provider_id\":\"kv\",\"link\":7}",
        &[0xff; 64],
    ] {
        let answer = nats
            .request(subjects.link_secrets(&host_id), garbage.to_vec().into())
            .await
            .expect("the host answers");
        let reply: LinkSecretsReply = serde_json::from_slice(&answer.payload).unwrap();
        assert!(reply.sealed.is_none());
        assert!(
            reply
                .error
                .unwrap_or_default()
                .contains("not a link secrets request"),
            "{garbage:?}"
        );
    }
    // ... and in the name of a provider this host did not start, nothing.
    let mut other = request.clone();
    other.provider_id = "comp".into();
    let body = serde_json::to_vec(&other).unwrap();
    let answer = nats
        .request(subjects.link_secrets(&host_id), body.into())
        .await
        .unwrap();
    let reply: LinkSecretsReply = serde_json::from_slice(&answer.payload).unwrap();
    assert!(reply.sealed.is_none());
    assert!(
        reply.error.unwrap_or_default().contains("did not start"),
        "refused for another reason"
    );

    // Attack: a sealed value copied into a record that names kv as reader does not open.
    let js = jetstream::new(nats.clone());
    let bucket = js
        .get_key_value(subjects.secret_data_bucket())
        .await
        .unwrap();
    let record = bucket.get("secret.not-for-kv").await.unwrap().unwrap();
    let mut forged: serde_json::Value = serde_json::from_slice(&record).unwrap();
    forged["readers"] = serde_json::json!(["kv"]);
    bucket
        .put("secret.stolen", serde_json::to_vec(&forged).unwrap().into())
        .await
        .unwrap();
    let err = store.read(&key, "stolen", "kv").await.unwrap_err();
    assert!(matches!(err, SecretStoreError::Corrupt { .. }), "{err}");
    bucket
        .put(
            "secret.not-for-kv",
            serde_json::to_vec(&forged).unwrap().into(),
        )
        .await
        .unwrap();
    let err = store.read(&key, "not-for-kv", "kv").await.unwrap_err();
    assert!(matches!(err, SecretStoreError::Corrupt { .. }), "{err}");

    // Attack: a host holding another key is refused at start.
    let err = Host::new(
        nats.clone(),
        HostOptions {
            lattice: lattice.clone(),
            host_id: format!("{host_id}-other"),
            secrets_key: Some(Arc::new(XKeyPair::generate())),
            ..HostOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, HostError::Secrets(SecretStoreError::WrongKey { .. })),
        "{err}"
    );

    // Components read what their grant names, under the same policy.
    let grants = BTreeMap::from([("key".to_string(), "redis-pw".to_string())]);
    let err = host.component_secrets("comp", &grants).await.unwrap_err();
    assert!(err.to_string().contains("may not be read by comp"), "{err}");
    let comp = ["comp".to_string()];
    store
        .put("comp-key", &SecretValue::Bytes(vec![1, 2, 3]), &comp)
        .await
        .unwrap();
    let grants = BTreeMap::from([("key".to_string(), "comp-key".to_string())]);
    let secrets = host.component_secrets("comp", &grants).await.unwrap();
    assert_eq!(secrets["key"], ComponentSecret::Bytes(vec![1, 2, 3]));
    let missing = BTreeMap::from([("key".to_string(), "nope".to_string())]);
    let err = host.component_secrets("comp", &missing).await.unwrap_err();
    assert!(err.to_string().contains("no secret named"), "{err}");

    assert!(store.delete("comp-key").await.unwrap());
    assert!(!store.delete("comp-key").await.unwrap());
    provider.stop().await;
}
