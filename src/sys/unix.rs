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

/// `MSG_DONTWAIT`: this one send does not block, whatever the socket's mode.
pub(crate) const MSG_DONTWAIT: libc::c_int = libc::MSG_DONTWAIT;

/// Waits up to `timeout_ms` (-1: without limit) for `fd` to become writable, or to report an
/// error or a hang-up (the next send then returns the error). Returns whether it did; an
/// interrupted wait returns `false`, and the caller decides whether time is left.
pub(crate) fn wait_writable(fd: BorrowedFd<'_>, timeout_ms: libc::c_int) -> io::Result<bool> {
    poll_one(fd, libc::POLLOUT, timeout_ms)
}

/// One `poll` of `fd` for `events` (`POLLERR` and `POLLHUP` are always reported), up to
/// `timeout_ms`. Returns whether anything was reported; `EINTR` counts as nothing.
fn poll_one(
    fd: BorrowedFd<'_>,
    events: libc::c_short,
    timeout_ms: libc::c_int,
) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one live `pollfd` for the duration of the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    match rc {
        n if n > 0 => Ok(true),
        0 => Ok(false),
        _ => {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(err)
            }
        }
    }
}

/// `MSG_ZEROCOPY`, `SO_ZEROCOPY` and the error queue (Linux 4.14+).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) mod zerocopy {
    use super::*;

    /// `SO_ZEROCOPY` from `asm-generic/socket.h` (SPARC numbers it differently).
    #[cfg(not(any(target_arch = "sparc", target_arch = "sparc64")))]
    const SO_ZEROCOPY: libc::c_int = 60;
    #[cfg(any(target_arch = "sparc", target_arch = "sparc64"))]
    const SO_ZEROCOPY: libc::c_int = 0x3e;
    /// `SO_EE_ORIGIN_ZEROCOPY` from `linux/errqueue.h`.
    const SO_EE_ORIGIN_ZEROCOPY: u8 = 5;
    /// `SO_EE_CODE_ZEROCOPY_COPIED`: the kernel copied the data after all.
    const SO_EE_CODE_ZEROCOPY_COPIED: u8 = 1;

    /// The send flag asking the kernel to read the caller's pages instead of copying them.
    pub(crate) const MSG_ZEROCOPY: libc::c_int = libc::MSG_ZEROCOPY;

    /// Sets `SO_ZEROCOPY` on `fd`.
    pub(crate) fn enable(fd: BorrowedFd<'_>) -> io::Result<()> {
        let one: libc::c_int = 1;
        // SAFETY: `one` is a live `c_int` for the whole call and its size is passed with it.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_ZEROCOPY,
                (&one as *const libc::c_int).cast(),
                core::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// One message from a socket's error queue.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum ErrQueueEntry {
        /// Zero-copy sends `lo..=hi` (wrapping counter values) are complete.
        ZeroCopy { lo: u32, hi: u32, copied: bool },
        /// Anything else (an ICMP error, a timestamp, a truncated message).
        Other,
    }

    /// Reads one message from `fd`'s error queue; `None` when it is empty. Never blocks.
    pub(crate) fn recv_errqueue(fd: BorrowedFd<'_>) -> io::Result<Option<ErrQueueEntry>> {
        // Room for a `cmsghdr`, a `sock_extended_err` and the offender's `sockaddr_in6`, aligned
        // for `cmsghdr`.
        let mut control = [0u64; 16];
        loop {
            // SAFETY: all-zero is a valid `msghdr` (see `sendmsg`).
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = iovlen(core::mem::size_of_val(&control), msg.msg_controllen);
            // SAFETY: `msg` names no address and no iovecs; `msg_control` points at `control`,
            // which lives for the call and is `msg_controllen` bytes long; `fd` is open.
            let n = unsafe {
                libc::recvmsg(
                    fd.as_raw_fd(),
                    &mut msg,
                    libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => return Ok(None),
                    _ => return Err(err),
                }
            }
            let len = (msg.msg_controllen as usize).min(core::mem::size_of_val(&control));
            // SAFETY: `control` is plain integers; viewing its first `len` bytes as `u8`s is
            // in bounds and every byte pattern is a valid `u8`.
            let bytes = unsafe { core::slice::from_raw_parts(control.as_ptr().cast::<u8>(), len) };
            return Ok(Some(parse_control(bytes)));
        }
    }

    /// `CMSG_ALIGN`: control messages are aligned to `size_t` (glibc) / `long` (musl).
    fn cmsg_align(n: usize) -> usize {
        let a = core::mem::size_of::<usize>();
        (n + a - 1) & !(a - 1)
    }

    /// Finds a zero-copy completion in the control data of an error-queue message. Pure: it reads
    /// only `control`, so it runs under Miri and on any bytes without panicking.
    pub(crate) fn parse_control(control: &[u8]) -> ErrQueueEntry {
        let hdr_len = core::mem::size_of::<libc::cmsghdr>();
        let data_at = cmsg_align(hdr_len);
        let ee_len = core::mem::size_of::<libc::sock_extended_err>();
        let mut at = 0;
        while control.len() >= at && control.len() - at >= hdr_len {
            // SAFETY: `hdr_len` bytes from `at` are in bounds (checked above); `cmsghdr` is
            // plain integers, so any bytes are a valid value; the read is unaligned-safe.
            let hdr: libc::cmsghdr =
                unsafe { core::ptr::read_unaligned(control[at..].as_ptr().cast()) };
            let len = hdr.cmsg_len as usize;
            if len < hdr_len || len > control.len() - at {
                break;
            }
            let recverr = (hdr.cmsg_level == libc::SOL_IP && hdr.cmsg_type == libc::IP_RECVERR)
                || (hdr.cmsg_level == libc::SOL_IPV6 && hdr.cmsg_type == libc::IPV6_RECVERR);
            if recverr && len >= data_at + ee_len {
                // SAFETY: `data_at + ee_len <= len` bytes from `at` are in bounds (checked);
                // `sock_extended_err` is plain integers; the read is unaligned-safe.
                let ee: libc::sock_extended_err =
                    unsafe { core::ptr::read_unaligned(control[at + data_at..].as_ptr().cast()) };
                if ee.ee_origin == SO_EE_ORIGIN_ZEROCOPY && ee.ee_errno == 0 {
                    return ErrQueueEntry::ZeroCopy {
                        lo: ee.ee_info,
                        hi: ee.ee_data,
                        copied: ee.ee_code & SO_EE_CODE_ZEROCOPY_COPIED != 0,
                    };
                }
            }
            at += cmsg_align(len);
        }
        ErrQueueEntry::Other
    }

    /// Waits up to `timeout_ms` for `fd` to report an error condition (`POLLERR`: something in
    /// its error queue) or a hang-up. Returns whether it did.
    pub(crate) fn wait_error(fd: BorrowedFd<'_>, timeout_ms: libc::c_int) -> io::Result<bool> {
        poll_one(fd, 0, timeout_ms)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// A control buffer holding `cmsgs` (level, type, payload), laid out as the kernel does.
        fn control(cmsgs: &[(libc::c_int, libc::c_int, Vec<u8>)]) -> Vec<u8> {
            let hdr_len = core::mem::size_of::<libc::cmsghdr>();
            let mut out = Vec::new();
            for (level, ty, data) in cmsgs {
                // SAFETY: all-zero is a valid `cmsghdr`.
                let mut hdr: libc::cmsghdr = unsafe { core::mem::zeroed() };
                hdr.cmsg_len = (cmsg_align(hdr_len) + data.len()) as _;
                hdr.cmsg_level = *level;
                hdr.cmsg_type = *ty;
                // SAFETY: viewing a plain-integer struct as its bytes.
                let raw = unsafe {
                    core::slice::from_raw_parts(
                        (&hdr as *const libc::cmsghdr).cast::<u8>(),
                        hdr_len,
                    )
                };
                out.extend_from_slice(raw);
                out.resize(cmsg_align(out.len()), 0);
                out.extend_from_slice(data);
                out.resize(cmsg_align(out.len()), 0);
            }
            out
        }

        fn ee(origin: u8, code: u8, errno: u32, info: u32, data: u32) -> Vec<u8> {
            let mut v = Vec::new();
            v.extend_from_slice(&errno.to_ne_bytes());
            v.extend_from_slice(&[origin, 0, code, 0]);
            v.extend_from_slice(&info.to_ne_bytes());
            v.extend_from_slice(&data.to_ne_bytes());
            v.extend_from_slice(&[0u8; 16]); // the offender address the kernel appends
            v
        }

        #[test]
        fn parses_ipv4_and_ipv6_completions() {
            let c = control(&[(libc::SOL_IP, libc::IP_RECVERR, ee(5, 1, 0, 7, 9))]);
            assert_eq!(
                parse_control(&c),
                ErrQueueEntry::ZeroCopy {
                    lo: 7,
                    hi: 9,
                    copied: true
                }
            );
            let c = control(&[(libc::SOL_IPV6, libc::IPV6_RECVERR, ee(5, 0, 0, u32::MAX, 1))]);
            assert_eq!(
                parse_control(&c),
                ErrQueueEntry::ZeroCopy {
                    lo: u32::MAX,
                    hi: 1,
                    copied: false
                }
            );
        }

        #[test]
        fn skips_other_messages_and_finds_a_later_completion() {
            let c = control(&[
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPING, vec![1; 48]),
                (libc::SOL_IP, libc::IP_RECVERR, ee(2, 3, 113, 0, 0)), // ICMP unreachable
                (libc::SOL_IP, libc::IP_RECVERR, ee(5, 0, 0, 3, 3)),
            ]);
            assert_eq!(
                parse_control(&c),
                ErrQueueEntry::ZeroCopy {
                    lo: 3,
                    hi: 3,
                    copied: false
                }
            );
            let c = control(&[(libc::SOL_IP, libc::IP_RECVERR, ee(2, 3, 113, 0, 0))]);
            assert_eq!(parse_control(&c), ErrQueueEntry::Other);
        }

        #[test]
        fn garbage_and_truncation_never_panic() {
            let good = control(&[(libc::SOL_IP, libc::IP_RECVERR, ee(5, 0, 0, 1, 2))]);
            for cut in 0..good.len() {
                let got = parse_control(&good[..cut]);
                assert_eq!(got, ErrQueueEntry::Other, "cut at {cut}");
            }
            let mut bytes = 0x9e37_79b9_u32;
            for len in 0..200 {
                let junk: Vec<u8> = (0..len)
                    .map(|_| {
                        bytes = bytes.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        (bytes >> 24) as u8
                    })
                    .collect();
                let _ = parse_control(&junk);
            }
        }
    }
}

/// Whether the kernel has TLS for TCP (the `tls` upper-layer protocol, module `tls`): sets
/// `TCP_ULP "tls"` on a fresh, unconnected TCP socket. The kernel looks the protocol up (and
/// loads its module) before it checks the socket, so `ENOENT` means no kernel TLS, while
/// `ENOTCONN` (or success) means it is there.
#[cfg(all(feature = "rustls", any(target_os = "linux", target_os = "android")))]
pub(crate) fn kernel_tls_available() -> io::Result<bool> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: socket(2) has no memory arguments; it returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = b"tls";
    // SAFETY: `name` is live for the call and its length is passed with it; `socket` is open.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_ULP,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENOENT) => Ok(false),
        Some(libc::ENOTCONN) => Ok(true),
        _ => Err(err),
    }
}
