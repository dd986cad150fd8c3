//! The shapes of wRPC values, to check a call's synchronous parameters before any decoder
//! sees them.
//!
//! `wrpc_transport` decodes a list of compound values (tuples, records, variants, options,
//! results, futures, streams) by first reserving room for as many elements as the list's
//! length prefix declares. The prefix comes from the peer: five bytes declaring 2³² − 1
//! tuples make the decoder ask for hundreds of GiB at once, and the process aborts (an
//! allocation failure is not a panic). Lists of bytes, strings, numbers, enums and flags
//! are decoded without reserving and are not affected.
//!
//! A [`Shape`] describes how a value is laid out on the wire; [`check`] walks a buffer
//! against it and fails at the first length that cannot be true (every element of a list
//! takes at least one byte, so a list cannot declare more elements than there are bytes
//! left) or at the first byte that does not fit. The transport's server runs it on the
//! parameters of the functions registered in [`ParamChecks`] once they are all buffered,
//! before the call reaches its decoder: see
//! [`Server::with_param_checks`](crate::Server::with_param_checks).
//!
//! On the calling side, results arrive in pieces and their end is known only by decoding
//! them: [`Checked`] wraps a decoder so that it sees a value only once the buffer holds all
//! of it. A forged length then just waits for bytes that never come, and the call fails as
//! incomplete when the stream ends.
//!
//! ```
//! use bytes::Bytes;
//! use trellis_wrpc_nats::wire_shape::{ParamChecks, check, WireShape};
//!
//! // `set-many: func(bucket: borrow<bucket>, key-values: list<tuple<string, list<u8>>>)`
//! type SetMany = (Bytes, Vec<(String, Bytes)>);
//! let checks = ParamChecks::new().function::<SetMany>("wasi:keyvalue/batch@0.2.0-draft", "set-many");
//! let shape = checks.get("wasi:keyvalue/batch@0.2.0-draft", "set-many").unwrap();
//! // A handle `b`, then a list declaring 2^32 - 1 tuples with nothing behind it.
//! let err = check(&shape, b"\x01b\xff\xff\xff\xff\x0f").unwrap_err();
//! assert!(err.to_string().contains("4294967295 elements"), "{err}");
//! assert!(check(&SetMany::shape(), b"\x01b\x01\x01k\x02v1").is_ok());
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use wrpc_transport::Decode;

/// How a value is laid out in wRPC's encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One byte: `bool`, `u8`, `s8`.
    Byte,
    /// A LEB128 integer: `u16` to `u64`, `s16` to `s64`.
    Leb,
    /// Four bytes: `f32`.
    F32,
    /// Eight bytes: `f64`.
    F64,
    /// One UTF-8 encoded scalar: `char`.
    Char,
    /// A length, then that many bytes: `string`, `list<u8>`, a resource handle, and a
    /// `stream<u8>` (an empty one is pending, its bytes follow on a nested stream).
    Bytes,
    /// A length, then that many values: `list<T>`.
    List(Box<Shape>),
    /// Values one after the other: `tuple<…>`, `record`.
    Seq(Vec<Shape>),
    /// A byte 0 (none) or 1 then the value: `option<T>`.
    Option(Box<Shape>),
    /// A byte 0 then the ok payload, or 1 then the error payload: `result<T, E>`.
    Result(Option<Box<Shape>>, Option<Box<Shape>>),
    /// A LEB128 case index, then the case's payload: `variant`; an `enum` has no payloads.
    Variant(Vec<Option<Shape>>),
    /// As many bytes as it takes to hold this many bits: `flags`.
    Flags(usize),
    /// A byte 0 (pending: the value follows on a nested stream) or 1 then the value:
    /// `future<T>`.
    Future(Box<Shape>),
    /// A list of values, the empty one pending: `stream<T>` for `T` other than `u8`.
    Stream(Box<Shape>),
}

/// Why a buffer does not hold a value of its shape.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShapeError {
    /// A list or byte string declares more elements than bytes are left.
    #[error("a length of {declared} elements at byte {at}, with only {left} bytes left")]
    TooLong {
        /// The declared length.
        declared: u64,
        /// Where the length starts.
        at: usize,
        /// The bytes left after it.
        left: usize,
    },
    /// The buffer ends inside a value.
    #[error("the value ends early, at byte {at}")]
    Short {
        /// Where more bytes were needed.
        at: usize,
    },
    /// A byte that no value of the shape can have there.
    #[error("byte {at} is not a valid {what}")]
    Invalid {
        /// Where.
        at: usize,
        /// What was expected.
        what: &'static str,
    },
}

