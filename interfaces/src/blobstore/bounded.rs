//! A `stream<u8>` value decoded in bounded pieces ([`ByteStreamDecoder`]): what both
//! directions of object data use instead of the generated decoder, which queues up to 128 of
//! the sender's chunks of whatever size it chose.

use tokio_util::codec::Decoder;
use trellis_wrpc_nats::Incoming;
use trellis_wrpc_nats::wrpc_transport::{
    ByteStream, ByteStreamDecoder, Decode, Deferred, DeferredFn,
};

/// Object data read in bounded pieces.
pub(super) struct BoundedBytes(pub(super) ByteStream);

/// Decodes [`BoundedBytes`].
#[derive(Default)]
pub(super) struct BoundedBytesDecoder(ByteStreamDecoder<Incoming>);

impl Decoder for BoundedBytesDecoder {
    type Item = BoundedBytes;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut bytes::BytesMut) -> std::io::Result<Option<BoundedBytes>> {
        Ok(self.0.decode(src)?.map(BoundedBytes))
    }
}

impl Deferred<wrpc_transport::Incoming<Incoming>> for BoundedBytesDecoder {
    fn take_deferred(&mut self) -> Option<DeferredFn<wrpc_transport::Incoming<Incoming>>> {
        self.0.take_deferred()
    }
}

impl Decode<Incoming> for BoundedBytes {
    type Decoder = BoundedBytesDecoder;
    type ListDecoder = wrpc_transport::ListDecoder<BoundedBytesDecoder, Incoming>;
}
