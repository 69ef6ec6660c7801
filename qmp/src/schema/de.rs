//! Deserializers the generated types use where serde's defaults differ from QEMU.
//!
//! - `uint64` and `size`: QEMU accepts a negative JSON integer ("for backward compatibility")
//!   and reinterprets its two's-complement bits, so `-1` becomes `u64::MAX`. Argument
//!   validation lets such values through like QEMU does; these make serde agree.
//! - Optional members whose type takes `null` (`any`, `null`, an alternate with a `null`
//!   branch): `"backing": null` is not the same as no `backing`, so a present `null` must be
//!   `Some(..)`, where serde would make it `None`.
//!
//! Which of these a schema needs depends on the schema, hence `allow(dead_code)`.
#![allow(dead_code)]

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};

/// An optional member that was present: `Some`, even when its value is `null`.
pub(crate) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

struct U64Visitor;

impl Visitor<'_> for U64Visitor {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an integer")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        Ok(v as u64)
    }
}

struct Wrapped(u64);

impl<'de> Deserialize<'de> for Wrapped {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(U64Visitor).map(Wrapped)
    }
}

/// A `uint64`.
pub(crate) fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(U64Visitor)
}

/// An optional `uint64` (with `#[serde(default)]`).
pub(crate) fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v: Option<Wrapped> = Deserialize::deserialize(d)?;
    Ok(v.map(|w| w.0))
}

struct VecVisitor;

impl<'de> Visitor<'de> for VecVisitor {
    type Value = Vec<u64>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of integers")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u64>, A::Error> {
        let mut out = Vec::new();
        while let Some(Wrapped(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(out)
    }
}

struct WrappedVec(Vec<u64>);

impl<'de> Deserialize<'de> for WrappedVec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(VecVisitor).map(WrappedVec)
    }
}

/// A `['uint64']`.
pub(crate) fn vec_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    d.deserialize_seq(VecVisitor)
}

/// An optional `['uint64']` (with `#[serde(default)]`).
pub(crate) fn opt_vec_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u64>>, D::Error> {
    let v: Option<WrappedVec> = Deserialize::deserialize(d)?;
    Ok(v.map(|w| w.0))
}
