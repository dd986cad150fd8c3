//! Components loaded by reference: a path, a `file://` URL, an `http://` URL (through a
//! redirect), and clear errors for a missing file, a 404 and an unsupported scheme.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use trellis_host::load_component;

const ECHO_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/components/prebuilt/echo.wasm"
);

/// A tiny HTTP/1.1 server: `/old` redirects to `/echo.wasm`, which is served; anything
/// else is 404. One request per connection.
async fn serve(listener: TcpListener, wasm: Vec<u8>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            return;
        };
        let wasm = wasm.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => n += k,
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            let response: Vec<u8> = match path.as_str() {
                "/old" => b"HTTP/1.1 302 Found\r\nlocation: /echo.wasm\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec(),
                "/echo.wasm" => {
                    let mut r = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", wasm.len()).into_bytes();
                    r.extend_from_slice(&wasm);
                    r
                }
                _ => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec(),
            };
            let _ = conn.write_all(&response).await;
            let _ = conn.shutdown().await;
        });
    }
}

#[tokio::test]
async fn components_load_from_paths_and_urls() {
    let wasm = std::fs::read(ECHO_WASM).unwrap();
    assert_eq!(load_component(ECHO_WASM).await.unwrap(), wasm);
    assert_eq!(
        load_component(&format!("file://{ECHO_WASM}"))
            .await
            .unwrap(),
        wasm
    );

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, wasm.clone()));
    let fetched = load_component(&format!("http://{addr}/old")).await.unwrap();
    assert!(fetched == wasm, "downloaded bytes differ");

    let err = load_component(&format!("http://{addr}/missing.wasm"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("404"), "{err}");
    let err = load_component("/nonexistent/x.wasm")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/x.wasm"), "{err}");
    let err = load_component("ftp://example.test/x.wasm")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("ftp://example.test/x.wasm"), "{err}");
}
