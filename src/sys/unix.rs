//! `sendmsg`, `IOV_MAX` and errno handling on Unix.
#![allow(unsafe_code)]

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd};

/// The most iovecs one `sendmsg`/`writev` accepts.
///
/// Linux fixes it at `UIO_MAXIOV` (1024) as part of its ABI, so no `sysconf` call is needed (and
/// Miri, which cannot make FFI calls, can run code that asks for it).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn iov_max() -> usize {
    1024
}

/// The most iovecs one `sendmsg`/`writev` accepts, from `sysconf(_SC_IOV_MAX)`.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn iov_max() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static CACHED: AtomicUsize = AtomicUsize::new(0);
    match CACHED.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: sysconf takes an integer and reads no memory of ours.
            let n = unsafe { libc::sysconf(libc::_SC_IOV_MAX) };
            let n = if n > 0 { n as usize } else { 16 };
            CACHED.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

/// Flags every send carries: a peer that closed must yield `EPIPE`, not kill the process.
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
)))]
const SEND_FLAGS: libc::c_int = 0;

/// `msg_iovlen` is `size_t` on glibc and `c_int` on musl and the BSDs: convert in one place.
#[allow(clippy::unnecessary_fallible_conversions, clippy::useless_conversion)]
fn iovlen<T: TryFrom<usize> + Copy>(n: usize, max: T) -> T {
    T::try_from(n).unwrap_or(max)
}

/// One `sendmsg` of `iov` on `fd`, retried on `EINTR`. Returns the bytes the kernel accepted.
///
/// `EAGAIN` comes back as [`io::ErrorKind::WouldBlock`].
pub(crate) fn sendmsg(
    fd: BorrowedFd<'_>,
    iov: &[IoSlice<'_>],
    flags: libc::c_int,
) -> io::Result<usize> {
    // SAFETY: `msghdr` is a C struct of integers and raw pointers (plus padding on some
    // platforms); all-zero is a valid value: no name, no control data, no iovecs.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // The kernel only reads through `msg_iov`; the `*mut` is what the C declaration says.
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    let len = iov.len().min(iov_max());
    msg.msg_iovlen = iovlen(len, msg.msg_iovlen);
    loop {
        // SAFETY: `msg_iov` points at `len <= iov.len()` `IoSlice`s, which are layout-identical
        // to `iovec` (asserted in `iovec.rs`) and borrow live memory for the whole call; `msg`
        // names no address and no control buffer; `fd` is a borrowed, open descriptor.
        let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, flags | SEND_FLAGS) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
