//! What a wasmCloud 1.x component gets from the host beyond its links, with real providers:
//! `wasmcloud:bus/lattice` (both versions) choosing between two named `wasi:keyvalue` links
//! — one to keyvalue-redis, one to keyvalue-nats — for one invocation, with the data landing
//! in the backend chosen; `wasi:config/runtime`; both `wasi:logging` packages; and
//! `wasmcloud:secrets` answering the secrets granted with the component.

mod support;

use std::collections::HashMap;

use redis::AsyncCommands as _;
use trellis_conformance::lattice::ProviderProcess;
use trellis_host::Host;
use trellis_host::secrets::{SecretValue, Secrets};
use trellis_sdk::store::StoredLink;
use trellis_tests as common;
use trellis_tests::components::trellis_test::components::compat;
use trellis_wrpc_nats::Client;

const COMPAT_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../components/prebuilt/compat.wasm"
);

const KV: [&str; 3] = ["store", "atomics", "batch"];

fn unique(tag: &str) -> String {
    format!("{tag}{}", &common::unique_lattice("")[1..9])
}

fn config(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Both keyvalue providers on one lattice, a host, and the compat component linked to
/// keyvalue-redis as `default` and to keyvalue-nats as `nats`, bucket `data` mapped to
/// `redis_prefix` and to the JetStream bucket `nats_bucket`.
struct Setup {
    _redis: ProviderProcess,
    _nats: ProviderProcess,
    _host: Host,
    _component: trellis_host::RunningComponent,
    client: Client,
    redis_prefix: String,
    nats_bucket: String,
}

async fn setup() -> Setup {
    let lattice = common::unique_lattice("compat");
    let redis = ProviderProcess::start_in("keyvalue-redis", "kv-redis", &lattice, &[]).await;
    let nats = ProviderProcess::start_in("keyvalue-nats", "kv-nats", &lattice, &[]).await;
    let redis_prefix = format!("{}:", unique("compat"));
    let nats_bucket = unique("COMPAT_");
    async_nats::jetstream::new(common::nats().await)
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: nats_bucket.clone(),
            history: 1,
            ..Default::default()
        })
        .await
        .expect("KV bucket");
    let store = &redis.store;
    let redis_cfg = config(&[
        ("url", &common::redis_url()),
        ("bucket.data", &format!("/{redis_prefix}")),
    ]);
    store.put_config("to-redis", &redis_cfg).await.unwrap();
    let nats_cfg = config(&[("bucket.data", &nats_bucket)]);
    store.put_config("to-nats", &nats_cfg).await.unwrap();
    let own = config(&[("name", "compat"), ("colour", "blue")]);
    store.put_config("compat-own", &own).await.unwrap();
    let host = support::host(&lattice).await;
    let links = [
        StoredLink::new("compat", "kv-redis", "wasi", "keyvalue", KV)
            .with_target_config(["to-redis"]),
        StoredLink::new("compat", "kv-nats", "wasi", "keyvalue", KV)
            .named("nats")
            .with_target_config(["to-nats"]),
    ];
    for link in links {
        host.admin().put_link(link).await.unwrap();
    }
    let secrets = Secrets::from([
        ("api-key".to_string(), SecretValue::String("s3cr3t".into())),
        ("blob".to_string(), SecretValue::Bytes(vec![1, 2, 0xfe])),
    ]);
    let component = host
        .start_component_granted("compat", COMPAT_WASM, &["compat-own".into()], secrets)
        .await
        .unwrap();
    let client = support::caller(&lattice, "compat").await;
    // Ready once both links are served.
    common::eventually(|| compat::kv_get_via(&client, None, "nats", "data", "probe"))
        .await
        .unwrap()
        .expect("the nats link is served");
    common::eventually(|| compat::kv_get(&client, None, "data", "probe"))
        .await
        .unwrap()
        .expect("the default link is served");
    Setup {
        _redis: redis,
        _nats: nats,
        _host: host,
        _component: component,
        client,
        redis_prefix,
        nats_bucket,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_link_name_switches_between_two_backends_for_one_invocation() {
    let s = setup().await;
    let c = &s.client;
    let mut redis =
        redis::aio::ConnectionManager::new(redis::Client::open(common::redis_url()).unwrap())
            .await
            .unwrap();
    let kv = async_nats::jetstream::new(common::nats().await)
        .get_key_value(&s.nats_bucket)
        .await
        .unwrap();

    // bus@2.0.1 picks `nats`: the value is in JetStream, not in Redis.
    compat::kv_set_via(c, None, "nats", true, "data", "k", "in-nats")
        .await
        .unwrap()
        .unwrap();
    let in_js = kv.get("k").await.unwrap().expect("written to JetStream");
    assert_eq!(&in_js[..], b"in-nats");
    let in_redis: Option<String> = redis.get(format!("{}k", s.redis_prefix)).await.unwrap();
    assert_eq!(in_redis, None);

    // The choice lasted one invocation: the next one reads the default link (Redis).
    let got = compat::kv_get(c, None, "data", "k").await.unwrap().unwrap();
    assert_eq!(got, None);

    // bus@1.0.0 picks `default` explicitly: Redis.
    compat::kv_set_via(c, None, "default", false, "data", "k", "in-redis")
        .await
        .unwrap()
        .unwrap();
    let in_redis: Option<String> = redis.get(format!("{}k", s.redis_prefix)).await.unwrap();
    assert_eq!(in_redis.as_deref(), Some("in-redis"));
    let got = compat::kv_get_via(c, None, "nats", "data", "k")
        .await
        .unwrap();
    assert_eq!(got.unwrap().as_deref(), Some("in-nats"));
    let got = compat::kv_get(c, None, "data", "k").await.unwrap();
    assert_eq!(got.unwrap().as_deref(), Some("in-redis"));

    // A name with no link: @2.0.1 says so and changes nothing; @1.0.0 has no error to give
    // and ignores it (as 1.x does), so the default link is used.
    let err = compat::choose_link(c, None, "nope")
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.contains("does not have a link named `nope`"), "{err}");
    let err = compat::kv_set_via(c, None, "nope", true, "data", "k2", "x")
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.contains("wasi:keyvalue/store"), "{err}");
    compat::kv_set_via(c, None, "nope", false, "data", "k2", "v1-default")
        .await
        .unwrap()
        .unwrap();
    let in_redis: Option<String> = redis.get(format!("{}k2", s.redis_prefix)).await.unwrap();
    assert_eq!(in_redis.as_deref(), Some("v1-default"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_runtime_logging_and_secrets_answer_as_in_1x() {
    let s = setup().await;
    let c = &s.client;
    let (colour, all) = compat::runtime_config(c, None, "colour")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(colour.as_deref(), Some("blue"));
    assert_eq!(
        all,
        [
            ("colour".to_string(), "blue".to_string()),
            ("name".to_string(), "compat".to_string())
        ]
    );
    let (absent, _) = compat::runtime_config(c, None, "absent")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(absent, None);

    compat::log_both(c, None, "from both logging packages")
        .await
        .unwrap();

    let secret = compat::secret(c, None, "api-key").await.unwrap();
    assert_eq!(secret.as_deref(), Ok("s3cr3t"));
    let secret = compat::secret(c, None, "blob").await.unwrap();
    assert_eq!(secret.as_deref(), Ok("0102fe"));
    let missing = compat::secret(c, None, "not-granted").await.unwrap();
    assert_eq!(missing, Err("SecretsError::NotFound".to_string()));
}
