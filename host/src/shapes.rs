//! The wire shapes of a component's export parameters, from the component's own types.
//!
//! The host serves exports through `wrpc-runtime-wasmtime`, whose reader reserves room for a
//! list's elements (and a resource handle's bytes) as the length prefix says, before reading
//! any: a forged five-byte prefix on any list parameter would make the host ask for hundreds
//! of GiB and abort. The server checks each call's parameters against these shapes once they
//! are buffered, before the reader sees them (see `trellis_wrpc_nats::wire_shape`).

use trellis_wrpc_nats::wire_shape::{ParamChecks, Shape};
use wasmtime::component::types::{ComponentFunc, Type};

/// Checks for the parameters of `functions` (instance, export name, type), under the names
/// they are served as. Left unchecked: a function taking a resource (the runtime carries
/// `wasi:io` streams as nested byte streams, other resources as handles: their wire form
/// depends on instantiation), or a parameter the wire cannot carry (futures, streams, maps,
/// error contexts: the runtime refuses those calls by itself).
pub(crate) fn param_checks<'a>(
    functions: impl IntoIterator<Item = (&'a str, &'a str, &'a ComponentFunc)>,
) -> ParamChecks {
    functions.into_iter().fold(
        ParamChecks::new(),
        |checks, (instance, func, ty)| match params(ty) {
            Some(shape) => checks.shape(instance, served_name(func), shape),
            None => checks,
        },
    )
}

/// The name `wrpc-runtime-wasmtime` serves an export function as: without the
/// `[constructor]`, `[static]` or `[method]` of resource functions.
fn served_name(func: &str) -> &str {
    ["[constructor]", "[static]", "[method]"]
        .iter()
        .find_map(|prefix| func.strip_prefix(prefix))
        .unwrap_or(func)
}

/// The shape of a function's parameters: a tuple of them.
fn params(func: &ComponentFunc) -> Option<Shape> {
    func.params()
        .map(|(_, ty)| shape(&ty))
        .collect::<Option<Vec<_>>>()
        .map(Shape::Seq)
}

/// The shape of a value of `ty`, as `wrpc-runtime-wasmtime` reads it.
fn shape(ty: &Type) -> Option<Shape> {
    Some(match ty {
        Type::Bool | Type::S8 | Type::U8 => Shape::Byte,
        Type::S16 | Type::U16 | Type::S32 | Type::U32 | Type::S64 | Type::U64 => Shape::Leb,
        Type::Float32 => Shape::F32,
        Type::Float64 => Shape::F64,
        Type::Char => Shape::Char,
        Type::String => Shape::Bytes,
        Type::List(list) => Shape::List(Box::new(shape(&list.ty())?)),
        Type::Record(record) => Shape::Seq(
            record
                .fields()
                .map(|f| shape(&f.ty))
                .collect::<Option<_>>()?,
        ),
        Type::Tuple(tuple) => Shape::Seq(tuple.types().map(|t| shape(&t)).collect::<Option<_>>()?),
        Type::Variant(variant) => Shape::Variant(
            variant
                .cases()
                .map(|c| c.ty.as_ref().map(shape).map_or(Some(None), |s| s.map(Some)))
                .collect::<Option<_>>()?,
        ),
        Type::Enum(e) => Shape::Variant(vec![None; e.names().len()]),
        Type::Option(o) => Shape::Option(Box::new(shape(&o.ty())?)),
        Type::Result(r) => {
            let payload = |t: Option<Type>| match t {
                Some(t) => shape(&t).map(|s| Some(Box::new(s))),
                None => Some(None),
            };
            Shape::Result(payload(r.ok())?, payload(r.err())?)
        }
        Type::Flags(f) => Shape::Flags(f.names().len().max(1)),
        Type::Own(_)
        | Type::Borrow(_)
        | Type::Map(_)
        | Type::Future(_)
        | Type::Stream(_)
        | Type::ErrorContext => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_functions_are_keyed_as_served() {
        assert_eq!(served_name("[static]counter.make"), "counter.make");
        assert_eq!(served_name("[constructor]counter"), "counter");
        assert_eq!(served_name("[method]counter.get"), "counter.get");
        assert_eq!(served_name("echo"), "echo");
    }
}
