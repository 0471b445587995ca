//! The raw system calls of the event loop, each behind a safe function: what `libc` offers and
//! `std`, `mio` and `sendbuf` do not.

#[cfg(feature = "io-uring")]
use std::io;
#[allow(unused_imports)] // not every platform's functions read the descriptor
use std::os::fd::{AsRawFd, BorrowedFd};
#[cfg(feature = "io-uring")]
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

/// The receive window the peer of socket `fd` advertises now (`TCP_INFO`'s `tcpi_snd_wnd`, Linux
/// 5.4 and later), or `None` if the kernel does not say.
#[cfg(all(target_os = "linux", any(target_env = "gnu", target_env = "musl")))]
pub(crate) fn peer_window(fd: BorrowedFd<'_>) -> Option<usize> {
    // SAFETY: tcp_info is plain integers, for which all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a writable tcp_info of `len` bytes that outlives the call, and the
    // kernel writes at most `len` bytes into it (setting `len` to what it wrote).
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    // An older kernel writes a shorter struct without the field: then it does not say.
    let known = std::mem::offset_of!(libc::tcp_info, tcpi_snd_wnd) + 4;
    (rc == 0 && len as usize >= known).then_some(info.tcpi_snd_wnd as usize)
}

#[cfg(not(all(target_os = "linux", any(target_env = "gnu", target_env = "musl"))))]
pub(crate) fn peer_window(_fd: BorrowedFd<'_>) -> Option<usize> {
    None
}

/// Bytes the kernel holds in socket `fd`'s send queue, not yet acknowledged by the peer
/// (`SIOCOUTQ`); 0 if it does not say.
#[cfg(target_os = "linux")]
pub(crate) fn kernel_unsent(fd: BorrowedFd<'_>) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (= TIOCOUTQ) writes one int to the pointer, which is valid for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if rc == 0 {
        usize::try_from(n).unwrap_or(0)
    } else {
        0
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn kernel_unsent(_fd: BorrowedFd<'_>) -> usize {
    0
}

/// The CPU time the process has spent in user space and in the kernel (`getrusage`), as
/// memcached's `rusage_user` and `rusage_system`; zero if the call fails.
pub(crate) fn rusage() -> (Duration, Duration) {
    // SAFETY: rusage is plain integers, for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a writable rusage that outlives the call.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let time = |t: libc::timeval| {
        let secs = u64::try_from(t.tv_sec).unwrap_or(0);
        let micros = u32::try_from(t.tv_usec).unwrap_or(0);
        Duration::from_secs(secs) + Duration::from_micros(u64::from(micros))
    };
    (time(usage.ru_utime), time(usage.ru_stime))
}

/// Gives the allocator's free pages back to the kernel (glibc only; elsewhere nothing).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn malloc_trim() {
    // SAFETY: malloc_trim has no preconditions; it only returns free memory to the kernel and
    // takes the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn malloc_trim() {}

/// A new non-blocking, close-on-exec eventfd (for io_uring to signal completions through).
#[cfg(feature = "io-uring")]
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd(2) has no memory arguments; it returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
