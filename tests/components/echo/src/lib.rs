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
use wasi::logging::logging;

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
}

export!(Echo);