/// Checks that `buf` begins with a value of `shape`; returns the bytes it takes.
pub fn check(shape: &Shape, buf: &[u8]) -> Result<usize, ShapeError> {
    let mut walker = Walker { buf, at: 0 };
    walker.value(shape)?;
    Ok(walker.at)
}

struct Walker<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Walker<'_> {
    fn left(&self) -> usize {
        self.buf.len() - self.at
    }

    fn byte(&mut self) -> Result<u8, ShapeError> {
        let b = *self
            .buf
            .get(self.at)
            .ok_or(ShapeError::Short { at: self.at })?;
        self.at += 1;
        Ok(b)
    }

    fn skip(&mut self, n: usize) -> Result<(), ShapeError> {
        if n > self.left() {
            return Err(ShapeError::Short { at: self.buf.len() });
        }
        self.at += n;
        Ok(())
    }

    /// A LEB128 integer of at most 64 bits.
    fn leb(&mut self) -> Result<u64, ShapeError> {
        let start = self.at;
        let mut value = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ShapeError::Invalid {
            at: start,
            what: "LEB128 integer",
        })
    }

    /// A length prefix, checked against the bytes left (each element takes at least one).
    fn len(&mut self) -> Result<usize, ShapeError> {
        let at = self.at;
        let declared = self.leb()?;
        let left = self.left();
        match usize::try_from(declared) {
            Ok(n) if n <= left => Ok(n),
            _ => Err(ShapeError::TooLong { declared, at, left }),
        }
    }

    fn tag(&mut self, what: &'static str) -> Result<bool, ShapeError> {
        let at = self.at;
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(ShapeError::Invalid { at, what }),
        }
    }

    fn value(&mut self, shape: &Shape) -> Result<(), ShapeError> {
        match shape {
            Shape::Byte => self.skip(1),
            Shape::Leb => self.leb().map(drop),
            Shape::F32 => self.skip(4),
            Shape::F64 => self.skip(8),
            Shape::Char => {
                let at = self.at;
                let n = match self.byte()? {
                    0x00..=0x7f => 0,
                    0xc0..=0xdf => 1,
                    0xe0..=0xef => 2,
                    0xf0..=0xf7 => 3,
                    _ => return Err(ShapeError::Invalid { at, what: "char" }),
                };
                self.skip(n)
            }
            Shape::Bytes => {
                let n = self.len()?;
                self.skip(n)
            }
            Shape::List(elem) | Shape::Stream(elem) => {
                for _ in 0..self.len()? {
                    self.value(elem)?;
                }
                Ok(())
            }
            Shape::Seq(fields) => fields.iter().try_for_each(|f| self.value(f)),
            Shape::Option(inner) => {
                if self.tag("option tag")? {
                    self.value(inner)?;
                }
                Ok(())
            }
            Shape::Result(ok, err) => {
                let payload = if self.tag("result tag")? { err } else { ok };
                match payload {
                    Some(p) => self.value(p),
                    None => Ok(()),
                }
            }
            Shape::Variant(cases) => {
                let at = self.at;
                let case = self.leb()?;
                let payload = usize::try_from(case)
                    .ok()
                    .and_then(|c| cases.get(c))
                    .ok_or(ShapeError::Invalid {
                        at,
                        what: "case index",
                    })?;
                match payload {
                    Some(p) => self.value(p),
                    None => Ok(()),
                }
            }
            Shape::Flags(bits) => self.skip(bits.div_ceil(8)),
            Shape::Future(inner) => {
                if self.tag("future tag")? {
                    self.value(inner)?;
                }
                Ok(())
            }
        }
    }
}

/// A decoder handing `D` only whole values of one shape: while the buffer holds less than a
/// whole value, or less than a length prefix declares, it asks for more bytes, so `D` never
/// reserves room for elements that have not arrived. Walks the buffer again on each read
/// that could complete the value (a forged count is walked once): meant for values of a few
/// messages (header fields, a result), not for bulk streams.
pub struct Checked<D> {
    shape: Shape,
    inner: D,
    /// The buffer cannot hold a whole value before it has this many bytes: a forged count
    /// costs one walk, not one per read.
    need: usize,
}

impl<D> Checked<D> {
    /// `inner`, given only whole values of `shape`.
    pub fn new(shape: Shape, inner: D) -> Self {
        Self {
            shape,
            inner,
            need: 0,
        }
    }
}

