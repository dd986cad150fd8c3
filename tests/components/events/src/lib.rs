//! The example event counter: every message a messaging provider delivers increments the
//! count of its subject in `wasi:keyvalue`; `GET /counts` answers every subject's count, one
//! `subject count` line each, sorted by subject.
//!
//! Named config (through `wasi:config`): `bucket` (default `events`). The messages come from
//! whatever provider links to the component's `wasmcloud:messaging/handler` —
//! messaging-nats in `examples/events/app.yaml`, messaging-kafka the same way.

wit_bindgen::generate!({
    path: "wit",
    world: "trellis-example:events/events",
    generate_all,
});

use exports::wasi::http::incoming_handler::Guest as Http;
use exports::wasmcloud::messaging::handler::Guest as Handler;
use wasi::config::store as config;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::keyvalue::{atomics, store};
use wasmcloud::messaging::types::BrokerMessage;

/// Keys of counts start with this; the rest is the subject.
const PREFIX: &str = "count.";

struct Events;

impl Handler for Events {
    fn handle_message(msg: BrokerMessage) -> Result<(), String> {
        let bucket = bucket()?;
        atomics::increment(&bucket, &format!("{PREFIX}{}", msg.subject), 1)
            .map(drop)
            .map_err(|e| describe(&e))
    }
}

impl Http for Events {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (status, text) = match (request.method(), path.as_str()) {
            (Method::Get, "/counts") => match counts() {
                Ok(text) => (200, text),
                Err(err) => (502, format!("cannot read the counts: {err}\n")),
            },
            _ => (404, "GET /counts\n".to_string()),
        };
        respond(out, status, text.as_bytes());
    }
}

fn bucket() -> Result<store::Bucket, String> {
    let name = config::get("bucket")
        .ok()
        .flatten()
        .unwrap_or_else(|| "events".to_string());
    store::open(&name).map_err(|e| describe(&e))
}

/// Every subject's count, `subject count` per line, sorted.
fn counts() -> Result<String, String> {
    let bucket = bucket()?;
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let page = bucket.list_keys(cursor).map_err(|e| describe(&e))?;
        keys.extend(page.keys.into_iter().filter(|k| k.starts_with(PREFIX)));
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    keys.sort();
    let mut text = String::new();
    for key in keys {
        // Adding nothing reads a counter as the number it is, whatever its stored form.
        let count = atomics::increment(&bucket, &key, 0).map_err(|e| describe(&e))?;
        text.push_str(&format!("{} {count}\n", &key[PREFIX.len()..]));
    }
    Ok(text)
}

fn describe(err: &store::Error) -> String {
    match err {
        store::Error::NoSuchStore => "no such store".to_string(),
        store::Error::AccessDenied => "access denied".to_string(),
        store::Error::Other(text) => text.clone(),
    }
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::from_list(&[
        ("content-type".to_string(), b"text/plain".to_vec()),
        ("content-length".to_string(), body.len().to_string().into_bytes()),
    ]);
    let Ok(headers) = headers else {
        ResponseOutparam::set(out, Err(wasi::http::types::ErrorCode::InternalError(None)));
        return;
    };
    let response = OutgoingResponse::new(headers);
    // A fresh response accepts any valid status and hands out its body once; a failure here
    // is a host bug, and trapping turns it into a 500 at the front door.
    response.set_status_code(status).expect("valid status");
    let outgoing = response.body().expect("body taken once");
    ResponseOutparam::set(out, Ok(response));
    {
        let stream = outgoing.write().expect("stream taken once");
        for chunk in body.chunks(4096) {
            stream.blocking_write_and_flush(chunk).expect("write body");
        }
    }
    OutgoingBody::finish(outgoing, None).expect("finish body");
}

export!(Events);
