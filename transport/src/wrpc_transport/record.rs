//! Records decoded by hand: what generated decoders do for a record's fields, for code that
//! decodes one of its fields differently (a bounded byte stream, a value checked whole).
//!
//! A decoder may be called several times on a growing buffer before a value is complete, so
//! each field keeps its value once decoded ([`FieldSlot`]); a record's async parts are read
//! on the nested streams of their fields ([`fields_deferred`]).

use bytes::BytesMut;
use tokio_util::codec::Decoder;
use wrpc_transport::{Deferred, DeferredFn, Incoming, Index};

/// One field of a record decoded by hand: its decoder, then its value and the reader of its
/// async part, once complete.
pub struct FieldSlot<D: Decoder, R> {
    dec: D,
    value: Option<D::Item>,
    deferred: Option<DeferredFn<Incoming<R>>>,
}

impl<D: Decoder + Default, R> Default for FieldSlot<D, R> {
    fn default() -> Self {
        Self {
            dec: D::default(),
            value: None,
            deferred: None,
        }
    }
}

impl<D: Decoder + Deferred<Incoming<R>>, R> FieldSlot<D, R> {
    /// Decodes the field from `src` unless it is complete already; `true` once it is. Decode
    /// a record's fields in order and stop at the first that is not complete.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<bool, D::Error> {
        if self.value.is_none() {
            let Some(value) = self.dec.decode(src)? else {
                return Ok(false);
            };
            self.deferred = self.dec.take_deferred();
            self.value = Some(value);
        }
        Ok(true)
    }

    /// The decoded value, once (`None` before the field is complete).
    pub fn take(&mut self) -> Option<D::Item> {
        self.value.take()
    }

    /// The reader of the field's async part, if it has one.
    pub fn take_deferred(&mut self) -> Option<DeferredFn<Incoming<R>>> {
        self.deferred.take()
    }
}

/// The async parts of a record or tuple decoded by hand, as one deferred read, the way
/// generated decoders read theirs: each part (`(field index, part)`) reads the nested stream
/// of its field, all of them at once. `None` when no part is async.
pub fn fields_deferred<R>(
    parts: impl IntoIterator<Item = (usize, Option<DeferredFn<Incoming<R>>>)>,
) -> Option<DeferredFn<Incoming<R>>>
where
    R: Index<R> + Send + 'static,
{
    let parts: Vec<_> = parts
        .into_iter()
        .filter_map(|(field, part)| part.map(|part| (field, part)))
        .collect();
    if parts.is_empty() {
        return None;
    }
    Some(Box::new(move |r: Incoming<R>, path: Vec<usize>| {
        Box::pin(async move {
            let mut running = Vec::with_capacity(parts.len());
            for (field, part) in parts {
                let mut at = path.clone();
                at.push(field);
                let rx = r.index(&at).map_err(std::io::Error::other)?;
                running.push(part(rx, Vec::new()));
            }
            futures::future::try_join_all(running).await.map(drop)
        })
    }))
}