impl<D> tokio_util::codec::Decoder for Checked<D>
where
    D: tokio_util::codec::Decoder,
    D::Error: From<std::io::Error>,
{
    type Item = D::Item;
    type Error = D::Error;

    fn decode(&mut self, src: &mut bytes::BytesMut) -> Result<Option<D::Item>, D::Error> {
        if src.len() < self.need {
            return Ok(None);
        }
        match check(&self.shape, src) {
            Ok(_) => {
                self.need = 0;
                self.inner.decode(src)
            }
            // More bytes may still come; if they do not, the stream's end fails the call.
            Err(ShapeError::Short { .. }) => {
                self.need = src.len() + 1;
                Ok(None)
            }
            Err(ShapeError::TooLong { at, declared, .. }) => {
                // The elements alone take at least `declared` bytes after the length.
                let declared = usize::try_from(declared).unwrap_or(usize::MAX);
                self.need = at.saturating_add(declared);
                Ok(None)
            }
            Err(err @ ShapeError::Invalid { .. }) => {
                Err(std::io::Error::new(std::io::ErrorKind::InvalidData, err).into())
            }
        }
    }
}

impl<D: wrpc_transport::Deferred<T>, T> wrpc_transport::Deferred<T> for Checked<D> {
    fn take_deferred(&mut self) -> Option<wrpc_transport::DeferredFn<T>> {
        self.inner.take_deferred()
    }
}

/// A value decoded only once all its bytes are here (with [`Checked`]). For a value from a
/// peer whose generated decoder reserves room up front (a list of tuples, records, options,
/// …): `Whole<Vec<(String, Bytes)>>` decodes what `Vec<(String, Bytes)>` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Whole<T>(pub T);

/// Decodes a [`Whole`].
pub struct WholeDecoder<T: Decode<R>, R> {
    inner: Checked<T::Decoder>,
}

impl<T: Decode<R> + WireShape, R> Default for WholeDecoder<T, R> {
    fn default() -> Self {
        Self {
            inner: Checked::new(T::shape(), T::Decoder::default()),
        }
    }
}

impl<T: Decode<R>, R> tokio_util::codec::Decoder for WholeDecoder<T, R>
where
    <T::Decoder as tokio_util::codec::Decoder>::Error: From<std::io::Error>,
{
    type Item = Whole<T>;
    type Error = <T::Decoder as tokio_util::codec::Decoder>::Error;

    fn decode(&mut self, src: &mut bytes::BytesMut) -> Result<Option<Whole<T>>, Self::Error> {
        Ok(self.inner.decode(src)?.map(Whole))
    }
}

impl<T: Decode<R>, R> wrpc_transport::Deferred<wrpc_transport::Incoming<R>> for WholeDecoder<T, R> {
    fn take_deferred(&mut self) -> Option<wrpc_transport::DeferredFn<wrpc_transport::Incoming<R>>> {
        self.inner.take_deferred()
    }
}

impl<T, R> Decode<R> for Whole<T>
where
    T: Decode<R> + WireShape + Send + 'static,
    <T::Decoder as tokio_util::codec::Decoder>::Error: From<std::io::Error>,
    R: wrpc_transport::Index<R> + Send + Sync + 'static,
{
    type Decoder = WholeDecoder<T, R>;
    type ListDecoder = wrpc_transport::ListDecoder<WholeDecoder<T, R>, R>;
}

/// A Rust type's [`Shape`] on the wire, as `wrpc_transport` and `wit-bindgen-wrpc` encode
/// it. Implemented for the types generated code uses for WIT's built-in types; implement it
/// for generated records and variants by listing their fields or cases in order.
pub trait WireShape {
    /// The shape of a value of this type.
    fn shape() -> Shape;
}

macro_rules! shape_of {
    ($shape:expr => $($t:ty),*) => {
        $(impl WireShape for $t {
            fn shape() -> Shape {
                $shape
            }
        })*
    };
}

shape_of!(Shape::Byte => bool, u8, i8);
shape_of!(Shape::Leb => u16, u32, u64, i16, i32, i64);
shape_of!(Shape::F32 => f32);
shape_of!(Shape::F64 => f64);
shape_of!(Shape::Char => char);
shape_of!(Shape::Bytes => String, Bytes);

impl<T: WireShape> WireShape for Vec<T> {
    fn shape() -> Shape {
        Shape::List(Box::new(T::shape()))
    }
}

impl<T: WireShape> WireShape for Option<T> {
    fn shape() -> Shape {
        Shape::Option(Box::new(T::shape()))
    }
}

/// `()` is the absent payload of a `result`.
impl WireShape for () {
    fn shape() -> Shape {
        Shape::Seq(Vec::new())
    }
}

