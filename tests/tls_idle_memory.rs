//! What an idle TLS session holds: after a handshake, a request and a 64 KiB response, and the
//! steal of its storage, the heap bytes that dropping the session frees (live bytes before
//! `drop(server)` minus live bytes after), and the size of the session itself. The steal must
//! give back every buffer's storage and drop the buffers and aws-lc-rs's expanded keys. With
//! the records the session's own (rustls 0.23.46 on aws-lc-rs, TLS 1.3, AES-256-GCM), what
//! stays is 184 B of session and 960 B of heap: the record layer (two directions' secrets and
//! sequence numbers, rustls's `KernelConnection`) and the key schedule rustls keeps for key
//! updates. With the records left to rustls: its connection (keys, key schedule, the handshake
//! deframer...), 2,433 B in all. An idle session answers every question and a send without
//! making its buffers again.
//!
//! Not the thread's live bytes after the steal: those also count the test's rustls client's
//! session cache (a 1,024 B `ServerData` and two 354 B certificate-chain clones from the
//! session tickets), which outlives `drop(client)` because the client's configuration lives on
//! in the test PKI: 2,996 B that are not the server's.
//!
//! A separate file (its own binary) because a `#[global_allocator]` applies to the whole test
//! binary, as in `tests/no_alloc.rs`; bytes are counted per thread, only while asked for.
//! Not under Miri: rustls's `aws-lc-rs` provider runs C and assembly.
#![cfg(all(feature = "rustls", unix, not(miri), target_endian = "little"))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io;
use std::sync::Arc;

use sendbuf::{Stealable, TlsSession};
use sendbuf_testkit::tls::{connect, deliver, pki};

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: allocations during thread teardown must not panic.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = LIVE.try_with(|c| c.set(c.get() + delta));
    }
}

struct Counting;

// SAFETY: every call is forwarded unchanged to `System`; counting touches only const-initialised
// thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: the caller's contract for `realloc`, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn an_idle_session_holds_only_its_keys() {
    for own in [true, false] {
        idle_session(own);
    }
}

/// One session's life, then what it holds idle; `own`: the records are the session's.
fn idle_session(own: bool) {
    let pki = pki().variant(own, None);
    COUNTING.with(|c| c.set(true));
    let (mut server, mut client) = connect(&pki);
    assert_eq!(server.seals_records(), own);
    deliver(&mut server, &client.send(b"get k\r\n"));
    server.read_buffer_mut().consume(7);
    let value: Arc<[u8]> = vec![b'v'; 64 * 1024].into();
    server.write_buffer().put_slice(b"VALUE k 0 65536\r\n");
    server.write_buffer().pin(value.clone());
    server.write_buffer().put_slice(b"\r\nEND\r\n");
    let mut wire = Vec::new();
    while server.has_pending() {
        server.write_to(&mut wire).unwrap();
    }
    client.feed(&wire);
    assert_eq!(client.received.len(), 17 + 64 * 1024 + 7);
    // Everything but the session and the client goes: the wire, the client, the value.
    drop(wire);
    drop(client);
    drop(value);
    let stolen = server.steal().expect("an idle session");
    assert!(
        stolen >= 64 * 1024,
        "the records' block and the buffers: {stolen} B"
    );
    assert_eq!(server.storage_bytes(), 0);
    // Idle: no question and no send allocates (makes the buffers again).
    let live_idle = LIVE.with(Cell::get);
    assert!(server.is_empty() && !server.has_pending() && !server.is_backed_up());
    assert_eq!(server.pending_len() + server.unsent_tls_len(), 0);
    assert_eq!(server.write_to(&mut io::sink()).unwrap(), 0);
    assert_eq!(server.steal().unwrap(), 0);
    assert_eq!(LIVE.with(Cell::get), live_idle, "an idle session allocated");
    // What the session holds is what dropping it frees.
    let live_before_drop = LIVE.with(Cell::get);
    drop(server);
    let live_after_drop = LIVE.with(Cell::get);
    COUNTING.with(|c| c.set(false));
    let heap = live_before_drop - live_after_drop;
    let inline = std::mem::size_of::<TlsSession>();
    eprintln!(
        "idle TLS session ({}): {inline} B inline + {heap} B of heap = {} B \
         ({stolen} B of storage given back by the steal)",
        if own {
            "own records"
        } else {
            "rustls's records"
        },
        inline as isize + heap
    );
    // With its own records the session keeps its secrets and rustls's key schedule (1,144 B
    // with rustls 0.23.46 on aws-lc-rs); with rustls's, rustls's connection (2,433 B). Neither
    // keeps a buffer: the smallest block they held (the TLS input's, one record) would be
    // 18 KiB more, their structures 896 B more.
    let bound = if own { 1536 } else { 3 * 1024 };
    assert!(
        inline as isize + heap < bound,
        "an idle session holds {inline} B + {heap} B"
    );
}
