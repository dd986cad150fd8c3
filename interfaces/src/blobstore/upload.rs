//! `write-container-data` served by hand: its `stream<u8>` parameter is read in bounded
//! pieces ([`BoundedBytes`], not up to 128 of the sender's chunks), and how the
//! upload ended reaches the handler — an [`Upload`]'s last item is an error when the caller
//! went away or sent a malformed stream, so a handler never stores half an object as if it
//! were whole.
//!
//! The generated `serve` serves every function of the interface together; [`serve`]
//! takes its invocations, drops the generated one for this function (which unsubscribes it)
//! and subscribes this one in its place.

use std::pin::Pin;

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use trellis_wrpc_nats::wrpc_transport::{ByteStream, ServeExt as _};
use trellis_wrpc_nats::{CallPacer, Incoming, Outgoing};
use wrpc_transport::Serve;

use super::bindings::wrpc::blobstore0_2_0::types as wt;
use super::bounded::BoundedBytes;
use super::{Done, Handler, INSTANCE, ObjectId, Upload};
use crate::Invocations;

/// The function served here.
pub(super) const FUNC: &str = "write-container-data";

/// The generated invocations with `write-container-data` served by this module instead.
pub(super) async fn serve<S, H>(
    server: &S,
    handler: H,
    generated: Invocations,
) -> anyhow::Result<Invocations>
where
    S: Serve<Incoming = Incoming, Outgoing = Outgoing>,
    S::Context: CallPacer + Send + 'static,
    H: Handler<S::Context>,
{
    let mut invocations: Invocations = generated
        .into_iter()
        .filter(|(_, func, _)| *func != FUNC)
        .collect();
    // The upload stream is parameter 1.
    let paths: [Box<[Option<usize>]>; 1] = [Box::from([Some(1)])];
    let calls = server
        .serve_values::<(wt::ObjectId, BoundedBytes), (Result<Done, String>,)>(
            INSTANCE, FUNC, paths,
        )
        .await?;
    let calls = calls.map_ok(move |(cx, (id, BoundedBytes(data)), io, send)| {
        let handler = handler.clone();
        Box::pin(async move {
            let id = ObjectId::new(id.container, id.object);
            let upload = watched(data, io.map(tokio::spawn));
            let answer = handler.write_container_data(cx, id, upload).await;
            send((answer,)).await.context("failed to send the answer")
        }) as Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>
    });
    invocations.push((INSTANCE, FUNC, Box::pin(calls)));
    Ok(invocations)
}

/// `data`, then an error item if `io` (which reads it) failed.
fn watched(data: ByteStream, io: Option<tokio::task::JoinHandle<std::io::Result<()>>>) -> Upload {
    let outcome = futures::stream::once(async move {
        let io = io?;
        match io.await {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(Err(format!("the upload failed: {err}"))),
            Err(err) => Some(Err(format!("the upload's reader failed: {err}"))),
        }
    })
    .filter_map(futures::future::ready);
    data.map(Ok).chain(outcome).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn a_failed_upload_ends_with_an_error_item() {
        let data: ByteStream = Box::pin(futures::stream::iter([Bytes::from("abc")]));
        let io = tokio::spawn(async {
            Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "byte stream ended before its end marker",
            ))
        });
        let items: Vec<_> = watched(data, Some(io)).collect().await;
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_deref(), Ok(&b"abc"[..]));
        assert!(
            items[1].as_ref().is_err_and(|e| e.contains("end marker")),
            "{items:?}"
        );

        let data: ByteStream = Box::pin(futures::stream::iter([Bytes::from("abc")]));
        let io = tokio::spawn(async { Ok(()) });
        let items: Vec<_> = watched(data, Some(io)).collect().await;
        assert_eq!(items, [Ok(Bytes::from("abc"))]);
    }
}
