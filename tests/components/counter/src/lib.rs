//! The example HTTP counter: every `GET` increments a key in `wasi:keyvalue` and answers the
//! new count as text (`1`, `2`, `3`, …).
//!
//! Named config (through `wasi:config`) chooses where the count lives: `bucket` (default
//! `counter`) and `key` (default `count`). The bucket is opened through whatever the
//! component's `wasi:keyvalue` link points at — keyvalue-nats in `examples/counter/app.yaml`,
//! but keyvalue-redis or a wasmCloud 1.x provider serve it the same way.

wit_bindgen::generate!({
    path: "wit",
    world: "trellis-example:counter/counter",
    generate_all,
});

use exports::wasi::http::incoming_handler::Guest;
use wasi::config::store as config;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::keyvalue::{atomics, store};

struct Counter;

impl Guest for Counter {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let (status, text) = match request.method() {
            Method::Get => match increment() {
                Ok(count) => (200, format!("{count}\n")),
                // The error text is the provider's (no internals of ours), useful to a
                // developer trying the example.
                Err(err) => (500, format!("cannot count: {err}\n")),
            },
            _ => (405, "only GET counts\n".to_string()),
        };
        respond(out, status, text.as_bytes());
    }
}

/// Increments the configured key and returns its new value.
fn increment() -> Result<u64, String> {
    let setting = |name: &str, default: &str| {
        config::get(name)
            .ok()
            .flatten()
            .unwrap_or_else(|| default.to_string())
    };
    let bucket = store::open(&setting("bucket", "counter")).map_err(|e| describe(&e))?;
    atomics::increment(&bucket, &setting("key", "count"), 1).map_err(|e| describe(&e))
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
        stream.blocking_write_and_flush(body).expect("write body");
    }
    OutgoingBody::finish(outgoing, None).expect("finish body");
}

export!(Counter);
