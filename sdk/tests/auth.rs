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
