//! Platform calls. Everything outside this module is plain Rust and runs under Miri.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::*;

#[cfg(not(unix))]
pub(crate) fn iov_max() -> usize {
    1024
}
