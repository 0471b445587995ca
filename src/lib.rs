//! A zero-copy, vectored write path for network servers.
//!
//! A server formats small protocol headers and sends them with large values that already live
//! elsewhere (a cache item, a file page, a request's `Bytes`). The right way is one vectored
//! `sendmsg`/`writev` whose iovecs point at a small scratch area (the headers) and at the values
//! themselves. Two things make that hard:
//!
//! 1. **Partial writes.** Under load the socket accepts only part of the iovec list. The buffer
//!    must advance exactly past what was sent, release what is fully sent and resend the rest,
//!    for every split point: inside a header, at a segment boundary, zero bytes.
//! 2. **Reclaiming idle memory.** A server with many idle connections wants their buffer memory
//!    back, which is safe only if "the buffer is empty" is *exactly* true. A memcached-family
//!    server once took a buffer that still held unsent bytes because its accounting missed a
//!    formatting path, and corrupted responses under load.
//!
//! [`WriteBuffer`] makes both correct by construction: typed formatting through a
//! [`FormatGuard`] that commits or rolls back, [`pin`](WriteBuffer::pin) for zero-copy values
//! released exactly once, [`advance`](WriteBuffer::advance) at any split point, and an
//! [`is_empty`](WriteBuffer::is_empty) that is true only when every count agrees.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use sendbuf::WriteBuffer;
//!
//! let item: Arc<[u8]> = vec![b'x'; 64 * 1024].into();
//! let mut buf = WriteBuffer::new();
//!
//! // A text header, the value by reference, a trailer: three iovecs, one sendmsg.
//! let mut f = buf.format();
//! core::fmt::Write::write_fmt(&mut f, format_args!("VALUE k 0 {}\r\n", item.len())).unwrap();
//! f.commit();
//! buf.pin(item.clone());
//! buf.put_slice(b"\r\nEND\r\n");
//!
//! // Whatever the writer accepts, advance past exactly that much.
//! let mut wire = Vec::new();
//! let mut accepts = [7usize, 1, 30_000, 5, usize::MAX].into_iter();
//! while buf.has_pending() {
//!     let mut writer = sendbuf_doc::Limited(&mut wire, accepts.next().unwrap_or(usize::MAX));
//!     buf.write_to(&mut writer).unwrap();
//! }
//! assert_eq!(wire.len(), 17 + 64 * 1024 + 7);
//! assert_eq!(Arc::strong_count(&item), 1); // released once its last byte went out
//! # mod sendbuf_doc {
//! #     pub struct Limited<'a>(pub &'a mut Vec<u8>, pub usize);
//! #     impl std::io::Write for Limited<'_> {
//! #         fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
//! #             let n = b.len().min(self.1);
//! #             self.0.extend_from_slice(&b[..n]);
//! #             Ok(n)
//! #         }
//! #         fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
//! #     }
//! # }
//! ```
//!
//! On a socket, [`send_to`](WriteBuffer::send_to) does the gather, the `sendmsg` and the advance
//! in one call and reports `EAGAIN` as [`WouldBlock`](std::io::ErrorKind::WouldBlock).
//!
//! # Relation with `bytes` and `IoSlice::advance_slices`
//!
//! `bytes::BytesMut` plus a queue of `Bytes` can express the same thing, but every header is a
//! `split().freeze()` with an atomic reference count, and every value must first become a
//! `Bytes`. `WriteBuffer` keeps headers in plain scratch memory (adjacent headers are one
//! iovec), takes values as they are (`Arc<[u8]>`, `Vec<u8>`, anything `AsRef<[u8]>`), copies
//! small ones instead of spending an iovec on them, and does not rescan the queue on a partial
//! write. Method names follow `bytes` (`advance`, `chunk`, `chunks_vectored`, `put_u16`...).
//!
//! `std::io::IoSlice::advance_slices` advances an array of slices past a partial write, but it
//! owns nothing: the caller must keep every value alive, know when each is fully sent, and
//! rebuild the array. `WriteBuffer` does that bookkeeping and proves it in its counts.
//!
//! # Lifetimes of a segment
//!
//! Each segment (a run of scratch bytes or a pinned value) is *pending* until accepted by the
//! kernel, *sent* once advanced past, and *released* when no one reads its memory any more. With
//! copying sends the last two steps coincide. The core keeps them apart so that sends the kernel
//! completes later (`MSG_ZEROCOPY`, io_uring) release on completion, and `is_empty` means
//! nothing pending *and* nothing held by the kernel.
//!
//! [`ZeroCopy`] is that path for plain sockets: it sends large runs with `MSG_ZEROCOPY`, reads
//! the kernel's completions from the socket's error queue and releases exactly the sends they
//! cover. A buffer dropped while the kernel still holds bytes leaks them rather than free
//! memory the kernel may read; drain first with [`ZeroCopy::drain_blocking`].
//!
//! With the feature `io-uring` (Linux), `UringSender` queues many connections' sends as
//! io_uring `SendMsg` (or zero-copy `SendMsgZc`) entries and submits them with one system call;
//! each result advances its buffer, and a zero-copy send's bytes stay held until its
//! notification completion releases them.
//!
//! # TLS
//!
//! With the feature `rustls`, `TlsSession` keeps this write path under TLS: plaintext is
//! queued in a `WriteBuffer` as usual, encrypted once into records in scratch the session owns
//! (small responses share records), and the records go out gathered. A pinned value is released
//! as soon as its last byte is encrypted; `is_empty` and the steal stay exact one layer down
//! (unsent records, handshake bytes and received records count), and the water marks count
//! plaintext plus records. rustls runs the handshake; when the configuration allows secret
//! extraction (`ServerConfig::enable_secret_extraction`), the session then seals and opens the
//! records itself with aws-lc-rs, from the traffic keys rustls hands over: each record's plaintext
//! is copied once, straight from the queue's segments into the record, and sealed in place, and
//! an idle session keeps its keys and little else. See the `tls` module.
//!
//! Kernel TLS (`setsockopt(TCP_ULP, "tls")`) would let the kernel encrypt straight from pinned
//! pages and release them when `sendmsg` returns, with no user-space copy at all. It takes the
//! same slot as the session's own record layer: the keys rustls negotiated
//! (`dangerous_into_kernel_connection`) installed in the socket instead of in aws-lc-rs, the
//! plaintext queue handed to `sendmsg` itself, and rustls's remains kept to derive the keys of a
//! key update. `tls::kernel_tls_available` says whether this kernel has the `tls` module; where
//! it does not (`ENOENT`), the user-space path is the only one.
//!
//! # Features
//!
//! The core needs no feature; each integration with another crate is one you opt into.
//!
//! * `bytes`: `bytes::Buf` for `WriteBuffer`, `bytes::BufMut` for `FormatGuard`, and `pin` of
//!   `Bytes` / `BytesMut` without a copy or an allocation.
//!   `sendbuf = { version = "0.1", features = ["bytes"] }`
//! * `tokio`: `WriteBuffer::poll_write_to` / `flush_to` on any `tokio::io::AsyncWrite`, and
//!   `ReadBuffer::poll_read_from` / `read_from_async` on any `tokio::io::AsyncRead`; it uses
//!   tokio's I/O traits only, no runtime.
//!   `sendbuf = { version = "0.1", features = ["tokio"] }`
//! * `io-uring` (Linux only): `UringSender`, many connections' sends (copying or zero-copy)
//!   submitted with one system call.
//!   `sendbuf = { version = "0.1", features = ["io-uring"] }`
//! * `rustls`: `TlsSession`, TLS 1.2 and 1.3 with rustls 0.23 and its `aws-lc-rs` provider (a C
//!   compiler is all it needs to build).
//!   `sendbuf = { version = "0.1", features = ["rustls"] }`
//! * `itoa` (on by default): `FormatGuard::put_decimal` writes its digits with the `itoa`
//!   crate; without it `core::fmt` writes the same bytes, more slowly.
//!   `sendbuf = { version = "0.1", default-features = false }` turns it off.
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod decimal;
mod error;
mod format;
mod impls;
mod iovec;
mod pinned;
mod pool;
mod read_buffer;
mod scratch;
mod segment;
mod send;
mod steal;
mod sys;
#[cfg(feature = "rustls")]
pub mod tls;
#[cfg(all(feature = "io-uring", target_os = "linux"))]
mod uring;
mod watermark;
mod write_buffer;
mod zerocopy;

pub use decimal::Decimal;
#[cfg(feature = "rustls")]
pub use error::TlsError;
pub use error::{AdvanceError, ConsumeError, HardLimitError, ReadLimitError, StealError};
pub use format::{Encode, FormatGuard, Reserved};
pub use iovec::{GatherLimits, IoVecBuilder, INLINE_IOVECS};
pub use pool::{LocalPool, Pool, PoolLimits, PoolStats, SharedPool};
pub use read_buffer::ReadBuffer;
pub use steal::Stealable;
#[cfg(feature = "rustls")]
pub use tls::{TlsSession, TlsStats};
#[cfg(all(feature = "io-uring", target_os = "linux"))]
pub use uring::{UringCompletion, UringEvent, UringSender, UringStats};
pub use watermark::{Pressure, Watermarks};
pub use write_buffer::{WriteBuffer, DEFAULT_FLATTEN_THRESHOLD};
pub use zerocopy::{ZeroCopy, ZeroCopyStats, DEFAULT_ZEROCOPY_THRESHOLD};

// The README's snippets use sockets (Unix), `bytes` and tokio, shown whole, as crates.io shows
// them; `cargo test --all-features` runs them.
#[cfg(all(doctest, unix, feature = "bytes", feature = "tokio"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
