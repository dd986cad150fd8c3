//! The smallest `wasi:http` handler: `hello from trellis` for every request.
//!
//! The http-server benchmark runs it behind the provider and the host, under
//! `wasmtime serve`, and compares both with a plain hyper server answering the same bytes.
//! It imports nothing beyond `wasi:http/proxy`, so every runtime can serve it.

wit_bindgen::generate!({
    path: "../wit",
    world: "trellis-test:components/hello-component",
    generate_all,
});

use exports::wasi::http::incoming_handler::Guest;
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

const BODY: &[u8] = b"hello from trellis\n";

struct Hello;

impl Guest for Hello {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let headers = Fields::from_list(&[
            ("content-type".to_string(), b"text/plain".to_vec()),
            ("content-length".to_string(), BODY.len().to_string().into_bytes()),
        ])
        .expect("valid headers");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("body taken once");
        ResponseOutparam::set(out, Ok(response));
        {
            let stream = body.write().expect("stream taken once");
            stream.blocking_write_and_flush(BODY).expect("write body");
        }
        OutgoingBody::finish(body, None).expect("finish body");
    }
}

export!(Hello);
