//! [`Decimal`]: the integers [`FormatGuard::put_decimal`] writes in decimal ASCII.
//!
//! With the feature `itoa` (on by default) the digits come from `itoa::Buffer`; without it,
//! from the integer's `Display` through `core::fmt`. Both write the same bytes (the unit tests
//! below run in either configuration).

use crate::format::FormatGuard;

/// A primitive integer that [`FormatGuard::put_decimal`] writes in decimal: `u8`, `u16`, `u32`,
/// `u64`, `u128`, `usize`, `i8`, `i16`, `i32`, `i64`, `i128` and `isize`.
///
/// The trait is sealed (it cannot be implemented outside this crate); it exists so that code
/// generic over the integer type can name the bound.
///
/// # Examples
///
/// ```
/// use sendbuf::{Decimal, FormatGuard, WriteBuffer};
///
/// fn put_stat<T: Decimal>(f: &mut FormatGuard<'_>, name: &str, value: T) {
///     f.put_slice(b"STAT ");
///     f.put_slice(name.as_bytes());
///     f.put_u8(b' ');
///     f.put_decimal(value);
///     f.put_slice(b"\r\n");
/// }
///
/// let mut buf = WriteBuffer::new();
/// let mut f = buf.format();
/// put_stat(&mut f, "curr_items", 42u64);
/// put_stat(&mut f, "offset", -7i32);
/// f.commit();
/// assert_eq!(buf.chunk(), b"STAT curr_items 42\r\nSTAT offset -7\r\n");
/// ```
pub trait Decimal: sealed::Sealed {}

pub(crate) mod sealed {
    use crate::format::FormatGuard;

    /// The method behind [`Decimal`](super::Decimal), out of reach of other crates.
    pub trait Sealed {
        /// Writes `self` in decimal ASCII through `f`.
        fn put_to(self, f: &mut FormatGuard<'_>);
    }
}

macro_rules! decimal {
    ($($t:ty)*) => {$(
        impl Decimal for $t {}

        impl sealed::Sealed for $t {
            #[inline]
            fn put_to(self, f: &mut FormatGuard<'_>) {
                #[cfg(feature = "itoa")]
                f.put_slice(itoa::Buffer::new().format(self).as_bytes());
                #[cfg(not(feature = "itoa"))]
                put_display(f, self);
            }
        }
    )*};
}

decimal!(u8 u16 u32 u64 u128 usize i8 i16 i32 i64 i128 isize);

/// The fallback without `itoa`: the integer's `Display`, which writes through the guard's
/// `fmt::Write` (that never fails).
#[cfg(not(feature = "itoa"))]
#[inline]
fn put_display(f: &mut FormatGuard<'_>, v: impl core::fmt::Display) {
    let written = core::fmt::Write::write_fmt(f, format_args!("{v}"));
    debug_assert!(written.is_ok(), "a format guard's fmt::Write never fails");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WriteBuffer;

    /// What `put_decimal` writes for `v`, alone in a guard and after other bytes.
    fn written<T: Decimal + Copy>(v: T) -> Vec<u8> {
        let mut buf = WriteBuffer::new();
        let mut f = buf.format();
        f.put_decimal(v);
        let alone = f.written().to_vec();
        f.put_u8(b'|');
        f.put_decimal(v);
        f.commit();
        let mut both = alone.clone();
        both.push(b'|');
        both.extend_from_slice(&alone);
        assert_eq!(buf.chunk(), both, "after other bytes");
        alone
    }

    macro_rules! edge_values {
        ($($name:ident: $t:ty;)*) => {$(
            #[test]
            fn $name() {
                let mut values: Vec<$t> = vec![0, 1, 9, 10, 99, 100, <$t>::MAX, <$t>::MAX - 1];
                if <$t>::MIN != 0 {
                    values.extend([<$t>::MIN, <$t>::MIN + 1, (0 as $t).wrapping_sub(1)]);
                }
                // Every power of ten the type holds, and one less: each digit-count boundary.
                let mut p: $t = 1;
                while let Some(next) = p.checked_mul(10) {
                    values.extend([next, next - 1]);
                    p = next;
                }
                for v in values {
                    assert_eq!(written(v), v.to_string().into_bytes(), "{v}");
                }
            }
        )*};
    }

    edge_values! {
        u8_edges: u8;
        u16_edges: u16;
        u32_edges: u32;
        u64_edges: u64;
        u128_edges: u128;
        usize_edges: usize;
        i8_edges: i8;
        i16_edges: i16;
        i32_edges: i32;
        i64_edges: i64;
        i128_edges: i128;
        isize_edges: isize;
    }

    #[test]
    fn exact_bytes_of_the_extremes() {
        assert_eq!(written(0u8), b"0");
        assert_eq!(written(u64::MAX), b"18446744073709551615");
        assert_eq!(written(i64::MIN), b"-9223372036854775808");
        assert_eq!(written(-1i8), b"-1");
        assert_eq!(
            written(i128::MIN),
            b"-170141183460469231731687303715884105728"
        );
        assert_eq!(
            written(u128::MAX),
            b"340282366920938463463374607431768211455"
        );
    }

    #[test]
    fn digits_cross_a_block_boundary() {
        // A block of 8 bytes: the guard's bytes move to a new block mid-way, intact.
        let mut buf = WriteBuffer::with_block_size(8);
        let mut f = buf.format();
        f.put_slice(b"VALUE ");
        f.put_decimal(1_234_567_890u32);
        f.commit();
        assert_eq!(buf.chunk(), b"VALUE 1234567890");
    }
}
