//! `wrpc_transport` as code generated for Trellis should see it: everything of that crate,
//! with a leaner [`InvokeExt`] for the calls generated clients make.
//!
//! `wit-bindgen-wrpc` generates every client function as a call to
//! `wrpc_transport::InvokeExt::invoke_values{,_blocking}`, which sets up a `FramedRead` per
//! call to decode the results. Its 8 KiB read buffer is the one large allocation of a small
//! call, and glibc's allocator serves a request that large only after merging the free small
//! chunks: in the keyvalue bench's caller, malloc and free were a fifth of the SDK client's
//! CPU. This [`InvokeExt`] makes the same call with a buffer that starts small and grows with
//! the results (a keyvalue get: 8% fewer instructions per call), in a smaller future.
//!
//! Generate bindings against it with `wrpc_transport_path`:
//!
//! ```
//! mod bindings {
//!     wit_bindgen_wrpc::generate!({
//!         inline: "
//!             package example:hello;
//!             interface greeter { greet: func(name: string) -> string; }
//!             world client { import greeter; }
//!         ",
//!         wrpc_transport_path: "::trellis_wrpc_nats::wrpc_transport",
//!     });
//! }
//! ```
//!
//! Functions with async results (streams, futures) keep `wrpc_transport`'s own path: their
//! results are read on after the call returns, through its buffered reader.
//!
//! Both traits apply to every [`Invoke`]r, so a scope that calls `invoke_values` as a method
//! imports one of them, not both.
//!
//! Hand-written decoders of values holding a `stream<u8>` can use [`ByteStreamDecoder`] for
//! it: a slow reader then holds a few pieces of the stream, not up to 128 of the sender's
//! chunks (see [`byte_stream`]).

use std::future::Future;
use std::pin::{Pin, pin};

use anyhow::Context as _;
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::codec::{Decoder, Encoder as _};

pub use wrpc_transport::*;

pub mod byte_stream;
pub use byte_stream::{ByteStream, ByteStreamDecoder};

mod record;
pub use record::{FieldSlot, fields_deferred};

/// The I/O a call still has to do after its results arrived: sending async parameters, or
/// receiving async results.
pub type PendingIo = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'static>>;

/// What a result buffer starts at: enough for most small results, and small enough for every
/// allocator's per-thread cache.
const RESULTS_BUFFER: usize = 256;

/// Typed invocation over any [`Invoke`], as `wrpc_transport::InvokeExt` offers it, for
/// generated clients (see the [module](self) docs).
pub trait InvokeExt: Invoke + Sized {
    /// Invokes `func` of `instance` with typed `params`; returns the typed results and,
    /// when the call has I/O left (async parameters still being sent, async results to
    /// receive), a future doing it.
    fn invoke_values<P, Params, Results>(
        &self,
        cx: Self::Context,
        instance: &str,
        func: &str,
        params: Params,
        paths: impl AsRef<[P]> + Send,
    ) -> impl Future<Output = anyhow::Result<(Results, Option<PendingIo>)>> + Send
    where
        P: AsRef<[Option<usize>]> + Send + Sync,
        Params: TupleEncode<Self::Outgoing> + Send,
        Results: TupleDecode<Self::Incoming> + Send,
        <Params::Encoder as tokio_util::codec::Encoder<Params>>::Error:
            std::error::Error + Send + Sync + 'static,
        <Results::Decoder as Decoder>::Error: std::error::Error + Send + Sync + 'static,
    {
        async move {
            if !paths.as_ref().is_empty() {
                // Async results are read after this returns, from the buffered reader only
                // `wrpc_transport` can build. Boxed: its state would otherwise make every
                // call's future larger, and futures are moved whole.
                let (results, io) = Box::pin(wrpc_transport::InvokeExt::invoke_values(
                    self, cx, instance, func, params, paths,
                ))
                .await?;
                return Ok((results, io.map(|io| Box::pin(io) as PendingIo)));
            }
            let mut buf = BytesMut::new();
            let mut enc = Params::Encoder::default();
            enc.encode(params, &mut buf)
                .context("failed to encode parameters")?;
            let (mut outgoing, mut incoming) = self
                .invoke(cx, instance, func, buf.freeze(), paths)
                .await
                .context("failed to invoke function")?;
            outgoing
                .shutdown()
                .await
                .context("failed to shutdown synchronous parameter channel")?;
            // Async parameters are written beside the wait for the results.
            let mut tx = enc.take_deferred().map(|send| {
                tokio::spawn(async move {
                    send(outgoing, Vec::new())
                        .await
                        .context("failed to write async parameters")
                })
            });
            let mut dec = Results::Decoder::default();
            let results = match tx.take() {
                None => read_results(&mut incoming, &mut dec).await?,
                Some(mut sending) => {
                    let mut results = pin!(read_results(&mut incoming, &mut dec));
                    tokio::select! {
                        res = &mut results => {
                            // Results first: the parameters finish as pending I/O.
                            tx = Some(sending);
                            res?
                        }
                        sent = &mut sending => {
                            sent.context("transmitting async parameters failed")??;
                            results.await?
                        }
                    }
                }
            };
            if dec.take_deferred().is_some() {
                anyhow::bail!(
                    "the results of `{instance}.{func}` have async parts but the call named none"
                );
            }
            let io = tx.map(|sending| {
                Box::pin(async move {
                    sending
                        .await
                        .context("transmitting async parameters failed")?
                }) as PendingIo
            });
            Ok((results, io))
        }
    }

