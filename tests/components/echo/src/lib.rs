//! Test component for the host: echoes, calls an import routed over the lattice, reads its
//! named config, logs, and misbehaves on request (spins, hogs memory, traps).

wit_bindgen::generate!({
    path: "../wit",
    world: "trellis-test:components/echo-component",
    generate_all,
});

use exports::trellis_test::components::echo::Guest;
use trellis_test::greeter::greet;
use wasi::config::store as config;
use wasi::logging0_1_0_draft::logging;

struct Echo;

impl Guest for Echo {
    fn echo(x: String) -> String {
        x
    }

    fn greet_via_import(name: String) -> String {
        greet::greeting(&name)
    }

    fn config_value(key: String) -> Option<String> {
        config::get(&key).ok().flatten()
    }

    fn log(message: String) {
        logging::log(logging::Level::Info, "echo", &message);
    }

    fn spin() {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }

    fn hog(mib: u32) -> u32 {
        let mut blocks = Vec::new();
        for _ in 0..mib {
            let mut block = vec![0u8; 1 << 20];
            block[0] = 1;
            block[(1 << 20) - 1] = 1;
            blocks.push(block);
        }
        std::hint::black_box(&blocks);
        blocks.len() as u32
    }

    fn crash() {
        core::arch::wasm32::unreachable()
    }

    fn blob(container: String, object: String, size: u32) -> Result<String, String> {
        use wasi::blobstore::{blobstore, types};
        let pattern = |i: usize| (i % 251) as u8;
        let c = match blobstore::get_container(&container) {
            Ok(c) => c,
            Err(_) => blobstore::create_container(&container)?,
        };
        let value = types::OutgoingValue::new_outgoing_value();
        let body = value
            .outgoing_value_write_body()
            .map_err(|()| "no body".to_string())?;
        c.write_data(&object, &value)?;
        let data: Vec<u8> = (0..size as usize).map(pattern).collect();
        for chunk in data.chunks(4096) {
            body.blocking_write_and_flush(chunk)
                .map_err(|e| format!("write: {e:?}"))?;
        }
        drop(body);
        types::OutgoingValue::finish(value)?;

        let info = c.object_info(&object)?;
        let incoming = c.get_data(&object, 0, u64::from(size).saturating_sub(1))?;
        let stream = types::IncomingValue::incoming_value_consume_async(incoming)?;
        let mut read = 0usize;
        let mut mismatches = 0usize;
        loop {
            match stream.blocking_read(65536) {
                Ok(chunk) => {
                    for (i, b) in chunk.iter().enumerate() {
                        if *b != pattern(read + i) {
                            mismatches += 1;
                        }
                    }
                    read += chunk.len();
                }
                Err(wasi::io::streams::StreamError::Closed) => break,
                Err(e) => return Err(format!("read: {e:?}")),
            }
        }
        let names = c.list_objects()?;
        let (listed, _end) = names.read_stream_object_names(100)?;
        let had = c.has_object(&object)?;
        c.delete_object(&object)?;
        let gone = !c.has_object(&object)?;
        Ok(format!(
            "size={} read={read} mismatches={mismatches} listed={} had={had} gone={gone}",
            info.size,
            listed.join(",")
        ))
    }

    fn kv_get(bucket: String, key: String) -> Result<Option<Vec<u8>>, String> {
        use wasi::keyvalue::store;
        let b = store::open(&bucket).map_err(|e| format!("{e:?}"))?;
        b.get(&key).map_err(|e| format!("{e:?}"))
    }

    fn kv(bucket: String) -> Result<String, String> {
        use wasi::keyvalue::{atomics, batch, store};
        let e = |e: store::Error| format!("{e:?}");
        let b = store::open(&bucket).map_err(e)?;
        b.set("greeting", b"hello").map_err(e)?;
        let got = b
            .get("greeting")
            .map_err(e)?
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        let exists = b.exists("greeting").map_err(e)?;
        let counter = atomics::increment(&b, "counter", 5).map_err(e)?;
        batch::set_many(&b, &[("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())])
            .map_err(e)?;
        let many = batch::get_many(&b, &["a".into(), "b".into(), "zz".into()]).map_err(e)?;
        let found = many.iter().filter(|x| x.is_some()).count();
        let mut keys = b.list_keys(None).map_err(e)?.keys;
        keys.sort();
        b.delete("greeting").map_err(e)?;
        let deleted = !b.exists("greeting").map_err(e)?;
        Ok(format!(
            "get={} exists={exists} counter={counter} batch={found} keys={} deleted={deleted}",
            got.unwrap_or_default(),
            keys.join(",")
        ))
    }
}

export!(Echo);
