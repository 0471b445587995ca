//! Type-erased owners of pinned values.
//!
//! A pinned value is referenced zero-copy until its last byte has been sent, then dropped exactly
//! once. The common owner kinds are stored inline in [`Owner`] (no allocation); any other
//! `AsRef<[u8]> + Send + 'static` value is boxed.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// The owner of a pinned value's bytes.
///
/// `repr(u8)`: an explicit tag byte, so telling the kinds apart when a value is released is
/// one compare; without it the tag hides in a niche of the `Vec`'s capacity and takes about
/// ten instructions to decode (`BENCHMARKS.md`, callgrind). It costs 8 bytes per owner
/// without the `bytes` feature (24 to 32); with it an owner is 40 bytes either way.
#[repr(u8)]
pub(crate) enum Owner {
    Static(&'static [u8]),
    /// Also a `Box<[u8]>` (`into_vec` is free) and a `String`: a `Box` is a unique pointer,
    /// which moving the owner would retag under Rust's aliasing model, invalidating the
    /// pointer the kernel may still read during a zero-copy send; a `Vec`'s pointer is not.
    Vec(Vec<u8>),
    Arc(Arc<[u8]>),
    /// `bytes::Bytes` (and a frozen `BytesMut`): its data never moves with the handle.
    #[cfg(feature = "bytes")]
    Bytes(bytes::Bytes),
    Other(Box<dyn AsRef<[u8]> + Send>),
}

/// Moves `value` out of `slot` if `slot` holds a `T`.
///
/// `TypeId` comparisons are resolved at compile time, so for a known `V` this is a move or nothing.
fn take_as<T: 'static, V: 'static>(slot: &mut Option<V>) -> Option<T> {
    let any: &mut dyn Any = slot;
    any.downcast_mut::<Option<T>>().and_then(Option::take)
}

impl Owner {
    /// Wraps `value` without copying its bytes; only owner kinds not listed in [`Owner`] are boxed.
    pub(crate) fn new<V: AsRef<[u8]> + Send + 'static>(value: V) -> Owner {
        let mut slot = Some(value);
        if let Some(v) = take_as::<Vec<u8>, V>(&mut slot) {
            return Owner::Vec(v);
        }
        if let Some(v) = take_as::<Arc<[u8]>, V>(&mut slot) {
            return Owner::Arc(v);
        }
        if let Some(v) = take_as::<Box<[u8]>, V>(&mut slot) {
            return Owner::Vec(v.into_vec());
        }
        if let Some(v) = take_as::<&'static [u8], V>(&mut slot) {
            return Owner::Static(v);
        }
        if let Some(v) = take_as::<String, V>(&mut slot) {
            return Owner::Vec(v.into_bytes());
        }
        #[cfg(feature = "bytes")]
        if let Some(v) = take_as::<bytes::Bytes, V>(&mut slot) {
            return Owner::Bytes(v);
        }
        #[cfg(feature = "bytes")]
        if let Some(v) = take_as::<bytes::BytesMut, V>(&mut slot) {
            // Freezing keeps the same allocation: no copy.
            return Owner::Bytes(v.freeze());
        }
        match slot {
            Some(v) => Owner::Other(Box::new(v)),
            None => unreachable!("a value was taken but matched no owner kind"),
        }
    }

    /// The owned bytes.
    #[inline]
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Owner::Static(s) => s,
            Owner::Vec(v) => v,
            Owner::Arc(a) => a,
            #[cfg(feature = "bytes")]
            Owner::Bytes(b) => b,
            Owner::Other(o) => (**o).as_ref(),
        }
    }

    /// Drops the owner: the value is released. The common kinds are dropped inline.
    #[inline]
    pub(crate) fn release(self) {
        match self {
            Owner::Arc(a) => drop(a),
            Owner::Static(_) => {}
            other => drop(other),
        }
    }

    /// True when moving the owner can neither move nor invalidate (under Rust's aliasing
    /// model) the bytes `bytes()` points at, so a pointer taken before the move stays valid:
    /// static bytes, and shared owners that hold raw pointers (`Arc`, `Bytes`). A `Box` is
    /// unique, so moving it invalidates earlier pointers into it; `Other` owners may store
    /// their bytes inline.
    #[inline]
    pub(crate) fn bytes_stay_put(&self) -> bool {
        match self {
            Owner::Static(_) | Owner::Arc(_) => true,
            #[cfg(feature = "bytes")]
            Owner::Bytes(_) => true,
            Owner::Vec(_) | Owner::Other(_) => false,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Owner::Static(_) => "static",
            Owner::Vec(_) => "Vec<u8>",
            Owner::Arc(_) => "Arc<[u8]>",
            #[cfg(feature = "bytes")]
            Owner::Bytes(_) => "Bytes",
            Owner::Other(_) => "boxed AsRef<[u8]>",
        }
    }
}

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Owner")
            .field("kind", &self.kind())
            .field("len", &self.bytes().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_kinds_are_stored_inline() {
        assert!(matches!(Owner::new(vec![1u8, 2]), Owner::Vec(_)));
        assert!(matches!(
            Owner::new(Arc::<[u8]>::from(&b"ab"[..])),
            Owner::Arc(_)
        ));
        let boxed = Box::<[u8]>::from(&b"ab"[..]);
        let ptr = boxed.as_ptr();
        let owner = Owner::new(boxed);
        assert!(matches!(owner, Owner::Vec(_)), "a box is kept as a Vec");
        assert_eq!(owner.bytes().as_ptr(), ptr, "without copying");
        assert!(matches!(Owner::new(&b"ab"[..]), Owner::Static(_)));
        assert!(matches!(Owner::new(String::from("ab")), Owner::Vec(_)));
        let cow: std::borrow::Cow<'static, [u8]> = vec![1u8].into();
        assert!(matches!(Owner::new(cow), Owner::Other(_)));
    }

    #[cfg(feature = "bytes")]
    #[test]
    fn bytes_kinds_are_stored_inline() {
        let b = bytes::Bytes::from(vec![1u8; 64]);
        let ptr = b.as_ptr();
        let owner = Owner::new(b);
        assert!(matches!(owner, Owner::Bytes(_)));
        assert_eq!(owner.bytes().as_ptr(), ptr);

        let mut m = bytes::BytesMut::with_capacity(64);
        m.extend_from_slice(&[2u8; 64]);
        let ptr = m.as_ptr();
        let owner = Owner::new(m);
        assert!(matches!(owner, Owner::Bytes(_)));
        assert_eq!(owner.bytes().as_ptr(), ptr);
    }

    #[test]
    fn bytes_are_not_copied() {
        let v = vec![7u8; 100];
        let ptr = v.as_ptr();
        let owner = Owner::new(v);
        assert_eq!(owner.bytes().as_ptr(), ptr);
        assert_eq!(owner.bytes().len(), 100);
    }
}