impl<T: WireShape, E: WireShape> WireShape for Result<T, E> {
    fn shape() -> Shape {
        let payload = |s: Shape| (s != Shape::Seq(Vec::new())).then(|| Box::new(s));
        Shape::Result(payload(T::shape()), payload(E::shape()))
    }
}

impl<T: ?Sized> WireShape for wrpc_transport::ResourceBorrow<T> {
    fn shape() -> Shape {
        Shape::Bytes
    }
}

impl<T: ?Sized> WireShape for wrpc_transport::ResourceOwn<T> {
    fn shape() -> Shape {
        Shape::Bytes
    }
}

impl<T: WireShape> WireShape for Pin<Box<dyn Future<Output = T> + Send>> {
    fn shape() -> Shape {
        Shape::Future(Box::new(T::shape()))
    }
}

impl WireShape for Pin<Box<dyn Stream<Item = Bytes> + Send>> {
    fn shape() -> Shape {
        Shape::Bytes
    }
}

impl<T: WireShape> WireShape for Pin<Box<dyn Stream<Item = Vec<T>> + Send>> {
    fn shape() -> Shape {
        Shape::Stream(Box::new(T::shape()))
    }
}

macro_rules! tuple_shape {
    ($($t:ident),+) => {
        impl<$($t: WireShape),+> WireShape for ($($t,)+) {
            fn shape() -> Shape {
                Shape::Seq(vec![$($t::shape()),+])
            }
        }
    };
}

tuple_shape!(A);
tuple_shape!(A, B);
tuple_shape!(A, B, C);
tuple_shape!(A, B, C, D);
tuple_shape!(A, B, C, D, E);
tuple_shape!(A, B, C, D, E, F);
tuple_shape!(A, B, C, D, E, F, G);
tuple_shape!(A, B, C, D, E, F, G, H);
tuple_shape!(A, B, C, D, E, F, G, H, I);
tuple_shape!(A, B, C, D, E, F, G, H, I, J);
tuple_shape!(A, B, C, D, E, F, G, H, I, J, K);
tuple_shape!(A, B, C, D, E, F, G, H, I, J, K, L);

/// The parameter shapes of the functions whose calls a server checks, by instance and
/// function name.
#[derive(Clone, Debug, Default)]
pub struct ParamChecks {
    by_function: HashMap<(String, String), Arc<Shape>>,
}

impl ParamChecks {
    /// No checks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the parameters of `func` of `instance` as the tuple `P` of its parameter types.
    pub fn function<P: WireShape>(self, instance: &str, func: &str) -> Self {
        self.shape(instance, func, P::shape())
    }

    /// Checks the parameters of `func` of `instance` against `shape`.
    pub fn shape(mut self, instance: &str, func: &str, shape: Shape) -> Self {
        self.by_function
            .insert((instance.to_owned(), func.to_owned()), Arc::new(shape));
        self
    }

