//! Joining a lattice whose NATS requires credentials: user/password, token and nkey, and a
//! clear error (that does not show the secret) when they are wrong.

use std::time::Duration;

use trellis_sdk::admin;
use trellis_sdk::config::ProviderConfig;
use trellis_sdk::connect::NatsAuth;
use trellis_sdk::provider::Provider;
use trellis_sdk::runtime::{ProviderHandle, RuntimeError};
use trellis_sdk::subjects::LatticeSubjects;
use trellis_tests as common;

struct Nothing;
impl Provider for Nothing {}

async fn start(server: &common::OwnNats, auth: NatsAuth) -> Result<ProviderHandle, RuntimeError> {
    let mut config = ProviderConfig::standalone("auth", "p", &server.url()).unwrap();
    config.nats.auth = auth;
    config.nats.connect_timeout = Duration::from_secs(2);
    ProviderHandle::start(config, std::sync::Arc::new(Nothing)).await
}

async fn answers_ping(handle: &ProviderHandle) {
    let subjects = LatticeSubjects::new("auth").unwrap();
    let replies = admin::ping_links(
        handle.nats(),
        &subjects,
        Some("p"),
        Duration::from_millis(300),
    )
    .await
    .unwrap();
    assert_eq!(replies.len(), 1);
}

fn refused(res: Result<ProviderHandle, RuntimeError>, secret: &str) {
    let err = res.expect_err("wrong credentials were accepted");
    let msg = format!("{err} {err:?}");
    assert!(matches!(err, RuntimeError::Connect(_)), "{msg}");
    assert!(!msg.contains(secret), "the error shows the secret: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password() {
    let server = common::OwnNats::start_with_config(
        "authorization { user: alice, password: \"s3cret-pw\" }",
    );
    let ok = start(
        &server,
        NatsAuth::UserPassword {
            user: "alice".into(),
            password: "s3cret-pw".into(),
        },
    )
    .await
    .unwrap();
    answers_ping(&ok).await;
    refused(
        start(
            &server,
            NatsAuth::UserPassword {
                user: "alice".into(),
                password: "wrong-pw-123".into(),
            },
        )
        .await,
        "wrong-pw-123",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token() {
    let server = common::OwnNats::start_with_config("authorization { token: \"tok-abcdef\" }");
    answers_ping(
        &start(&server, NatsAuth::Token("tok-abcdef".into()))
            .await
            .unwrap(),
    )
    .await;
    refused(
        start(&server, NatsAuth::Token("tok-wrong-9".into())).await,
        "tok-wrong-9",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey_seed() {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let server = common::OwnNats::start_with_config(&format!(
        "authorization {{ users = [ {{ nkey: {} }} ] }}",
        user.public_key()
    ));
    answers_ping(
        &start(&server, NatsAuth::NkeySeed(seed.clone().into()))
            .await
            .unwrap(),
    )
    .await;
    let other = nkeys::KeyPair::new_user().seed().unwrap();
    refused(
        start(&server, NatsAuth::NkeySeed(other.clone().into())).await,
        &other,
    );
    // A malformed seed is a credentials error naming no secret.
    refused(
        start(&server, NatsAuth::NkeySeed("SUnot-a-seed".into())).await,
        "SUnot-a-seed",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    let dir = std::env::temp_dir().join(format!("trellis-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trellis_tests::tls::TestCerts { ca, cert, key } = trellis_tests::tls::certificates(&dir);
    let server = common::OwnNats::start_with_config(&format!(
        "tls {{ cert_file: {cert:?}, key_file: {key:?} }}"
    ));
    let start_tls = |ca: Option<std::path::PathBuf>| {
        let mut config = ProviderConfig::standalone("auth", "p", &server.url()).unwrap();
        config.nats.tls.required = true;
        config.nats.tls.ca_file = ca;
        config.nats.connect_timeout = Duration::from_secs(2);
        ProviderHandle::start(config, std::sync::Arc::new(Nothing))
    };
    answers_ping(&start_tls(Some(ca)).await.unwrap()).await;
    // Without the private CA the server's certificate is not trusted.
    assert!(matches!(
        start_tls(None).await,
        Err(RuntimeError::Connect(_))
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Signs `claims` as a NATS JWT with `key` (header `ed25519-nkey`, base64url without padding).
fn jwt(key: &nkeys::KeyPair, claims: serde_json::Value) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = b64.encode(serde_json::to_vec(&claims).unwrap());
    let signing_input = format!("{header}.{body}");
    let sig = key.sign(signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", b64.encode(sig))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_jwt_and_seed_as_a_1x_host_passes_them() {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let system = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true,
        "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
    });
    let op_jwt = jwt(
        &operator,
        serde_json::json!({
            "jti": "OPJTI", "iat": now, "iss": operator.public_key(), "sub": operator.public_key(), "name": "op",
            "nats": {"type": "operator", "version": 2}
        }),
    );
    let acc_jwt = jwt(
        &operator,
        serde_json::json!({
            "jti": "ACCJTI", "iat": now, "iss": operator.public_key(), "sub": account.public_key(), "name": "acc",
            "nats": {"limits": unlimited, "default_permissions": {"pub": {}, "sub": {}}, "type": "account", "version": 2}
        }),
    );
    let sys_jwt = jwt(
        &operator,
        serde_json::json!({
            "jti": "SYSJTI", "iat": now, "iss": operator.public_key(), "sub": system.public_key(), "name": "SYS",
            "nats": {"limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                                "wildcards": true, "conn": -1, "leaf": -1},
                     "type": "account", "version": 2}
        }),
    );
    let user_jwt = jwt(
        &account,
        serde_json::json!({
            "jti": "USRJTI", "iat": now, "iss": account.public_key(), "sub": user.public_key(), "name": "u",
            "nats": {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2}
        }),
    );
    let server = common::OwnNats::start_with_config(&format!(
        "operator: {op_jwt}\nsystem_account: {sys}\nresolver: MEMORY\n\
         resolver_preload: {{ {acc}: {acc_jwt}, {sys}: {sys_jwt} }}",
        acc = account.public_key(),
        sys = system.public_key(),
    ));
    let seed = user.seed().unwrap();
    answers_ping(
        &start(
            &server,
            NatsAuth::Jwt {
                jwt: user_jwt.clone().into(),
                seed: seed.clone().into(),
            },
        )
        .await
        .unwrap(),
    )
    .await;
    // The JWT with another user's seed cannot sign the server's nonce.
    let other = nkeys::KeyPair::new_user().seed().unwrap();
    refused(
        start(
            &server,
            NatsAuth::Jwt {
                jwt: user_jwt.into(),
                seed: other.clone().into(),
            },
        )
        .await,
        &other,
    );
}
