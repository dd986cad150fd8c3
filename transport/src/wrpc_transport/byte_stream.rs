//! A `stream<u8>` decoder whose memory the receiver sets, not the sender.
//!
//! `wrpc_transport` decodes a pending `stream<u8>` with a task that reads each chunk whole
//! (a `list<u8>` of whatever length the sender chose, up to 4 GiB) and queues up to 128 of
//! them for the reader. What a slow reader holds is then 128 times the sender's chunk size,
//! beyond the transport's flow window: 8 MiB for 64 KiB chunks, and without limit for a
//! sender that declares one huge chunk.
//!
//! [`ByteStreamDecoder`] reads the same encoding but hands bytes on as they arrive, in pieces
//! of at most [`PIECE`] bytes, through a queue of [`QUEUE`] pieces: a slow reader holds at
//! most about `(QUEUE + 2) × PIECE` bytes here (the queue, a piece waiting to be queued, the
//! read buffer), whatever the sender does, and the transport's
//! flow control holds the rest back at the sender.

use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;
use wasm_tokio::{CoreVecDecoderBytes, Leb128DecoderU32};
use wrpc_transport::{Deferred, DeferredFn, Incoming, Index};

/// The largest piece of a stream handed on at once.
pub const PIECE: usize = 64 << 10;

/// How many pieces wait for the reader before the stream stops reading.
pub const QUEUE: usize = 4;

/// A reader's buffer is refilled in place while it has at least this much room left.
const MIN_READ: usize = 4 << 10;

/// A decoded `stream<u8>`: its bytes, in order, in pieces of at most [`PIECE`] bytes.
///
/// The stream ends when the sender's stream ends, and also when it fails: the call's pending
/// I/O future (which runs the decoding) carries the error.
pub type ByteStream = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

/// Decodes a `stream<u8>` as a [`ByteStream`], with the bounded memory described in the
/// [module](self) docs. Reads what `wrpc_transport`'s decoder for
/// `Pin<Box<dyn Stream<Item = Bytes> + Send>>` reads, so it can stand in for it in
/// hand-written decoders of values that contain streams.
pub struct ByteStreamDecoder<R> {
    head: CoreVecDecoderBytes,
    deferred: Option<DeferredFn<Incoming<R>>>,
}

impl<R> Default for ByteStreamDecoder<R> {
    fn default() -> Self {
        Self {
            head: CoreVecDecoderBytes::default(),
            deferred: None,
        }
    }
}

impl<R> Deferred<Incoming<R>> for ByteStreamDecoder<R> {
    fn take_deferred(&mut self) -> Option<DeferredFn<Incoming<R>>> {
        self.deferred.take()
    }
}

impl<R> Decoder for ByteStreamDecoder<R>
where
    R: AsyncRead + Index<R> + Send + Unpin + 'static,
{
    type Item = ByteStream;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<ByteStream>, std::io::Error> {
        // A ready stream carries its bytes inline; a pending one is an empty list, its
        // chunks following on the value's own nested stream.
        let Some(ready) = self.head.decode(src)? else {
            return Ok(None);
        };
        if !ready.is_empty() {
            return Ok(Some(Box::pin(futures::stream::iter([ready]))));
        }
        let (tx, mut rx) = mpsc::channel(QUEUE);
        self.deferred = Some(Box::new(|r: Incoming<R>, path: Vec<usize>| {
            Box::pin(async move {
                let r = if path.is_empty() {
                    r
                } else {
                    r.index(&path).map_err(std::io::Error::other)?
                };
                pump(r, tx).await
            })
        }));
        Ok(Some(Box::pin(futures::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
        }))))
    }
}

/// Reads the chunks of a pending `stream<u8>` from `r` (each a `list<u8>`, the empty one
/// ending the stream) and sends their bytes to `tx` as they arrive. Stops reading while `tx`
/// is full; a dropped receiver ends it without error.
async fn pump<R: AsyncRead + Unpin>(mut r: R, tx: mpsc::Sender<Bytes>) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    // Bytes of the current chunk not yet handed on.
    let mut left = 0usize;
    loop {
        if left == 0 {
            match Leb128DecoderU32.decode(&mut buf)? {
                Some(0) => return Ok(()),
                Some(n) => left = usize::try_from(n).map_err(std::io::Error::other)?,
                None => {
                    fill(&mut r, &mut buf).await?;
                    continue;
                }
            }
        }
        if buf.is_empty() {
            fill(&mut r, &mut buf).await?;
        }
        let piece = buf.split_to(left.min(buf.len())).freeze();
        left -= piece.len();
        if tx.send(piece).await.is_err() {
            return Ok(()); // nobody reads the stream any more
        }
    }
}