    /// The shape registered for `func` of `instance`, if any.
    pub fn get(&self, instance: &str, func: &str) -> Option<Arc<Shape>> {
        // Few functions are registered; a lookup allocates nothing.
        self.by_function
            .iter()
            .find(|((i, f), _)| i == instance && f == func)
            .map(|(_, shape)| Arc::clone(shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use tokio_util::codec::{Decoder as _, Encoder as _};
    use wrpc_transport::Encode;

    use crate::Outgoing;

    /// `value` as the `wrpc_transport` encoder writes it.
    fn encoded<T: Encode<Outgoing>>(value: T) -> Vec<u8>
    where
        <T::Encoder as tokio_util::codec::Encoder<T>>::Error: std::fmt::Debug,
    {
        let mut dst = BytesMut::new();
        T::Encoder::default()
            .encode(value, &mut dst)
            .expect("encodes");
        dst.to_vec()
    }

    /// Whatever `wrpc_transport` encodes, the type's shape accepts whole.
    #[test]
    fn encoded_values_fit_their_shapes() {
        type Many = (
            bool,
            u16,
            i64,
            f32,
            f64,
            char,
            String,
            Bytes,
            Vec<(String, Bytes)>,
        );
        let many: Many = (
            true,
            300,
            -70_000,
            1.5,
            -2.25,
            'é',
            "text".into(),
            Bytes::from_static(b"\0\xff"),
            vec![
                ("a".into(), Bytes::from_static(b"1")),
                ("".into(), Bytes::new()),
            ],
        );
        let bytes = encoded(many);
        assert_eq!(check(&Many::shape(), &bytes), Ok(bytes.len()));

        type Nested = (
            Option<Vec<Option<u32>>>,
            Result<(), String>,
            Result<Vec<(u8, char)>, ()>,
            Vec<Vec<String>>,
        );
        let nested: Nested = (
            Some(vec![Some(1), None, Some(u32::MAX)]),
            Err("no".into()),
            Ok(vec![(7, '☃')]),
            vec![vec!["x".into()], vec![]],
        );
        let bytes = encoded(nested);
        assert_eq!(check(&Nested::shape(), &bytes), Ok(bytes.len()));
    }

    #[test]
    fn a_list_longer_than_the_bytes_left_is_refused_before_its_elements() {
        let shape = Vec::<(String, Bytes)>::shape();
        assert_eq!(
            check(&shape, b"\xff\xff\xff\xff\x0f\x00"),
            Err(ShapeError::TooLong {
                declared: u64::from(u32::MAX),
                at: 0,
                left: 1
            })
        );
        // A string, too, cannot be longer than what is left.
        assert!(matches!(
            check(&String::shape(), b"\x05abc"),
            Err(ShapeError::TooLong { declared: 5, .. })
        ));
    }

    #[test]
    fn cut_values_and_foreign_bytes_are_refused() {
        let shape = <(Option<u8>, u16)>::shape();
        assert_eq!(check(&shape, b"\x01"), Err(ShapeError::Short { at: 1 }));
        assert_eq!(
            check(&shape, b"\x02\x00\x00"),
            Err(ShapeError::Invalid {
                at: 0,
                what: "option tag"
            })
        );
        // An unterminated LEB128 integer.
        assert!(matches!(
            check(&u64::shape(), &[0x80; 11]),
            Err(ShapeError::Invalid { at: 0, .. })
        ));
        // A case index the variant does not have.
        let variant = Shape::Variant(vec![None, Some(Shape::Bytes)]);
        assert!(check(&variant, b"\x01\x01x").is_ok());
        assert!(matches!(
            check(&variant, b"\x02"),
            Err(ShapeError::Invalid { at: 0, .. })
        ));
    }

    #[test]
    fn pending_async_values_take_one_byte() {
        let shape = <(
            Pin<Box<dyn Stream<Item = Bytes> + Send>>,
            Pin<Box<dyn Future<Output = Option<String>> + Send>>,
        )>::shape();
        assert_eq!(check(&shape, b"\x00\x00"), Ok(2));
        // Both ready: the stream's bytes inline, the future's value after its tag.
        assert_eq!(check(&shape, b"\x02ab\x01\x01\x01c"), Ok(7));
    }

    /// A whole value's decoder waits through a forged length instead of passing it on, and
    /// decodes a real value once its last byte is here.
    #[test]
    fn whole_values_are_decoded_only_once_all_here() {
        type Pairs = Whole<Vec<(String, Bytes)>>;
        let mut dec = <Pairs as Decode<crate::Incoming>>::Decoder::default();
        let mut forged = BytesMut::from(&b"\xff\xff\xff\xff\x0f\x01k"[..]);
        assert!(dec.decode(&mut forged).expect("no error yet").is_none());
        assert!(dec.decode_eof(&mut forged).is_err(), "the end fails it");

        let mut dec = <Pairs as Decode<crate::Incoming>>::Decoder::default();
        let value = vec![("k".to_string(), Bytes::from_static(b"v"))];
        let whole = encoded(value.clone());
        let mut src = BytesMut::new();
        for (i, b) in whole.iter().enumerate() {
            src.extend_from_slice(&[*b]);
            let got = dec.decode(&mut src).expect("decodes");
            assert_eq!(got.is_some(), i + 1 == whole.len(), "at byte {i}");
            if let Some(got) = got {
                assert_eq!(got, Whole(value.clone()));
            }
        }
        // A byte no value of the shape can have is an error at once.
        let mut dec = <Whole<(Option<u8>,)> as Decode<crate::Incoming>>::Decoder::default();
        assert!(dec.decode(&mut BytesMut::from(&b"\x07\x01"[..])).is_err());
    }

    #[test]
    fn registered_functions_are_found_by_instance_and_name() {
        let checks = ParamChecks::new().function::<(String,)>("a:b/c@1.0.0", "f");
        assert_eq!(
            checks.get("a:b/c@1.0.0", "f").as_deref(),
            Some(&Shape::Seq(vec![Shape::Bytes]))
        );
        assert!(checks.get("a:b/c@1.0.0", "g").is_none());
    }
}
