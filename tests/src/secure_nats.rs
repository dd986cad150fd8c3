//! A nats-server that lets in only holders of a user JWT signed for its account, over TLS:
//! operator mode with a memory resolver (operator, system account and one account with
//! JetStream, the JWTs made here with `nkeys`), and a server certificate from a CA made here
//! with the `openssl` command. For tests that everything Trellis starts joins with the
//! credentials and TLS settings it was given.

use std::path::PathBuf;

use nkeys::KeyPair;

use crate::OwnNats;

/// The server, and what a client needs to join it.
pub struct SecureNats {
    /// The server.
    pub server: OwnNats,
    /// A `.creds` file of a user of the account (JWT and seed).
    pub creds_file: PathBuf,
    /// The CA that signed the server's certificate.
    pub ca_file: PathBuf,
    /// The user's JWT and seed (what the creds file holds).
    pub user_jwt: String,
    /// The user's seed.
    pub user_seed: String,
    dir: PathBuf,
}

impl SecureNats {
    /// Starts one; panics with the reason if `openssl` or the server fails.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "trellis-secure-nats-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let crate::tls::TestCerts {
            ca: ca_file,
            cert,
            key,
        } = crate::tls::certificates(&dir);

        let operator = KeyPair::new_operator();
        let system = KeyPair::new_account();
        let account = KeyPair::new_account();
        let user = KeyPair::new_user();
        let operator_jwt = jwt(
            &operator,
            &operator.public_key(),
            "trellis-test-operator",
            serde_json::json!({"type": "operator", "version": 2, "system_account": system.public_key()}),
        );
        let unlimited = serde_json::json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
        });
        let system_jwt = jwt(
            &operator,
            &system.public_key(),
            "SYS",
            serde_json::json!({"type": "account", "version": 2, "limits": unlimited}),
        );
        let mut limits = unlimited.clone();
        for (k, v) in [
            ("mem_storage", -1),
            ("disk_storage", -1),
            ("streams", -1),
            ("consumer", -1),
        ] {
            limits[k] = serde_json::json!(v);
        }
        let account_jwt = jwt(
            &operator,
            &account.public_key(),
            "trellis-test",
            serde_json::json!({"type": "account", "version": 2, "limits": limits}),
        );
        let user_jwt = jwt(
            &account,
            &user.public_key(),
            "trellis-test-user",
            serde_json::json!({"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}),
        );
        let user_seed = user.seed().expect("user seed");
        let creds_file = dir.join("user.creds");
        std::fs::write(
            &creds_file,
            format!(
                "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
                 -----BEGIN USER NKEY SEED-----\n{user_seed}\n------END USER NKEY SEED------\n"
            ),
        )
        .expect("creds file");
        let config = format!(
            "operator: {operator_jwt}\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {sys}: {system_jwt}\n  {acc}: {account_jwt}\n}}\n\
             tls {{\n  cert_file: {cert:?}\n  key_file: {key:?}\n}}\n",
            sys = system.public_key(),
            acc = account.public_key(),
        );
        let server = OwnNats::start_with_config(&config);
        Self {
            server,
            creds_file,
            ca_file,
            user_jwt,
            user_seed,
            dir,
        }
    }

    /// Its client URL (TLS).
    pub fn url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.server.port)
    }
}

impl Drop for SecureNats {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A JWT of `claims` (`nats` section) about `subject`, signed by `issuer`.
fn jwt(issuer: &KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    trellis_sdk::nats_jwt::encode(issuer, subject, name, nats).expect("sign")
}
