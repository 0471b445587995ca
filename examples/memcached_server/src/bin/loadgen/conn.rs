//! One connection of the event loop: requests written with `writev` or TLS, responses parsed.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::time::Instant;

use mio::net::TcpStream as MioStream;
use rustls::ClientConnection;

use crate::protocol::{
    put_header, HEADER, KEY_LEN, OP_GET, OP_SET, RES_MAGIC, SET_EXTRAS, STATUS_KEY_NOT_FOUND,
    STATUS_OK,
};
use crate::report::Counts;
use crate::tls;

/// At most this many iovecs per `writev`; more go in the next call.
const MAX_IOV: usize = 64;

/// One queued piece of outgoing bytes: a range of the connection's header buffer, or the shared
/// value.
#[derive(Clone, Copy)]
enum Seg {
    Head { start: usize, end: usize },
    Value,
}

/// A request sent and not yet answered.
pub(crate) struct Pending {
    pub(crate) at: Instant,
    opcode: u8,
    opaque: u32,
}

/// When responses count: always (the populate step), or when they arrive within `from..to`.
#[derive(Clone, Copy)]
pub(crate) enum Window {
    Always,
    Between(Instant, Instant),
}

impl Window {
    fn counts(self, now: Instant) -> bool {
        match self {
            Window::Always => true,
            Window::Between(from, to) => now >= from && now < to,
        }
    }
}

/// The outgoing side: formatted requests not yet handed to the socket (or to TLS).
pub(crate) struct Requests {
    /// Formatted request headers and keys not yet fully sent.
    head: Vec<u8>,
    segs: Vec<Seg>,
    /// First unsent segment, and bytes of it already sent.
    seg_pos: usize,
    seg_off: usize,
    next_opaque: u32,
}

/// The incoming side: requests in flight, and the parse state of the response stream.
pub(crate) struct Responses {
    pub(crate) pending: VecDeque<Pending>,
    /// Response parsing: the header bytes gathered so far, then the body bytes left to skip.
    rhead: [u8; HEADER],
    rhave: usize,
    body_left: usize,
    /// Whether the response being skipped was already counted (counted when its header is
    /// complete; the body is skipped afterwards).
    in_body: bool,
}

pub(crate) struct Conn {
    pub(crate) stream: MioStream,
    pub(crate) alive: bool,
    /// The TLS session (`--tls`); `None` for plaintext.
    pub(crate) tls: Option<Box<ClientConnection>>,
    pub(crate) tx: Requests,
    pub(crate) rx: Responses,
}

impl Conn {
    pub(crate) fn new(stream: MioStream, depth: usize, tls: Option<Box<ClientConnection>>) -> Conn {
        Conn {
            stream,
            alive: true,
            tls,
            tx: Requests {
                head: Vec::with_capacity(depth * (HEADER + SET_EXTRAS + KEY_LEN)),
                segs: Vec::with_capacity(depth * 2),
                seg_pos: 0,
                seg_off: 0,
                next_opaque: 0,
            },
            rx: Responses {
                pending: VecDeque::with_capacity(depth),
                rhead: [0; HEADER],
                rhave: 0,
                body_left: 0,
                in_body: false,
            },
        }
    }

    /// Queues one request (GET, or SET of `value_len` bytes) for key `k`.
    pub(crate) fn queue(&mut self, opcode: u8, k: &[u8; KEY_LEN], value_len: usize, now: Instant) {
        let opaque = self.tx.queue(opcode, k, value_len);
        self.rx.pending.push_back(Pending {
            at: now,
            opcode,
            opaque,
        });
    }

    /// Writes queued requests until done or the socket is full. `Err` means the connection is
    /// unusable.
    pub(crate) fn flush(&mut self, value: &[u8]) -> io::Result<()> {
        match self.tls.as_deref_mut() {
            None => {
                let stream = &mut self.stream;
                self.tx.send(value, |iov| stream.write_vectored(iov))?;
                Ok(())
            }
            Some(tls) => tls::flush(tls, &mut self.stream, &mut self.tx, value),
        }
    }