/// Reads at most [`PIECE`] more bytes into `buf`; the end of `r` is an error here, since the
/// stream's end marker has not come.
async fn fill<R: AsyncRead + Unpin>(r: &mut R, buf: &mut BytesMut) -> std::io::Result<()> {
    if buf.capacity() - buf.len() < MIN_READ {
        buf.reserve(PIECE);
    }
    let room = PIECE.saturating_sub(buf.len()).max(1);
    let n = r.take(room as u64).read_buf(buf).await?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "byte stream ended before its end marker",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};

    use futures::StreamExt as _;
    use tokio::io::ReadBuf;

    /// The wire form of a pending stream's chunks: each a `list<u8>`, then the end marker.
    fn chunks(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            leb(&mut out, part.len() as u32);
            out.extend_from_slice(part);
        }
        out.push(0);
        out
    }

    fn leb(out: &mut Vec<u8>, mut n: u32) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    /// Serves `data`, then (if `endless`) zeros for ever; counts what was read.
    struct Source {
        data: Vec<u8>,
        at: usize,
        endless: bool,
        read: Arc<AtomicUsize>,
    }

    impl Source {
        fn new(data: Vec<u8>, endless: bool) -> (Self, Arc<AtomicUsize>) {
            let read = Arc::new(AtomicUsize::new(0));
            let source = Self {
                data,
                at: 0,
                endless,
                read: Arc::clone(&read),
            };
            (source, read)
        }
    }

    impl AsyncRead for Source {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = if self.at < self.data.len() {
                let n = buf.remaining().min(self.data.len() - self.at);
                let at = self.at;
                buf.put_slice(&self.data[at..at + n]);
                n
            } else if self.endless {
                let n = buf.remaining();
                buf.put_slice(&vec![0; n]);
                n
            } else {
                0
            };
            self.at += n;
            self.read.fetch_add(n, Ordering::Relaxed);
            Poll::Ready(Ok(()))
        }
    }

    /// Runs the pump over `source` and collects what it hands on.
    async fn collect(source: Source) -> (Vec<Bytes>, std::io::Result<()>) {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let pumping = tokio::spawn(pump(source, tx));
        let mut got = Vec::new();
        while let Some(piece) = rx.recv().await {
            got.push(piece);
        }
        (got, pumping.await.expect("pump panicked"))
    }

    #[tokio::test]
    async fn chunks_of_any_size_arrive_intact_in_bounded_pieces() {
        let big: Vec<u8> = (0..3 * PIECE + 17).map(|i| (i % 251) as u8).collect();
        let wire = chunks(&[b"a", &big, b"tail"]);
        let (source, _) = Source::new(wire, false);
        let (got, res) = collect(source).await;
        res.expect("stream ends cleanly");
        assert!(got.iter().all(|p| !p.is_empty() && p.len() <= PIECE));
        let all: Vec<u8> = got.iter().flat_map(|p| p.iter().copied()).collect();
        let mut want = b"a".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"tail");
        assert!(all == want, "bytes differ");
    }

    #[tokio::test]
    async fn a_stream_cut_before_its_end_marker_fails() {
        let mut wire = chunks(&[b"hello"]);
        wire.pop(); // the end marker
        let (source, _) = Source::new(wire, false);
        let (got, res) = collect(source).await;
        assert_eq!(got.concat(), b"hello");
        assert_eq!(res.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
    }

    /// A sender declaring one 4 GiB chunk and sending without end, to a reader that takes
    /// nothing: the pump stops after a few pieces instead of buffering the chunk.
    #[tokio::test]
    async fn a_huge_chunk_to_a_reader_that_waits_is_held_in_a_few_pieces() {
        let mut wire = Vec::new();
        leb(&mut wire, u32::MAX);
        let (source, read) = Source::new(wire, true);
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let pumping = tokio::spawn(pump(source, tx));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let held = read.load(Ordering::Relaxed);
        assert!(
            held <= (QUEUE + 2) * PIECE,
            "{held} bytes read ahead of a reader that took none"
        );
        assert!(held >= QUEUE * PIECE / 2, "only {held} bytes were read");
        // The reader goes away: the pump stops cleanly.
        assert!(rx.recv().await.is_some());
        drop(rx);
        pumping
            .await
            .expect("pump panicked")
            .expect("a closed reader is no error");
    }

    #[tokio::test]
    async fn a_ready_stream_is_its_inline_bytes() {
        let mut src = BytesMut::from(&b"\x03abc"[..]);
        let mut dec = ByteStreamDecoder::<Source>::default();
        let stream = dec.decode(&mut src).expect("decodes").expect("complete");
        assert!(
            dec.take_deferred().is_none(),
            "nothing follows a ready stream"
        );
        let got = stream.collect::<Vec<_>>().await;
        assert_eq!(got, [Bytes::from_static(b"abc")]);
    }

    #[test]
    fn a_pending_stream_leaves_its_reading_deferred() {
        let mut src = BytesMut::from(&b"\x00"[..]);
        let mut dec = ByteStreamDecoder::<Source>::default();
        assert!(dec.decode(&mut src).expect("decodes").is_some());
        assert!(dec.take_deferred().is_some(), "the chunks are read later");
    }

    impl Index<Source> for Source {
        fn index(&self, _path: &[usize]) -> anyhow::Result<Source> {
            anyhow::bail!("no nested streams in this test")
        }
    }
}