    /// Like [`invoke_values`](Self::invoke_values), returning once all of the call's I/O is
    /// done.
    fn invoke_values_blocking<P, Params, Results>(
        &self,
        cx: Self::Context,
        instance: &str,
        func: &str,
        params: Params,
        paths: impl AsRef<[P]> + Send,
    ) -> impl Future<Output = anyhow::Result<Results>> + Send
    where
        P: AsRef<[Option<usize>]> + Send + Sync,
        Params: TupleEncode<Self::Outgoing> + Send,
        Results: TupleDecode<Self::Incoming> + Send,
        <Params::Encoder as tokio_util::codec::Encoder<Params>>::Error:
            std::error::Error + Send + Sync + 'static,
        <Results::Decoder as Decoder>::Error: std::error::Error + Send + Sync + 'static,
    {
        async move {
            // This module's `InvokeExt`, named: `wrpc_transport`'s applies to `Self` too.
            let (results, io) =
                InvokeExt::invoke_values(self, cx, instance, func, params, paths).await?;
            if let Some(io) = io {
                io.await?;
            }
            Ok(results)
        }
    }
}

impl<T: Invoke> InvokeExt for T {}

/// Reads from `rx` until `dec` has decoded one value, with a buffer that grows only as far as
/// the value needs. Reads before decoding, and decodes at the end of the stream once more,
/// as `FramedRead` does.
async fn read_results<R, D>(rx: &mut R, dec: &mut D) -> anyhow::Result<D::Item>
where
    R: AsyncRead + Unpin,
    D: Decoder,
    D::Error: std::error::Error + Send + Sync + 'static,
{
    let mut buf = BytesMut::with_capacity(RESULTS_BUFFER);
    loop {
        if buf.capacity() == buf.len() {
            buf.reserve(buf.len().max(RESULTS_BUFFER));
        }
        let n = rx
            .read_buf(&mut buf)
            .await
            .context("failed to receive sync results")?;
        if n == 0 {
            return dec
                .decode_eof(&mut buf)
                .context("failed to receive sync results")?
                .context("incomplete results");
        }
        if let Some(value) = dec
            .decode(&mut buf)
            .context("failed to receive sync results")?
        {
            return Ok(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::stream;
    use tokio_util::codec::LengthDelimitedCodec;
    use tokio_util::io::StreamReader;

    /// A reader handing out `data` in chunks of `chunk` bytes, as messages arrive.
    fn chunked(data: Vec<u8>, chunk: usize) -> impl AsyncRead + Unpin {
        let chunks: Vec<std::io::Result<Bytes>> = data
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        StreamReader::new(stream::iter(chunks))
    }

    /// `value` framed with a 4-byte length, as `LengthDelimitedCodec` reads it.
    fn framed(value: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(value.len()).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(value);
        out
    }

    #[tokio::test]
    async fn a_value_arriving_a_byte_at_a_time_is_decoded_whole() {
        let mut rx = chunked(framed(b"hello"), 1);
        let got = read_results(&mut rx, &mut LengthDelimitedCodec::new()).await;
        assert_eq!(got.unwrap(), &b"hello"[..]);
    }

    #[tokio::test]
    async fn a_value_far_larger_than_the_first_buffer_is_decoded_intact() {
        let value: Vec<u8> = (0..RESULTS_BUFFER * 400).map(|i| (i % 251) as u8).collect();
        let mut rx = chunked(framed(&value), 7_000);
        let got = read_results(&mut rx, &mut LengthDelimitedCodec::new()).await;
        assert!(got.unwrap() == value, "value corrupted");
    }

    #[tokio::test]
    async fn bytes_after_the_value_do_not_change_it() {
        let mut data = framed(b"one");
        data.extend(framed(b"two"));
        let mut rx = chunked(data, 64);
        let got = read_results(&mut rx, &mut LengthDelimitedCodec::new()).await;
        assert_eq!(got.unwrap(), &b"one"[..]);
    }

    #[tokio::test]
    async fn a_stream_ending_mid_value_is_an_error() {
        let mut data = framed(b"truncated");
        data.truncate(7);
        let mut rx = chunked(data, 3);
        let err = read_results(&mut rx, &mut LengthDelimitedCodec::new())
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("failed to receive sync results"),
            "{err:#}"
        );
    }

    #[tokio::test]
    async fn an_empty_stream_is_incomplete_results() {
        let mut rx = chunked(Vec::new(), 1);
        let err = read_results(&mut rx, &mut LengthDelimitedCodec::new())
            .await
            .unwrap_err();
        assert_eq!(format!("{err:#}"), "incomplete results");
    }
}