    /// Reads and parses every response the socket has (until `WouldBlock`) into `buf`, counting
    /// those that arrive within `window`. `Err` means the connection must close (closed by the
    /// peer, a read error, a malformed stream, a TLS error).
    pub(crate) fn receive(
        &mut self,
        buf: &mut [u8],
        window: Window,
        value_size: usize,
        counts: &mut Counts,
    ) -> Result<(), ()> {
        let rx = &mut self.rx;
        let mut parse = |bytes: &[u8], now: Instant, counts: &mut Counts| {
            rx.parse(bytes, now, window.counts(now), value_size, counts)
        };
        if let Some(tls) = self.tls.as_deref_mut() {
            return tls::receive(tls, &mut self.stream, buf, counts, &mut parse);
        }
        loop {
            match self.stream.read(buf) {
                Ok(0) => return Err(()),
                Ok(n) => {
                    parse(&buf[..n], Instant::now(), counts)?;
                    if n < buf.len() {
                        // Short read: drained; epoll reports the next arrival.
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
    }
}

impl Requests {
    fn push_head(&mut self, start: usize) {
        let end = self.head.len();
        if let Some(Seg::Head { end: e, .. }) = self.segs.last_mut() {
            if *e == start {
                *e = end;
                return;
            }
        }
        self.segs.push(Seg::Head { start, end });
    }

    /// Formats one request; returns its opaque.
    fn queue(&mut self, opcode: u8, k: &[u8; KEY_LEN], value_len: usize) -> u32 {
        let start = self.head.len();
        let opaque = self.next_opaque;
        self.next_opaque = self.next_opaque.wrapping_add(1);
        if opcode == OP_SET {
            put_header(
                &mut self.head,
                OP_SET,
                SET_EXTRAS,
                SET_EXTRAS + KEY_LEN + value_len,
                opaque,
            );
            self.head.extend_from_slice(&[0u8; SET_EXTRAS]); // flags, exptime
            self.head.extend_from_slice(k);
            self.push_head(start);
            if value_len > 0 {
                self.segs.push(Seg::Value);
            }
        } else {
            put_header(&mut self.head, OP_GET, 0, KEY_LEN, opaque);
            self.head.extend_from_slice(k);
            self.push_head(start);
        }
        opaque
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.seg_pos == self.segs.len()
    }

    /// Hands queued bytes to `write` (a `writev`, or TLS's plaintext side), up to [`MAX_IOV`]
    /// segments a call, until all are taken (`Ok(true)`) or `write` says `WouldBlock`
    /// (`Ok(false)`). `Ok(0)` from `write` is an error (`WriteZero`).
    pub(crate) fn send(
        &mut self,
        value: &[u8],
        mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> io::Result<bool> {
        while self.seg_pos < self.segs.len() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n_iov = 0;
            for (i, seg) in self.segs[self.seg_pos..].iter().take(MAX_IOV).enumerate() {
                let bytes = match *seg {
                    Seg::Head { start, end } => &self.head[start..end],
                    Seg::Value => value,
                };
                let skip = if i == 0 { self.seg_off } else { 0 };
                iov[n_iov] = IoSlice::new(&bytes[skip..]);
                n_iov += 1;
            }
            match write(&iov[..n_iov]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(mut n) => {
                    while n > 0 {
                        let len = match self.segs[self.seg_pos] {
                            Seg::Head { start, end } => end - start,
                            Seg::Value => value.len(),
                        } - self.seg_off;
                        if n >= len {
                            n -= len;
                            self.seg_pos += 1;
                            self.seg_off = 0;
                        } else {
                            self.seg_off += n;
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.head.clear();
        self.segs.clear();
        self.seg_pos = 0;
        self.seg_off = 0;
        Ok(true)
    }
}

impl Responses {
    /// Parses `input` (responses, possibly split anywhere). Counts completed responses into
    /// `counts` when `counting`. Returns `Err` on a malformed stream (the connection must close).
    fn parse(
        &mut self,
        mut input: &[u8],
        now: Instant,
        counting: bool,
        value_size: usize,
        counts: &mut Counts,
    ) -> Result<(), ()> {
        while !input.is_empty() {
            if self.in_body {
                let n = self.body_left.min(input.len());
                self.body_left -= n;
                input = &input[n..];
                if self.body_left == 0 {
                    self.in_body = false;
                }
                continue;
            }
            let n = (HEADER - self.rhave).min(input.len());
            self.rhead[self.rhave..self.rhave + n].copy_from_slice(&input[..n]);
            self.rhave += n;
            input = &input[n..];
            if self.rhave < HEADER {
                break;
            }
            self.rhave = 0;
            let h = &self.rhead;
            let opcode = h[1];
            let key_len = u16::from_be_bytes([h[2], h[3]]) as usize;
            let extras = h[4] as usize;
            let status = u16::from_be_bytes([h[6], h[7]]);
            let body = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
            let opaque = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
            let Some(p) = self.pending.pop_front() else {
                counts.errors.protocol += 1; // a response nobody asked for
                return Err(());
            };
            if h[0] != RES_MAGIC || opcode != p.opcode || opaque != p.opaque {
                counts.errors.protocol += 1;
                return Err(());
            }
            if body < key_len + extras {
                counts.errors.protocol += 1;
                return Err(());
            }
            if counting {
                counts.latency.record(now.saturating_duration_since(p.at));
                match (opcode, status) {
                    (OP_GET, STATUS_OK) => {
                        counts.gets += 1;
                        let len = body - key_len - extras;
                        if len != value_size {
                            counts.errors.protocol += 1;
                        }
                        counts.value_bytes += len as u64;
                    }
                    (OP_GET, STATUS_KEY_NOT_FOUND) => {
                        counts.gets += 1;
                        counts.misses += 1;
                    }
                    (_, STATUS_OK) => {
                        counts.sets += 1;
                        counts.value_bytes += value_size as u64;
                    }
                    _ => counts.errors.status += 1,
                }
            } else if status != STATUS_OK && !(opcode == OP_GET && status == STATUS_KEY_NOT_FOUND) {
                counts.errors.status += 1;
            }
            self.body_left = body;
            self.in_body = body > 0;
        }
        Ok(())
    }
}
