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

    fn http_request(
        method: String,
        url: String,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<(String, String)>, Vec<u8>), String> {
        outgoing::request(&method, &url, &body)
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

/// One request through `wasi:http/outgoing-handler`, written as a 1.x component would.
mod outgoing {
    use crate::wasi::http::outgoing_handler;
    use crate::wasi::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

    pub fn request(
        method: &str,
        url: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<(String, String)>, Vec<u8>), String> {
        let (scheme, rest) = url.split_once("://").ok_or("no scheme")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let request = OutgoingRequest::new(Fields::new());
        let method = match method {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            other => Method::Other(other.to_string()),
        };
        request.set_method(&method).map_err(|()| "method")?;
        let scheme = if scheme == "https" { Scheme::Https } else { Scheme::Http };
        request.set_scheme(Some(&scheme)).map_err(|()| "scheme")?;
        request.set_authority(Some(authority)).map_err(|()| "authority")?;
        request.set_path_with_query(Some(path)).map_err(|()| "path")?;
        let outgoing = request.body().map_err(|()| "body")?;
        let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
        {
            let stream = outgoing.write().map_err(|()| "write")?;
            for chunk in body.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| format!("write: {e:?}"))?;
            }
        }
        OutgoingBody::finish(outgoing, None).map_err(|e| format!("{e:?}"))?;
        pending.subscribe().block();
        let response = pending
            .get()
            .ok_or("not ready")?
            .map_err(|()| "taken")?
            .map_err(|e| format!("{e:?}"))?;
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let incoming = response.consume().map_err(|()| "consume")?;
        let stream = incoming.stream().map_err(|()| "stream")?;
        let mut data = Vec::new();
        loop {
            match stream.blocking_read(64 << 10) {
                Ok(chunk) => data.extend_from_slice(&chunk),
                Err(crate::wasi::io::streams::StreamError::Closed) => break,
                Err(e) => return Err(format!("read: {e:?}")),
            }
        }
        Ok((response.status(), headers, data))
    }
}
