//! The example file store: files uploaded and downloaded over HTTP, kept in a
//! `wasi:blobstore` container. Bodies stream both ways — an upload goes to the blobstore as
//! it arrives and a download leaves as the blobstore sends it — so file size is not bounded
//! by the component's memory.
//!
//! Routes (`NAME` may contain `/`; `%XX` escapes are decoded; a malformed escape, or a name
//! with an empty, `.` or `..` part, is `400`):
//! - `PUT /files/NAME` — stores the request body: `201` and `stored NAME (N bytes)`.
//! - `GET /files/NAME` — the file, with its `content-length`; `404` if there is none.
//! - `DELETE /files/NAME` — removes it: `204`.
//! - `GET /files/` — the names stored, one per line.
//!
//! Named config (through `wasi:config`): `container` (default `files`), created on first use.
//! Whatever the component's `wasi:blobstore` link points at holds the files — blobstore-fs in
//! `examples/files/app.yaml`, blobstore-s3 or blobstore-azure the same way.

wit_bindgen::generate!({
    path: "wit",
    world: "trellis-example:files/files",
    generate_all,
});

use exports::wasi::http::incoming_handler::Guest;
use wasi::blobstore::blobstore;
use wasi::blobstore::container::Container;
use wasi::blobstore::types::{IncomingValue, OutgoingValue};
use wasi::config::store as config;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::{InputStream, OutputStream, StreamError};

/// Bytes moved per splice.
const CHUNK: u64 = 256 << 10;

struct Files;

impl Guest for Files {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let path = path.split('?').next().unwrap_or_default();
        let Some(name) = path.strip_prefix("/files/") else {
            return text(out, 404, "not found: files live under /files/\n");
        };
        let name = match percent_decode(name) {
            Some(name) => name,
            None => return text(out, 400, "bad %-escape in the name\n"),
        };
        if !name.is_empty() && !plain_name(&name) {
            return text(
                out,
                400,
                "bad name: no empty, '.' or '..' parts, no control characters\n",
            );
        }
        let container = match container() {
            Ok(c) => c,
            Err(e) => return text(out, 502, &format!("blobstore: {e}\n")),
        };
        match (request.method(), name.is_empty()) {
            (Method::Get, true) => list(&container, out),
            (Method::Put, false) => upload(&container, &name, request, out),
            (Method::Get, false) => download(&container, &name, out),
            (Method::Delete, false) => match container.delete_object(&name) {
                Ok(()) => text(out, 204, ""),
                Err(e) => text(out, 502, &format!("blobstore: {e}\n")),
            },
            _ => text(out, 405, "use GET /files/, or PUT, GET or DELETE /files/NAME\n"),
        }
    }
}

/// The configured container, created if it does not exist yet.
fn container() -> Result<Container, String> {
    let name = config::get("container")
        .ok()
        .flatten()
        .unwrap_or_else(|| "files".to_string());
    match blobstore::container_exists(&name)? {
        true => blobstore::get_container(&name),
        false => blobstore::create_container(&name),
    }
}

/// Streams the request body into object `name`.
fn upload(container: &Container, name: &str, request: IncomingRequest, out: ResponseOutparam) {
    let stored = (|| -> Result<u64, String> {
        let body = request.consume().map_err(|()| "no request body")?;
        let input = body.stream().map_err(|()| "no request body stream")?;
        let value = OutgoingValue::new_outgoing_value();
        let output = value
            .outgoing_value_write_body()
            .map_err(|()| "no blobstore body")?;
        container.write_data(name, &value)?;
        let moved = pump(&input, &output);
        drop(output);
        drop(input);
        let moved = moved?;
        OutgoingValue::finish(value)?;
        Ok(moved)
    })();
    match stored {
        Ok(n) => text(out, 201, &format!("stored {name} ({n} bytes)\n")),
        Err(e) => text(out, 502, &format!("not stored: {e}\n")),
    }
}

