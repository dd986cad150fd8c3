//! Test component for the host: the interfaces a wasmCloud 1.x host links for components
//! that Trellis answers too — `wasmcloud:bus/lattice` (both versions) to pick a link,
//! `wasi:config/runtime`, both `wasi:logging` packages, and `wasmcloud:secrets`.

wit_bindgen::generate!({
    path: "../wit",
    world: "trellis-test:components/compat-component",
    generate_all,
});

use exports::trellis_test::components::compat::Guest;
use wasi::config::runtime;
use wasi::keyvalue::store;
use wasmcloud::bus1_0_0::lattice as lattice_v1;
use wasmcloud::bus2_0_1::lattice as lattice_v2;
use wasmcloud::secrets::{reveal, store as secrets};

struct Compat;

/// Chooses the link named `link` for `wasi:keyvalue/store` with bus @2.0.1.
fn choose_v2(link: &str) -> Result<(), String> {
    let store = lattice_v2::CallTargetInterface::new("wasi", "keyvalue", "store");
    lattice_v2::set_link_name(link, vec![store])
}

fn get(bucket: &str, key: &str) -> Result<Option<String>, String> {
    let bucket = store::open(bucket).map_err(|e| format!("open: {e:?}"))?;
    let value = bucket.get(key).map_err(|e| format!("get: {e:?}"))?;
    Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
}

impl Guest for Compat {
    fn kv_set_via(
        link: String,
        bus_v2: bool,
        bucket: String,
        key: String,
        value: String,
    ) -> Result<(), String> {
        if bus_v2 {
            choose_v2(&link)?;
        } else {
            let store = lattice_v1::CallTargetInterface::new("wasi", "keyvalue", "store");
            lattice_v1::set_link_name(&link, vec![store]);
        }
        let bucket = store::open(&bucket).map_err(|e| format!("open: {e:?}"))?;
        bucket
            .set(&key, value.as_bytes())
            .map_err(|e| format!("set: {e:?}"))
    }

    fn kv_get_via(link: String, bucket: String, key: String) -> Result<Option<String>, String> {
        choose_v2(&link)?;
        get(&bucket, &key)
    }

    fn kv_get(bucket: String, key: String) -> Result<Option<String>, String> {
        get(&bucket, &key)
    }

    fn choose_link(link: String) -> Result<(), String> {
        choose_v2(&link)
    }

    fn runtime_config(key: String) -> Result<(Option<String>, Vec<(String, String)>), String> {
        let value = runtime::get(&key).map_err(|e| format!("get: {e:?}"))?;
        let mut all = runtime::get_all().map_err(|e| format!("get-all: {e:?}"))?;
        all.sort();
        Ok((value, all))
    }

    fn secret(key: String) -> Result<String, String> {
        let secret = secrets::get(&key).map_err(|e| format!("{e:?}"))?;
        Ok(match reveal::reveal(&secret) {
            secrets::SecretValue::String(s) => s,
            secrets::SecretValue::Bytes(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
        })
    }

    fn log_both(message: String) {
        wasi::logging::logging::log(wasi::logging::logging::Level::Info, "unversioned", &message);
        wasi::logging0_1_0_draft::logging::log(
            wasi::logging0_1_0_draft::logging::Level::Info,
            "0.1.0-draft",
            &message,
        );
    }
}

export!(Compat);