/// Streams object `name` out as the response body.
fn download(container: &Container, name: &str, out: ResponseOutparam) {
    let size = match container.object_info(name) {
        Ok(info) => info.size,
        Err(e) if !container.has_object(name).unwrap_or(true) => {
            return text(out, 404, &format!("no file {name}: {e}\n"));
        }
        Err(e) => return text(out, 502, &format!("blobstore: {e}\n")),
    };
    let headers = [
        ("content-type", b"application/octet-stream".to_vec()),
        ("content-length", size.to_string().into_bytes()),
    ];
    if size == 0 {
        return respond(out, 200, &headers, |_| Ok(()));
    }
    let input = match container
        .get_data(name, 0, size - 1)
        .and_then(IncomingValue::incoming_value_consume_async)
    {
        Ok(input) => input,
        Err(e) => return text(out, 502, &format!("blobstore: {e}\n")),
    };
    respond(out, 200, &headers, |output| match pump(&input, output)? {
        n if n == size => Ok(()),
        n => Err(format!("the blobstore sent {n} of {size} bytes")),
    });
}

/// The container's object names, one per line.
fn list(container: &Container, out: ResponseOutparam) {
    let names = (|| -> Result<String, String> {
        let stream = container.list_objects()?;
        let mut all = String::new();
        loop {
            let (names, end) = stream.read_stream_object_names(1000)?;
            for name in names {
                all.push_str(&name);
                all.push('\n');
            }
            if end {
                return Ok(all);
            }
        }
    })();
    match names {
        Ok(names) => text(out, 200, &names),
        Err(e) => text(out, 502, &format!("blobstore: {e}\n")),
    }
}

/// Moves everything from `input` to `output`; the number of bytes.
fn pump(input: &InputStream, output: &OutputStream) -> Result<u64, String> {
    let mut moved = 0;
    loop {
        match output.blocking_splice(input, CHUNK) {
            Ok(n) => moved += n,
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => return Err(e.to_debug_string()),
        }
    }
    output
        .blocking_flush()
        .map_err(|e| format!("flush: {e:?}"))?;
    Ok(moved)
}

/// Whether `name` is an ordinary file name: `/`-separated parts, none empty, `.` or `..`,
/// no control characters. Refused here with a plain `400` (the blobstore provider refuses
/// them too, but its refusal would read as a backend failure).
fn plain_name(name: &str) -> bool {
    !name.chars().any(char::is_control)
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// `%XX` escapes decoded; `None` if one is malformed or the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn text(out: ResponseOutparam, status: u16, body: &str) {
    let headers = [
        ("content-type", b"text/plain; charset=utf-8".to_vec()),
        ("content-length", body.len().to_string().into_bytes()),
    ];
    respond(out, status, &headers, |output| {
        for chunk in body.as_bytes().chunks(4096) {
            output
                .blocking_write_and_flush(chunk)
                .map_err(|e| format!("{e:?}"))?;
        }
        Ok(())
    });
}

/// Sends the response head, then lets `write` produce the body; a body that fails midway is
/// ended with an error, so the client sees a cut response, not a complete one.
fn respond(
    out: ResponseOutparam,
    status: u16,
    headers: &[(&str, Vec<u8>)],
    write: impl FnOnce(&OutputStream) -> Result<(), String>,
) {
    let list: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let Ok(fields) = Fields::from_list(&list) else {
        ResponseOutparam::set(out, Err(wasi::http::types::ErrorCode::InternalError(None)));
        return;
    };
    let response = OutgoingResponse::new(fields);
    // A fresh response accepts any valid status and hands out its body once; a failure here
    // is a host bug, and trapping turns it into a 500 at the front door.
    response.set_status_code(status).expect("valid status");
    let body = response.body().expect("body taken once");
    ResponseOutparam::set(out, Ok(response));
    let written = {
        let stream = body.write().expect("stream taken once");
        write(&stream)
    };
    match written {
        Ok(()) => OutgoingBody::finish(body, None).expect("finish body"),
        // Dropping the body unfinished tells the host the response is incomplete.
        Err(_) => drop(body),
    }
}

export!(Files);
