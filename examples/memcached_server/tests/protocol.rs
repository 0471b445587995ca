//! The memcached example's protocols and store, driven directly: `Session::process` on byte
//! strings with the exact response bytes for each command of both protocols (as memcached 1.6.18
//! answers them), pipelined and byte-by-byte split input, quiet commands, bad input, the early
//! stop at the high water mark, and the store's semantics (expiry, CAS, flush, incr/decr,
//! least-recently-used eviction under the memory limit, values outliving their item).

use memcached_server::{binary, handler, protocol, stats, store};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use handler::Limits;
use protocol::{Processed, Session};
use sendbuf::{Watermarks, WriteBuffer};
use stats::Stats;
use store::{DeleteResult, DeltaResult, Mode, Store, StoreResult};

const MAX_ITEM: usize = 1024 * 1024;
const LIMITS: Limits = Limits {
    max_item_size: MAX_ITEM,
};

fn new_session(store: &Arc<Store>) -> Session {
    Session::new(store.clone(), Arc::new(Stats::new(1)), LIMITS)
}

fn session() -> (Session, Arc<Store>) {
    let store = Arc::new(Store::new(64 << 20, MAX_ITEM));
    (new_session(&store), store)
}

/// Everything queued in `out`, gathered through `io_slices` and advanced past.
fn drain(out: &mut WriteBuffer) -> Vec<u8> {
    let mut bytes = Vec::new();
    for slice in out.io_slices() {
        bytes.extend_from_slice(slice);
    }
    out.advance(bytes.len());
    assert!(out.is_empty());
    bytes
}

/// Feeds `input` in one call; returns what was processed and the response bytes.
fn run(s: &mut Session, input: &[u8]) -> (Processed, Vec<u8>) {
    let mut out = WriteBuffer::new();
    let p = s.process(input, &mut out);
    out.check_invariants();
    assert!(p.consumed <= input.len());
    assert!(p.need <= LIMITS.max_request(), "need {} unbounded", p.need);
    (p, drain(&mut out))
}

/// Feeds `input` as one complete pipeline: everything must be consumed.
fn all(s: &mut Session, input: &[u8]) -> Vec<u8> {
    let (p, r) = run(s, input);
    assert_eq!(
        p.consumed,
        input.len(),
        "not all consumed; got {:?}",
        text(&r)
    );
    assert!(!p.close);
    r
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Feeds `input` the way a server loop does when bytes trickle in: one more byte at a time,
/// consuming what each call consumed. Returns the response bytes and whether it closed. Checks
/// that `need` is either 0 or more than what is buffered, and bounded.
fn trickle(s: &mut Session, input: &[u8]) -> (Vec<u8>, bool) {
    let mut out = WriteBuffer::new();
    let mut buffered = Vec::new();
    let mut response = Vec::new();
    // Under Miri (a thousand times slower; long lines make byte steps quadratic) 61 bytes a step.
    let step = if cfg!(miri) { 61 } else { 1 };
    for piece in input.chunks(step) {
        buffered.extend_from_slice(piece);
        let p = s.process(&buffered, &mut out);
        out.check_invariants();
        assert!(p.need <= LIMITS.max_request());
        buffered.drain(..p.consumed);
        if p.need != 0 {
            assert!(
                p.need > buffered.len(),
                "need {} <= {}",
                p.need,
                buffered.len()
            );
        }
        response.extend(drain(&mut out));
        if p.close {
            return (response, true);
        }
    }
    assert!(
        buffered.is_empty(),
        "left unconsumed: {:?}",
        text(&buffered)
    );
    (response, false)
}

// ---------------------------------------------------------------------------------------------
// Binary protocol helpers

fn breq(op: u8, key: &[u8], ext: &[u8], val: &[u8], cas: u64) -> Vec<u8> {
    let body = (key.len() + ext.len() + val.len()) as u32;
    breq_raw(
        0x80,
        op,
        key.len() as u16,
        ext.len() as u8,
        body,
        cas,
        &[ext, key, val].concat(),
    )
}

fn breq_raw(
    magic: u8,
    op: u8,
    keylen: u16,
    extlen: u8,
    body: u32,
    cas: u64,
    rest: &[u8],
) -> Vec<u8> {
    let mut v = vec![magic, op];
    v.extend(keylen.to_be_bytes());
    v.push(extlen);
    v.push(0);
    v.extend([0, 0]);
    v.extend(body.to_be_bytes());
    v.extend(0xdead_beef_u32.to_be_bytes());
    v.extend(cas.to_be_bytes());
    v.extend(rest);
    v
}

fn bres(op: u8, status: u16, cas: u64, ext: &[u8], key: &[u8], val: &[u8]) -> Vec<u8> {
    let mut v = vec![0x81, op];
    v.extend((key.len() as u16).to_be_bytes());
    v.push(ext.len() as u8);
    v.push(0);
    v.extend(status.to_be_bytes());
    v.extend(((ext.len() + key.len() + val.len()) as u32).to_be_bytes());
    v.extend(0xdead_beef_u32.to_be_bytes());
    v.extend(cas.to_be_bytes());
    v.extend(ext);
    v.extend(key);
    v.extend(val);
    v
}

fn berr(op: u8, status: u16, msg: &str) -> Vec<u8> {
    bres(op, status, 0, &[], &[], msg.as_bytes())
}

fn set_ext(flags: u32, exptime: u32) -> Vec<u8> {
    [flags.to_be_bytes(), exptime.to_be_bytes()].concat()
}

fn incr_ext(delta: u64, initial: u64, exptime: u32) -> Vec<u8> {
    [
        &delta.to_be_bytes()[..],
        &initial.to_be_bytes(),
        &exptime.to_be_bytes(),
    ]
    .concat()
}

fn cas_of(store: &Store, key: &[u8]) -> u64 {
    store.get(key).expect("item present").cas
}

use binary::op;
use binary::status as st;

// ---------------------------------------------------------------------------------------------
// ASCII protocol

#[test]
fn ascii_set_get_gets_multiget() {
    let (mut s, store) = session();
    let r = all(&mut s, b"set k 5 0 3\r\nabc\r\nget k\r\n");
    assert_eq!(text(&r), "STORED\r\nVALUE k 5 3\r\nabc\r\nEND\r\n");
    let cas = cas_of(&store, b"k");
    let r = all(&mut s, b"gets k\r\n");
    assert_eq!(text(&r), format!("VALUE k 5 3 {cas}\r\nabc\r\nEND\r\n"));
    all(&mut s, b"set other 0 0 2\r\nxy\r\n");
    let r = all(&mut s, b"get k missing other k\r\nget nothing\r\n");
    assert_eq!(
        text(&r),
        "VALUE k 5 3\r\nabc\r\nVALUE other 0 2\r\nxy\r\nVALUE k 5 3\r\nabc\r\nEND\r\nEND\r\n"
    );
    // A bare \n ends a line too, as in memcached.
    let r = all(&mut s, b"get k\n");
    assert_eq!(text(&r), "VALUE k 5 3\r\nabc\r\nEND\r\n");
}

#[test]
fn ascii_large_value_is_pinned_not_copied() {
    let (mut s, store) = session();
    let value = vec![b'v'; 100_000];
    let mut req = b"set big 0 0 100000\r\n".to_vec();
    req.extend(&value);
    req.extend(b"\r\nget big\r\n");
    let mut out = WriteBuffer::new();
    let p = s.process(&req, &mut out);
    assert_eq!(p.consumed, req.len());
    let item = store.get(b"big").unwrap();
    // STORED + VALUE header, the value itself, then "\r\nEND\r\n".
    assert_eq!(out.segments(), 3);
    let pinned = out.io_slices()[1].as_ptr();
    assert_eq!(pinned, item.value.as_ptr(), "the item's own memory is sent");
    let r = drain(&mut out);
    let mut expected = b"STORED\r\nVALUE big 0 100000\r\n".to_vec();
    expected.extend(&value);
    expected.extend(b"\r\nEND\r\n");
    assert_eq!(r, expected);
}

#[test]
fn ascii_storage_commands() {
    let (mut s, store) = session();
    let r = all(
        &mut s,
        b"add a 1 0 1\r\nx\r\nadd a 1 0 1\r\ny\r\nreplace b 0 0 1\r\nz\r\nreplace a 2 0 2\r\nzz\r\n",
    );
    assert_eq!(text(&r), "STORED\r\nNOT_STORED\r\nNOT_STORED\r\nSTORED\r\n");
    // append/prepend keep flags and expiry of the existing item.
    let r = all(
        &mut s,
        b"append a 9 0 2\r\n>>\r\nprepend a 9 0 2\r\n<<\r\nappend nope 0 0 1\r\nx\r\nget a\r\n",
    );
    assert_eq!(
        text(&r),
        "STORED\r\nSTORED\r\nNOT_STORED\r\nVALUE a 2 6\r\n<<zz>>\r\nEND\r\n"
    );
    let cas = cas_of(&store, b"a");
    let r = all(
        &mut s,
        format!(
            "cas a 3 0 1 {}\r\nq\r\ncas a 3 0 1 {cas}\r\nc\r\ncas a 3 0 1 {cas}\r\nd\r\ncas nope 0 0 1 1\r\nx\r\ncas a 0 0 1 0\r\nx\r\nget a\r\n",
            cas + 1000
        )
        .as_bytes(),
    );
    assert_eq!(
        text(&r),
        "EXISTS\r\nSTORED\r\nEXISTS\r\nNOT_FOUND\r\nEXISTS\r\nVALUE a 3 1\r\nc\r\nEND\r\n"
    );
    // Empty values are values.
    let r = all(&mut s, b"set e 0 0 0\r\n\r\nget e\r\n");
    assert_eq!(text(&r), "STORED\r\nVALUE e 0 0\r\n\r\nEND\r\n");
}

#[test]
fn ascii_noreply_suppresses_every_storage_reply() {
    let (mut s, store) = session();
    let r = all(
        &mut s,
        b"set a 0 0 1 noreply\r\n1\r\nadd a 0 0 1 noreply\r\n2\r\nreplace a 0 0 1 noreply\r\n3\r\n\
          append a 0 0 1 noreply\r\n4\r\nprepend a 0 0 1 noreply\r\n5\r\nincr a 10 noreply\r\n\
          decr a 1 noreply\r\ntouch a 10 noreply\r\ndelete nope noreply\r\nflush_all 100 noreply\r\n\
          verbosity 1 noreply\r\nget a\r\n",
    );
    assert_eq!(text(&r), "VALUE a 0 3\r\n543\r\nEND\r\n");
    let cas = cas_of(&store, b"a");
    let r = all(
        &mut s,
        format!("cas a 0 0 1 {cas} noreply\r\nz\r\ndelete a noreply\r\nget a\r\n").as_bytes(),
    );
    assert_eq!(text(&r), "END\r\n");
}

#[test]
fn ascii_delete_variants() {
    let (mut s, _) = session();
    let r = all(
        &mut s,
        b"set a 0 0 1\r\nx\r\ndelete a 0\r\ndelete a\r\ndelete a 1\r\ndelete a x noreply\r\n",
    );
    // As memcached 1.6.18: the refusal of the last is silent, as it says noreply.
    assert_eq!(
        text(&r),
        "STORED\r\nDELETED\r\nNOT_FOUND\r\n\
         CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
    );
}

#[test]
fn ascii_incr_decr() {
    let (mut s, _) = session();
    let r = all(
        &mut s,
        b"incr n 1\r\nset n 0 0 2\r\n10\r\nincr n 5\r\ndecr n 100\r\nget n\r\n\
          set m 0 0 20\r\n18446744073709551615\r\nincr m 2\r\nset x 0 0 1\r\nx\r\nincr x 1\r\n\
          incr n -1\r\nincr n 18446744073709551616\r\ndecr n abc\r\n",
    );
    assert_eq!(
        text(&r),
        "NOT_FOUND\r\nSTORED\r\n15\r\n0\r\nVALUE n 0 2\r\n0 \r\nEND\r\n\
         STORED\r\n1\r\nSTORED\r\n\
         CLIENT_ERROR cannot increment or decrement non-numeric value\r\n\
         CLIENT_ERROR invalid numeric delta argument\r\n\
         CLIENT_ERROR invalid numeric delta argument\r\n\
         CLIENT_ERROR invalid numeric delta argument\r\n"
    );
    // A longer result grows the value.
    let r = all(&mut s, b"set g 0 0 1\r\n9\r\nincr g 1\r\nget g\r\n");
    assert_eq!(text(&r), "STORED\r\n10\r\nVALUE g 0 2\r\n10\r\nEND\r\n");
}

#[test]
fn ascii_touch_gat_and_expiry() {
    let (mut s, store) = session();
    let r = all(
        &mut s,
        b"touch a 10\r\nset a 7 0 1\r\nx\r\ntouch a 10\r\ngat 100 a b\r\n",
    );
    assert_eq!(
        text(&r),
        "NOT_FOUND\r\nSTORED\r\nTOUCHED\r\nVALUE a 7 1\r\nx\r\nEND\r\n"
    );
    let cas = cas_of(&store, b"a");
    let r = all(&mut s, b"gats 5 a\r\n");
    assert_eq!(text(&r), format!("VALUE a 7 1 {cas}\r\nx\r\nEND\r\n"));
    store.advance_clock(6);
    assert_eq!(text(&all(&mut s, b"get a\r\n")), "END\r\n", "gats set 5 s");
    let r = all(&mut s, b"touch a x\r\ngat x a\r\n");
    assert_eq!(
        text(&r),
        "CLIENT_ERROR invalid exptime argument\r\nCLIENT_ERROR invalid exptime argument\r\n"
    );
}

#[test]
fn ascii_exptime_forms() {
    let (mut s, store) = session();
    let future = store.epoch() + i64::from(store.now()) + 1000;
    let past = store.epoch() + i64::from(store.now()) - 1000;
    let req = format!(
        "set rel 0 10 1\r\nr\r\nset neg 0 -1 1\r\nn\r\nset never 0 0 1\r\nv\r\n\
         set abs 0 {future} 1\r\na\r\nset old 0 {past} 1\r\no\r\nget rel neg never abs old\r\n"
    );
    let r = all(&mut s, req.as_bytes());
    assert_eq!(
        text(&r),
        "STORED\r\nSTORED\r\nSTORED\r\nSTORED\r\nSTORED\r\n\
         VALUE rel 0 1\r\nr\r\nVALUE never 0 1\r\nv\r\nVALUE abs 0 1\r\na\r\nEND\r\n"
    );
    store.advance_clock(10);
    let r = all(&mut s, b"get rel never abs\r\n");
    assert_eq!(
        text(&r),
        "VALUE never 0 1\r\nv\r\nVALUE abs 0 1\r\na\r\nEND\r\n"
    );
    store.advance_clock(1000);
    let r = all(&mut s, b"get never abs\r\n");
    assert_eq!(text(&r), "VALUE never 0 1\r\nv\r\nEND\r\n");
}

#[test]
fn ascii_flush_all() {
    let (mut s, store) = session();
    let r = all(
        &mut s,
        b"set a 0 0 1\r\nx\r\nflush_all\r\nget a\r\nset a 0 0 1\r\ny\r\nflush_all 10\r\nget a\r\n\
          flush_all x\r\nflush_all 0 0 0\r\n",
    );
    assert_eq!(
        text(&r),
        "STORED\r\nOK\r\nEND\r\nSTORED\r\nOK\r\nVALUE a 0 1\r\ny\r\nEND\r\n\
         CLIENT_ERROR invalid exptime argument\r\nERROR\r\n"
    );
    store.advance_clock(10);
    assert_eq!(text(&all(&mut s, b"get a\r\n")), "END\r\n");
    // Items stored after the delayed flush took effect live on.
    let r = all(&mut s, b"set b 0 0 1\r\nz\r\nget b\r\n");
    assert_eq!(text(&r), "STORED\r\nVALUE b 0 1\r\nz\r\nEND\r\n");
}

#[test]
fn ascii_slabs_commands_answer_as_memcached_without_slab_reassign() {
    let (mut s, _) = session();
    let r = all(
        &mut s,
        b"slabs automove invalid\r\nslabs automove 1\r\nslabs automove 3\r\n\
          slabs automove 0 noreply\r\nslabs automove ratio 0.5\r\nslabs automove ratio x\r\n\
          slabs reassign 1 2\r\nslabs reassign 1 2 noreply\r\nslabs\r\n",
    );
    assert_eq!(
        text(&r),
        "CLIENT_ERROR bad command line format\r\nOK\r\nERROR\r\nOK\r\nERROR\r\n\
         CLIENT_ERROR slab reassignment disabled\r\nERROR\r\nERROR\r\n"
    );
}

#[test]
fn ascii_misc_commands() {
    let (mut s, _) = session();
    let r = all(
        &mut s,
        b"version\r\nverbosity 1\r\nverbosity\r\nverbosity x\r\nfoo\r\nx\r\n\r\nGET a\r\nget\r\n\
          stats reset\r\nstats nope\r\n",
    );
    assert_eq!(
        text(&r),
        format!(
            "VERSION {}\r\nOK\r\nERROR\r\nCLIENT_ERROR bad command line format\r\nERROR\r\nERROR\r\n\
             ERROR\r\nERROR\r\nERROR\r\nRESET\r\nERROR\r\n",
            stats::VERSION
        )
    );
}

#[test]
fn ascii_stats_report_counts() {
    let store = Arc::new(Store::new(64 << 20, MAX_ITEM));
    let stats = Arc::new(Stats::new(3));
    let mut s = Session::new(store.clone(), stats.clone(), LIMITS);
    stats.connection_opened();
    all(&mut s, b"set a 0 0 1\r\nx\r\nget a b\r\n");
    let r = text(&all(&mut s, b"stats\r\n"));
    assert!(r.ends_with("END\r\n"));
    let stat = |name: &str| -> String {
        r.lines()
            .find_map(|l| l.strip_prefix(&format!("STAT {name} ")))
            .unwrap_or_else(|| panic!("no {name} in {r}"))
            .to_string()
    };
    assert_eq!(stat("pid"), std::process::id().to_string());
    assert_eq!(stat("version"), stats::VERSION);
    assert_eq!(stat("curr_connections"), "1");
    assert_eq!(stat("total_connections"), "1");
    assert_eq!(stat("cmd_get"), "2");
    assert_eq!(stat("cmd_set"), "1");
    assert_eq!(stat("get_hits"), "1");
    assert_eq!(stat("get_misses"), "1");
    assert_eq!(stat("curr_items"), "1");
    assert_eq!(stat("total_items"), "1");
    assert_eq!(stat("bytes"), store.bytes().to_string());
    assert_eq!(stat("limit_maxbytes"), (64 << 20).to_string());
    assert_eq!(stat("threads"), "3");
    assert_eq!(stat("evictions"), "0");
    for name in ["uptime", "time"] {
        stat(name).parse::<u64>().unwrap();
    }
    let r = text(&all(&mut s, b"stats settings\r\n"));
    assert!(r.contains("STAT item_size_max 1048576\r\n"), "{r}");
    assert!(r.ends_with("END\r\n"));
}

#[test]
fn ascii_quit_closes_without_reply() {
    let (mut s, _) = session();
    let (p, r) = run(&mut s, b"get a\r\nquit\r\nget a\r\n");
    assert!(p.close);
    assert_eq!(text(&r), "END\r\n");
    // After quit nothing more is executed.
    let (p, r) = run(&mut s, b"version\r\n");
    assert!(p.close);
    assert!(r.is_empty());
}

#[test]
fn ascii_bad_lines() {
    let (mut s, _) = session();
    let long_key = "k".repeat(251);
    let key_250 = "k".repeat(250);
    let req = format!(
        "set {long_key} 0 0 1\r\nx\r\nget a {long_key}\r\nget {key_250}\r\nincr {long_key} 1\r\n\
         set a 0 0 -1\r\nset a x 0 1\r\nset a 0 0 1 2 3 4\r\nset a -1 0 1\r\n"
    );
    let r = all(&mut s, req.as_bytes());
    assert_eq!(
        text(&r),
        "CLIENT_ERROR bad command line format\r\nERROR\r\n\
         CLIENT_ERROR bad command line format\r\nEND\r\n\
         CLIENT_ERROR bad command line format\r\nCLIENT_ERROR bad command line format\r\n\
         CLIENT_ERROR bad command line format\r\nERROR\r\nCLIENT_ERROR bad command line format\r\n"
    );
}

#[test]
fn ascii_flags_are_read_as_memcached_reads_them() {
    let (mut s, _) = session();
    // Each reply as memcached 1.6.18 (64-bit) gives it: flags are C's strtoul cut to 32 bits.
    for (flags, reply) in [
        ("4294967296", "STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n"),
        ("4294967297", "STORED\r\nVALUE k 1 1\r\nx\r\nEND\r\n"),
        (
            "4294967295",
            "STORED\r\nVALUE k 4294967295 1\r\nx\r\nEND\r\n",
        ),
        (
            "18446744073709551615",
            "STORED\r\nVALUE k 4294967295 1\r\nx\r\nEND\r\n",
        ),
        (
            "-18446744073709551615",
            "STORED\r\nVALUE k 1 1\r\nx\r\nEND\r\n",
        ),
        (
            "-9223372036854775809",
            "STORED\r\nVALUE k 4294967295 1\r\nx\r\nEND\r\n",
        ),
        ("-0", "STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n"),
        ("+5", "STORED\r\nVALUE k 5 1\r\nx\r\nEND\r\n"),
        ("\t7", "STORED\r\nVALUE k 7 1\r\nx\r\nEND\r\n"),
        ("7\t", "STORED\r\nVALUE k 7 1\r\nx\r\nEND\r\n"),
        (
            "000000000000000000000000000008",
            "STORED\r\nVALUE k 8 1\r\nx\r\nEND\r\n",
        ),
    ] {
        let r = all(
            &mut s,
            format!("set k {flags} 0 1\r\nx\r\nget k\r\n").as_bytes(),
        );
        assert_eq!(text(&r), reply, "flags {flags:?}");
    }
    let refused = "CLIENT_ERROR bad command line format\r\nERROR\r\n";
    for flags in [
        "-1",
        "-4294967295",
        "-2147483648",
        "18446744073709551616",
        "-",
        "-x",
        "0x10",
        "5a",
    ] {
        let r = all(&mut s, format!("set k {flags} 0 1\r\nx\r\n").as_bytes());
        assert_eq!(text(&r), refused, "flags {flags:?}");
        let r = all(&mut s, format!("cas k {flags} 0 1 1\r\nx\r\n").as_bytes());
        assert_eq!(text(&r), refused, "cas flags {flags:?}");
    }
}

#[test]
fn ascii_nul_ends_the_command_line() {
    let (mut s, _) = session();
    // As memcached, which reads the line as a C string: `set a\0b 0 0 1` is `set a`.
    let r = all(
        &mut s,
        b"set a 0 0 1\r\nx\r\nget a\0b\r\nset a\0b 0 0 1\r\ny\r\ntouch a\0b 0\r\n\
          incr a\0b 1\r\nget \0\r\nset \0 0 0 1\r\nz\r\nstats\0 nope\r\ndelete a\0b\r\nget a\r\n",
    );
    let r = text(&r);
    let (head, rest) = r.split_at(r.find("STAT pid").expect("general stats"));
    assert_eq!(
        head,
        "STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\nERROR\r\nERROR\r\nERROR\r\nERROR\r\nERROR\r\n\
         ERROR\r\nERROR\r\n"
    );
    assert!(rest.ends_with("END\r\nDELETED\r\nEND\r\n"), "{rest}");
}

/// The `STAT` names of a `stats` reply, checking its form: `STAT name value` lines, `END`.
fn stat_names(reply: &str) -> Vec<String> {
    let body = reply.strip_suffix("END\r\n").expect("ends with END");
    body.split_terminator("\r\n")
        .map(|line| {
            let mut words = line.splitn(3, ' ');
            assert_eq!(words.next(), Some("STAT"), "{line:?}");
            let name = words.next().expect("a name").to_string();
            assert!(words.next().is_some_and(|v| !v.is_empty()), "{line:?}");
            name
        })
        .collect()
}

#[test]
fn ascii_stats_groups_answer_in_memcached_form() {
    let (mut s, store) = session();
    // Empty: memcached lists no slab class without items.
    assert_eq!(text(&all(&mut s, b"stats items\r\n")), "END\r\n");
    assert_eq!(
        text(&all(&mut s, b"stats slabs\r\n")),
        "STAT active_slabs 0\r\nSTAT total_malloced 0\r\nEND\r\n"
    );
    all(
        &mut s,
        b"set foo 0 0 3\r\nbar\r\nset e 0 100 1\r\nx\r\nget foo\r\n",
    );
    let items = text(&all(&mut s, b"stats items\r\n"));
    // Every name memcached's t/ files read from `stats items`, in memcached's order.
    let names = stat_names(&items);
    let want = [
        "number",
        "age",
        "mem_requested",
        "evicted",
        "evicted_nonzero",
        "evicted_time",
        "outofmemory",
        "tailrepairs",
        "reclaimed",
        "expired_unfetched",
        "evicted_unfetched",
        "crawler_reclaimed",
        "crawler_items_checked",
        "lrutail_reflocked",
    ];
    assert_eq!(names, want.map(|n| format!("items:1:{n}")));
    assert!(items.starts_with("STAT items:1:number 2\r\nSTAT items:1:age 0\r\n"));
    // Memcached's item sizes: 48-byte header, key + NUL, value + CRLF, 8 bytes of CAS:
    // 48 + 4 + 5 + 8 for foo, 48 + 2 + 3 + 8 for e.
    assert!(
        items.contains("STAT items:1:mem_requested 126\r\n"),
        "{items}"
    );
    // A second word is ignored, as memcached ignores it.
    assert_eq!(text(&all(&mut s, b"stats items 1\r\n")), items);

    let slabs = text(&all(&mut s, b"stats slabs\r\n"));
    assert_eq!(
        slabs,
        "STAT 1:chunk_size 96\r\nSTAT 1:chunks_per_page 10922\r\nSTAT 1:total_pages 1\r\n\
         STAT 1:total_chunks 10922\r\nSTAT 1:used_chunks 2\r\nSTAT 1:free_chunks 10920\r\n\
         STAT 1:free_chunks_end 0\r\nSTAT active_slabs 1\r\nSTAT total_malloced 1048576\r\n\
         END\r\n"
    );

    let settings = text(&all(&mut s, b"stats settings\r\n"));
    let names = stat_names(&settings);
    for name in [
        "maxbytes",
        "maxconns",
        "tcpport",
        "udpport",
        "evictions",
        "domain_socket",
        "num_threads",
        "cas_enabled",
        "auth_enabled_sasl",
        "item_size_max",
        "shutdown_command",
        "flush_enabled",
        "dump_enabled",
        "lru_crawler",
        "slab_reassign",
        "track_sizes",
        "ssl_enabled",
    ] {
        assert!(names.iter().any(|n| n == name), "no {name} in {settings}");
    }
    for line in [
        "STAT maxconns 1024\r\n",
        "STAT evictions on\r\n",
        "STAT domain_socket NULL\r\n",
        "STAT cas_enabled yes\r\n",
        "STAT auth_enabled_sasl no\r\n",
        "STAT shutdown_command no\r\n",
        "STAT item_size_max 1048576\r\n",
        "STAT maxbytes 67108864\r\n",
    ] {
        assert!(settings.contains(line), "no {line:?} in {settings}");
    }

    // Byte for byte as memcached 1.6.18 (sizes tracking off; detail off and empty).
    for (request, reply) in [
        (
            &b"stats sizes\r\n"[..],
            "STAT sizes_status disabled\r\nEND\r\n",
        ),
        (b"stats sizes_disable\r\n", "STAT sizes_status disabled\r\n"),
        (
            b"stats detail\r\n",
            "CLIENT_ERROR usage: stats detail on|off|dump\r\n",
        ),
        (b"stats detail off\r\n", "OK\r\n"),
        (b"stats detail dump\r\n", "END\r\n"),
        (
            b"stats cachedump 1\r\n",
            "CLIENT_ERROR bad command line\r\n",
        ),
        (
            b"stats cachedump x 1\r\n",
            "CLIENT_ERROR bad command line format\r\n",
        ),
        (
            b"stats cachedump 64 1\r\n",
            "CLIENT_ERROR Illegal slab id\r\n",
        ),
        (b"stats cachedump 2 0\r\n", "END\r\n"),
        (b"stats cachedump 1 1\r\n", "ITEM foo [3 b; 0 s]\r\nEND\r\n"),
        (b"stats nope\r\n", "ERROR\r\n"),
        (b"stats  \r\n", ""),
    ] {
        let r = text(&all(&mut s, request));
        if reply.is_empty() {
            assert!(r.starts_with("STAT pid "), "{r}"); // `stats` with spaces after it
        } else {
            assert_eq!(r, reply, "{}", text(request));
        }
    }
    let dump = text(&all(&mut s, b"stats cachedump 1 0\r\n"));
    assert!(dump.contains("ITEM foo [3 b; 0 s]\r\n"), "{dump}");
    let expiry = store.epoch() + i64::from(store.expiry(100));
    assert!(
        dump.contains(&format!("ITEM e [1 b; {expiry} s]\r\n")),
        "{dump}"
    );
    // No connection table in a bare session: just the end.
    assert_eq!(text(&all(&mut s, b"stats conns\r\n")), "END\r\n");
}

#[test]
fn ascii_stats_reset_zeroes_what_memcached_zeroes() {
    let (mut s, store) = session();
    all(
        &mut s,
        b"set a 0 0 1\r\nx\r\nget a b\r\ndelete b\r\nincr a 1\r\nflush_all 100\r\n",
    );
    store.advance_clock(200);
    all(&mut s, b"get a\r\nset c 0 0 1\r\nz\r\n");
    let stat = |r: &str, name: &str| -> String {
        r.lines()
            .find_map(|l| l.strip_prefix(&format!("STAT {name} ")))
            .unwrap_or_else(|| panic!("no {name} in {r}"))
            .to_string()
    };
    let before = text(&all(&mut s, b"stats\r\n"));
    assert_eq!(stat(&before, "get_flushed"), "1");
    assert_eq!(stat(&before, "cmd_get"), "3");
    assert_eq!(text(&all(&mut s, b"stats reset\r\n")), "RESET\r\n");
    let after = text(&all(&mut s, b"stats\r\n"));
    for name in [
        "cmd_get",
        "cmd_set",
        "cmd_flush",
        "get_hits",
        "get_misses",
        "get_flushed",
        "delete_misses",
        "incr_hits",
        "total_items",
        "bytes_read",
    ] {
        assert_eq!(stat(&after, name), "0", "{name} after reset");
    }
    // What describes the present stays.
    assert_eq!(stat(&after, "curr_items"), "1");
    assert_eq!(stat(&after, "bytes"), store.bytes().to_string());
}

#[test]
fn ascii_bad_data_chunk() {
    let (mut s, _) = session();
    // As memcached: the announced bytes plus two are taken as the block; the rest is parsed
    // as commands.
    let r = all(&mut s, b"set b 0 0 3\r\nabcde\r\nget b\r\n");
    assert_eq!(text(&r), "CLIENT_ERROR bad data chunk\r\nERROR\r\nEND\r\n");
}

#[test]
fn ascii_too_large_is_refused_and_swallowed() {
    let store = Arc::new(Store::new(64 << 20, 100));
    let limits = Limits { max_item_size: 100 };
    let mut s = Session::new(store.clone(), Arc::new(Stats::new(1)), limits);
    let mut out = WriteBuffer::new();
    let p = s.process(b"set a 0 0 1\r\nx\r\n", &mut out);
    assert_eq!(p.consumed, 16);
    drain(&mut out);
    // The refusal comes at once; the value is swallowed as it arrives, over several calls,
    // and the old value is gone (as memcached: a failed set must not leave stale data).
    let p = s.process(b"set a 0 0 1000\r\n", &mut out);
    assert_eq!((p.consumed, p.close), (16, false));
    assert_eq!(
        text(&drain(&mut out)),
        "SERVER_ERROR object too large for cache\r\n"
    );
    assert!(store.get(b"a").is_none());
    let p = s.process(&[b'z'; 600], &mut out);
    assert_eq!(p.consumed, 600);
    assert!(out.is_empty());
    let mut rest = vec![b'z'; 400];
    rest.extend(b"\r\nget a\r\n");
    let p = s.process(&rest, &mut out);
    assert_eq!(p.consumed, rest.len());
    assert_eq!(text(&drain(&mut out)), "END\r\n");
}

#[test]
fn ascii_line_limits() {
    // A line with no newline past 2048 bytes: error and close.
    let (mut s, _) = session();
    let (p, r) = run(&mut s, &[b'a'; 2048]);
    assert_eq!((p.consumed, p.close, p.need), (0, false, 0));
    assert!(r.is_empty());
    let (p, r) = run(&mut s, &[b'a'; 2049]);
    assert!(p.close);
    assert_eq!(text(&r), "CLIENT_ERROR line too long\r\n");
    // Same for a complete but overlong line that is not a get.
    let (mut s, _) = session();
    let mut line = vec![b'x'; 3000];
    line.extend(b"\r\n");
    let (p, r) = run(&mut s, &line);
    assert!(p.close);
    assert_eq!(text(&r), "CLIENT_ERROR line too long\r\n");
    // A multi-get longer than 2048 bytes is answered key by key as it arrives: what is not taken
    // is at most the key still arriving.
    let (mut s, _) = session();
    all(&mut s, b"set k0 0 0 1\r\nv\r\n");
    let mut get = b"get".to_vec();
    for i in 0..1000 {
        get.extend(format!(" k{i}").as_bytes());
    }
    let (p, r) = run(&mut s, &get);
    assert_eq!((p.close, p.need), (false, 0));
    assert_eq!(&get[p.consumed..], b"k999");
    assert_eq!(text(&r), "VALUE k0 0 1\r\nv\r\n");
    assert_eq!(
        text(&all(&mut s, b" k999 k0\r\n")),
        "VALUE k0 0 1\r\nv\r\nEND\r\n"
    );
    // A multi-get whose key never ends: refused once it is over 250 bytes, and the rest of its
    // line is discarded as it arrives; the connection stays open.
    let (mut s, _) = session();
    let mut huge = b"get ".to_vec();
    huge.resize(handler::MAX_LINE + 300, b'k');
    let (p, r) = run(&mut s, &huge);
    assert_eq!((p.consumed, p.close), (huge.len(), false));
    assert_eq!(text(&r), "CLIENT_ERROR bad command line format\r\n");
    let (p, r) = run(&mut s, &[b'k'; 100_000]);
    assert_eq!((p.consumed, p.close), (100_000, false));
    assert!(r.is_empty());
    assert_eq!(text(&all(&mut s, b"kk\r\nget k\r\n")), "END\r\n");
}

/// `n` keys on one `get` line, `key-0` to `key-{n-1}`, of which every third is stored with a
/// value of `i % 5000` bytes (some copied beside their header, some pinned); returns the line
/// and the response memcached gives to it.
fn long_multiget(store: &Store, n: usize, cmd: &str) -> (Vec<u8>, Vec<u8>) {
    let mut line = cmd.as_bytes().to_vec();
    let mut expected = Vec::new();
    for i in 0..n {
        let key = format!("key-{i}");
        line.extend(format!(" {key}").as_bytes());
        if i % 3 == 0 {
            let value: Vec<u8> = (0..i % 5000).map(|j| (j % 251) as u8).collect();
            store.store(Mode::Set, key.as_bytes(), &value, i as u32, 0, 0);
            let cas = store.get(key.as_bytes()).unwrap().cas;
            expected.extend(format!("VALUE {key} {i} {}", value.len()).as_bytes());
            if cmd == "gets" {
                expected.extend(format!(" {cas}").as_bytes());
            }
            expected.extend(b"\r\n");
            expected.extend(&value);
            expected.extend(b"\r\n");
        }
    }
    line.extend(b"\r\n");
    expected.extend(b"END\r\n");
    (line, expected)
}

#[test]
fn ascii_an_18000_key_get_is_answered_whole_and_trickled() {
    let n = if cfg!(miri) { 300 } else { 18_000 };
    for cmd in ["get", "gets"] {
        let (mut s, store) = session();
        let (line, expected) = long_multiget(&store, n, cmd);
        assert!(line.len() > 100_000 || cfg!(miri));
        assert!(all(&mut s, &line) == expected, "{cmd}: whole line");
        // In pieces of 1 to 997 bytes, as reads bring them.
        let mut out = WriteBuffer::new();
        let mut buffered = Vec::new();
        let mut response = Vec::new();
        for (i, piece) in line.chunks(997).enumerate() {
            let cut = i % piece.len().max(1);
            for part in [&piece[..cut], &piece[cut..]] {
                buffered.extend_from_slice(part);
                let p = s.process(&buffered, &mut out);
                assert!(!p.close);
                buffered.drain(..p.consumed);
                // Until the line is known to be long, it is kept; then one key at most.
                assert!(
                    buffered.len() <= handler::MAX_LINE,
                    "{} bytes kept",
                    buffered.len()
                );
                response.extend(drain(&mut out));
            }
        }
        assert!(buffered.is_empty());
        assert!(response == expected, "{cmd}: in pieces");
    }
}

#[test]
fn ascii_a_long_multiget_stops_at_the_high_water_mark() {
    let (mut s, store) = session();
    let n = if cfg!(miri) { 300 } else { 18_000 };
    let (line, expected) = long_multiget(&store, n, "get");
    let mut out = WriteBuffer::new();
    out.set_watermarks(Some(Watermarks::new(16 * 1024, 64 * 1024)));
    let mut input = &line[..];
    let mut response = Vec::new();
    let mut pauses = 0;
    while !input.is_empty() {
        let p = s.process(input, &mut out);
        assert!(!p.close);
        input = &input[p.consumed..];
        // Never more than the high mark and one response over it.
        assert!(
            out.pending_len() < 64 * 1024 + 8 * 1024,
            "{}",
            out.pending_len()
        );
        if !input.is_empty() {
            assert!(out.is_backed_up());
            pauses += 1;
        }
        // A slow reader: a few KiB at a time, down to the low mark.
        while out.is_backed_up() {
            let chunk: Vec<u8> = out
                .io_slices()
                .iter()
                .take(3)
                .flat_map(|s| s.to_vec())
                .collect();
            let take = chunk.len().min(4096);
            response.extend_from_slice(&chunk[..take]);
            out.advance(take);
        }
    }
    response.extend(drain(&mut out));
    assert!(pauses > 10 || cfg!(miri), "{pauses} pauses");
    assert!(response == expected);
}

#[test]
fn ascii_long_multigets_refuse_long_keys_and_bad_expiry() {
    let (mut s, store) = session();
    store.store(Mode::Set, b"a", b"1", 0, 0, 0);
    let filler = " miss".repeat(500);
    let long_key = "k".repeat(251);
    // Values already queued stay; the reply ends with the error; the rest of the line goes.
    let input = format!("get a{filler} {long_key} a{filler}\r\nget a\r\n");
    assert_eq!(
        text(&all(&mut s, input.as_bytes())),
        "VALUE a 0 1\r\n1\r\nCLIENT_ERROR bad command line format\r\nVALUE a 0 1\r\n1\r\nEND\r\n"
    );
    // gat/gats: the expiry comes first; a bad one refuses the line.
    let input = format!("gat 0 a{filler}\r\ngats x a{filler}\r\ngat 100 a{filler}\r\n");
    assert_eq!(
        text(&all(&mut s, input.as_bytes())),
        "VALUE a 0 1\r\n1\r\nEND\r\nCLIENT_ERROR invalid exptime argument\r\n\
         VALUE a 0 1\r\n1\r\nEND\r\n"
    );
    // A NUL ends the line, as memcached's C string.
    let input = format!("get a{filler} a\0a{filler}\r\nget a\r\n");
    assert_eq!(
        text(&all(&mut s, input.as_bytes())),
        "VALUE a 0 1\r\n1\r\nVALUE a 0 1\r\n1\r\nEND\r\nVALUE a 0 1\r\n1\r\nEND\r\n"
    );
    let input = format!("get a{filler} \0a{filler}\r\nget a\r\n");
    assert_eq!(
        text(&all(&mut s, input.as_bytes())),
        "VALUE a 0 1\r\n1\r\nEND\r\nVALUE a 0 1\r\n1\r\nEND\r\n"
    );
    // A long line of spaces after `get`: no key, memcached's ERROR.
    let input = format!("get {}\r\nversion\r\n", " ".repeat(3000));
    assert!(text(&all(&mut s, input.as_bytes())).starts_with("ERROR\r\nVERSION "));
}

/// The whole input in one call and the input one byte at a time must answer the same bytes and
/// agree on closing.
fn same_whole_and_trickled(input: &[u8]) -> (Vec<u8>, bool) {
    let (mut s, _) = session();
    let (p, whole) = run(&mut s, input);
    let (mut s, _) = session();
    let (trickled, closed) = trickle(&mut s, input);
    if !closed {
        assert_eq!(p.consumed, input.len());
    }
    assert_eq!(text(&trickled), text(&whole));
    assert_eq!(closed, p.close);
    (whole, closed)
}

#[test]
fn ascii_long_lines_do_not_depend_on_how_they_arrive() {
    let mut keys = String::new();
    while keys.len() < 5000 {
        keys.push_str(" somekey");
    }
    let cases = [
        (format!("get{keys}\r\n"), "END\r\n", false),
        (format!("   gets{keys}\r\n"), "END\r\n", false),
        (format!("gat 10{keys}\r\n"), "END\r\n", false),
        // The expiry is read as it arrives, and never past the end of its line.
        (
            format!("gat {}\r\nget k\r\n", "b".repeat(3000)),
            "CLIENT_ERROR invalid exptime argument\r\nEND\r\n",
            false,
        ),
        (
            format!("gat {}10{keys}\r\n", " ".repeat(3000)),
            "END\r\n",
            false,
        ),
        (
            format!("get{keys} {}\r\n", "k".repeat(300)),
            "CLIENT_ERROR bad command line format\r\n",
            false,
        ),
        (
            format!("{}get{keys}\r\n", " ".repeat(101)),
            "CLIENT_ERROR line too long\r\n",
            true,
        ),
        (
            format!("delete{keys}\r\n"),
            "CLIENT_ERROR line too long\r\n",
            true,
        ),
        (
            format!("get k{}\r\n", "x".repeat(2040)),
            "CLIENT_ERROR bad command line format\r\n",
            false,
        ),
        (format!("{}\r\n", "y".repeat(2047)), "ERROR\r\n", false),
        (
            format!("{}\r\n", "y".repeat(2048)),
            "CLIENT_ERROR line too long\r\n",
            true,
        ),
    ];
    for (input, reply, closes) in cases {
        let (whole, closed) = same_whole_and_trickled(input.as_bytes());
        assert_eq!(
            (text(&whole).as_str(), closed),
            (reply, closes),
            "{:.40}",
            input
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Binary protocol

#[test]
fn binary_set_get_getk_and_quiet_gets() {
    let (mut s, store) = session();
    let r = all(
        &mut s,
        &breq(op::SET, b"key", &set_ext(0xcafe, 0), b"value", 0),
    );
    let cas = cas_of(&store, b"key");
    assert_eq!(r, bres(op::SET, 0, cas, &[], &[], &[]));
    let flags = 0xcafe_u32.to_be_bytes();
    let req = [
        breq(op::GET, b"key", &[], &[], 0),
        breq(op::GETK, b"key", &[], &[], 0),
        breq(op::GETQ, b"key", &[], &[], 0),
        breq(op::GETKQ, b"key", &[], &[], 0),
        breq(op::GET, b"nokey", &[], &[], 0),
        breq(op::GETK, b"nokey", &[], &[], 0),
        breq(op::GETQ, b"nokey", &[], &[], 0),
        breq(op::GETKQ, b"nokey", &[], &[], 0),
        breq(op::NOOP, b"", &[], &[], 0),
    ]
    .concat();
    let expected = [
        bres(op::GET, 0, cas, &flags, &[], b"value"),
        bres(op::GETK, 0, cas, &flags, b"key", b"value"),
        bres(op::GETQ, 0, cas, &flags, &[], b"value"),
        bres(op::GETKQ, 0, cas, &flags, b"key", b"value"),
        berr(op::GET, st::KEY_ENOENT, "Not found"),
        bres(op::GETK, st::KEY_ENOENT, 0, &[], b"nokey", &[]),
        bres(op::NOOP, 0, 0, &[], &[], &[]),
    ]
    .concat();
    assert_eq!(all(&mut s, &req), expected);
}

#[test]
fn binary_storage_commands_and_quiet_forms() {
    let (mut s, store) = session();
    let ext = set_ext(1, 0);
    // Quiet successes are silent; quiet failures are not.
    let r = all(&mut s, &breq(op::ADD, b"a", &ext, b"1", 0));
    assert_eq!(r, bres(op::ADD, 0, cas_of(&store, b"a"), &[], &[], &[]));
    let req = [
        breq(op::ADD, b"a", &ext, b"2", 0),
        breq(op::ADDQ, b"a", &ext, b"2", 0),
        breq(op::ADDQ, b"b", &ext, b"b", 0),
        breq(op::REPLACE, b"zz", &ext, b"x", 0),
        breq(op::REPLACEQ, b"zz", &ext, b"x", 0),
        breq(op::REPLACEQ, b"a", &ext, b"3", 0),
        breq(op::SETQ, b"c", &ext, b"c", 0),
        breq(op::APPEND, b"zz", &[], b"x", 0),
        breq(op::PREPENDQ, b"zz", &[], b"x", 0),
        breq(op::APPENDQ, b"a", &[], b">", 0),
        breq(op::PREPENDQ, b"a", &[], b"<", 0),
        breq(op::NOOP, b"", &[], &[], 0),
    ]
    .concat();
    let r = all(&mut s, &req);
    let expected = [
        berr(op::ADD, st::KEY_EEXISTS, "Data exists for key."),
        berr(op::ADDQ, st::KEY_EEXISTS, "Data exists for key."),
        berr(op::REPLACE, st::KEY_ENOENT, "Not found"),
        berr(op::REPLACEQ, st::KEY_ENOENT, "Not found"),
        berr(op::APPEND, st::NOT_STORED, "Not stored."),
        berr(op::PREPENDQ, st::NOT_STORED, "Not stored."),
        bres(op::NOOP, 0, 0, &[], &[], &[]),
    ]
    .concat();
    assert_eq!(r, expected);
    for (key, value) in [(&b"a"[..], &b"<3>"[..]), (b"b", b"b"), (b"c", b"c")] {
        let item = store.get(key).unwrap();
        assert_eq!((&*item.value, item.flags), (value, 1));
    }
    // Append and prepend answer with the new CAS.
    let r = all(&mut s, &breq(op::APPEND, b"a", &[], b"!", 0));
    assert_eq!(r, bres(op::APPEND, 0, cas_of(&store, b"a"), &[], &[], &[]));
}

#[test]
fn binary_cas_in_headers() {
    let (mut s, store) = session();
    let ext = set_ext(0, 0);
    all(&mut s, &breq(op::SET, b"a", &ext, b"1", 0));
    let cas = cas_of(&store, b"a");
    let req = [
        breq(op::SET, b"a", &ext, b"2", cas + 100),
        breq(op::ADD, b"zz", &ext, b"x", 5),
        breq(op::DELETE, b"a", &[], &[], cas + 100),
        breq(op::REPLACE, b"a", &ext, b"3", cas),
    ]
    .concat();
    let r = all(&mut s, &req);
    let new_cas = cas_of(&store, b"a");
    assert!(new_cas > cas);
    let expected = [
        berr(op::SET, st::KEY_EEXISTS, "Data exists for key."),
        berr(op::ADD, st::KEY_ENOENT, "Not found"),
        berr(op::DELETE, st::KEY_EEXISTS, "Data exists for key."),
        bres(op::REPLACE, 0, new_cas, &[], &[], &[]),
    ]
    .concat();
    assert_eq!(r, expected);
    let r = all(&mut s, &breq(op::DELETE, b"a", &[], &[], new_cas));
    assert_eq!(r, bres(op::DELETE, 0, 0, &[], &[], &[]));
}

#[test]
fn binary_delete_incr_decr() {
    let (mut s, store) = session();
    let ext = set_ext(0, 0);
    let r = all(&mut s, &breq(op::SET, b"n", &ext, b"x", 0));
    assert_eq!(r, bres(op::SET, 0, cas_of(&store, b"n"), &[], &[], &[]));
    let req = [
        breq(op::INCREMENT, b"n", &incr_ext(1, 0, 0), &[], 0),
        breq(op::DELETE, b"n", &[], &[], 0),
        breq(op::DELETEQ, b"n", &[], &[], 0),
        // Absent, expiration 0xffffffff: not created.
        breq(op::INCREMENT, b"n", &incr_ext(1, 5, u32::MAX), &[], 0),
        // Absent: created with the initial value, returned as is.
        breq(op::DECREMENT, b"n", &incr_ext(1, 5, 0), &[], 0),
    ]
    .concat();
    let r = all(&mut s, &req);
    let expected = [
        berr(
            op::INCREMENT,
            st::DELTA_BADVAL,
            "Non-numeric server-side value for incr or decr",
        ),
        bres(op::DELETE, 0, 0, &[], &[], &[]),
        berr(op::DELETEQ, st::KEY_ENOENT, "Not found"),
        berr(op::INCREMENT, st::KEY_ENOENT, "Not found"),
        bres(
            op::DECREMENT,
            0,
            cas_of(&store, b"n"),
            &[],
            &[],
            &5u64.to_be_bytes(),
        ),
    ]
    .concat();
    assert_eq!(r, expected);
    // 5 + (2^64 - 1) wraps to 4; decr floors at 0; each answers with the item's new CAS.
    for (req, value) in [
        (
            breq(op::INCREMENT, b"n", &incr_ext(u64::MAX, 0, 0), &[], 0),
            4u64,
        ),
        (breq(op::DECREMENT, b"n", &incr_ext(100, 0, 0), &[], 0), 0),
    ] {
        let r = all(&mut s, &req);
        let cas = cas_of(&store, b"n");
        assert_eq!(r, bres(req[1], 0, cas, &[], &[], &value.to_be_bytes()));
    }
    let req = [
        breq(op::INCREMENTQ, b"n", &incr_ext(7, 0, 0), &[], 0),
        breq(op::DECREMENTQ, b"n", &incr_ext(2, 0, 0), &[], 0),
        breq(op::GET, b"n", &[], &[], 0),
    ]
    .concat();
    let r = all(&mut s, &req);
    assert_eq!(
        r,
        bres(op::GET, 0, cas_of(&store, b"n"), &[0; 4], &[], b"5")
    );
}

#[test]
fn binary_stat_groups_as_memcached() {
    let (mut s, _) = session();
    // detail on: an empty answer; a get of a prefixed key counted; dump: one statistic.
    let req = [
        breq(op::STAT, b"detail on", &[], &[], 0),
        breq(op::GET, b"pre:k", &[], &[], 0),
        breq(op::STAT, b"detail dump", &[], &[], 0),
        breq(op::STAT, b"detail off", &[], &[], 0),
        breq(op::STAT, b"detail x", &[], &[], 0),
    ]
    .concat();
    let expected = [
        bres(op::STAT, 0, 0, &[], &[], &[]),
        berr(op::GET, st::KEY_ENOENT, "Not found"),
        bres(
            op::STAT,
            0,
            0,
            &[],
            b"detailed",
            b"PREFIX pre get 1 hit 0 set 0 del 0\r\nEND\r\n",
        ),
        bres(op::STAT, 0, 0, &[], &[], &[]),
        bres(op::STAT, 0, 0, &[], &[], &[]),
        berr(op::STAT, st::KEY_ENOENT, "Not found"),
    ]
    .concat();
    assert_eq!(text(&all(&mut s, &req)), text(&expected));
    // items and slabs: their statistics, then the empty one; reset clears the counters.
    all(&mut s, &breq(op::SET, b"a", &set_ext(0, 0), b"1", 0));
    for group in [&b"items"[..], b"slabs"] {
        let r = all(&mut s, &breq(op::STAT, group, &[], &[], 0));
        assert!(r.ends_with(&bres(op::STAT, 0, 0, &[], &[], &[])));
        assert!(r.len() > 24 * 3, "{}", text(&r));
    }
    let get_misses = |s: &mut Session| {
        let r = all(s, &breq(op::STAT, b"", &[], &[], 0));
        let at = r.windows(10).position(|w| w == b"get_misses").unwrap();
        r[at + 10] - b'0'
    };
    assert_eq!(get_misses(&mut s), 1);
    all(&mut s, &breq(op::STAT, b"reset", &[], &[], 0));
    assert_eq!(get_misses(&mut s), 0);
}

#[test]
fn binary_flush_noop_version_stat_quit() {
    let (mut s, store) = session();
    all(&mut s, &breq(op::SET, b"a", &set_ext(0, 0), b"1", 0));
    let req = [
        breq(op::FLUSH, b"", &[], &[], 0),
        breq(op::GET, b"a", &[], &[], 0),
        breq(op::FLUSHQ, b"", &10u32.to_be_bytes(), &[], 0),
        breq(op::VERSION, b"", &[], &[], 0),
        breq(op::STAT, b"nope", &[], &[], 0),
        breq(op::STAT, b"reset", &[], &[], 0),
        breq(op::NOOP, b"", &[], &[], 0),
    ]
    .concat();
    let expected = [
        bres(op::FLUSH, 0, 0, &[], &[], &[]),
        berr(op::GET, st::KEY_ENOENT, "Not found"),
        bres(op::VERSION, 0, 0, &[], &[], stats::VERSION.as_bytes()),
        berr(op::STAT, st::KEY_ENOENT, "Not found"),
        bres(op::STAT, 0, 0, &[], &[], &[]),
        bres(op::NOOP, 0, 0, &[], &[], &[]),
    ]
    .concat();
    assert_eq!(all(&mut s, &req), expected);
    assert!(store.is_empty());
    // stat without a key: one packet per statistic, then an empty one.
    let r = all(&mut s, &breq(op::STAT, b"", &[], &[], 0));
    let mut names = Vec::new();
    let mut at = 0;
    loop {
        let head = &r[at..at + 24];
        assert_eq!((head[0], head[1]), (0x81, op::STAT));
        let keylen = u16::from_be_bytes([head[2], head[3]]) as usize;
        let body = u32::from_be_bytes([head[8], head[9], head[10], head[11]]) as usize;
        names.push(text(&r[at + 24..at + 24 + keylen]));
        at += 24 + body;
        if keylen == 0 {
            assert_eq!(body, 0);
            break;
        }
    }
    assert_eq!(at, r.len());
    for name in [
        "pid",
        "uptime",
        "curr_items",
        "total_items",
        "bytes",
        "evictions",
        "",
    ] {
        assert!(
            names.iter().any(|n| n == name),
            "{name} missing from {names:?}"
        );
    }
    // quit answers then closes; quitq closes silently.
    let (p, r) = run(&mut s, &breq(op::QUIT, b"", &[], &[], 0));
    assert!(p.close);
    assert_eq!(r, bres(op::QUIT, 0, 0, &[], &[], &[]));
    let (mut s, _) = session();
    let (p, r) = run(
        &mut s,
        &[
            breq(op::QUITQ, b"", &[], &[], 0),
            breq(op::NOOP, b"", &[], &[], 0),
        ]
        .concat(),
    );
    assert!(p.close);
    assert!(r.is_empty());
}

#[test]
fn binary_touch_and_gat() {
    let (mut s, store) = session();
    all(&mut s, &breq(op::SET, b"t", &set_ext(7, 0), b"val", 0));
    let cas = cas_of(&store, b"t");
    let ttl = 16u32.to_be_bytes();
    let flags = 7u32.to_be_bytes();
    let req = [
        breq(op::TOUCH, b"t", &ttl, &[], 0),
        breq(op::GAT, b"t", &ttl, &[], 0),
        breq(op::GATK, b"t", &ttl, &[], 0),
        breq(op::GATQ, b"zz", &ttl, &[], 0),
        breq(op::GATKQ, b"zz", &ttl, &[], 0),
        breq(op::TOUCH, b"zz", &ttl, &[], 0),
    ]
    .concat();
    let expected = [
        bres(op::TOUCH, 0, cas, &flags, &[], &[]),
        bres(op::GAT, 0, cas, &flags, &[], b"val"),
        bres(op::GATK, 0, cas, &flags, b"t", b"val"),
        berr(op::TOUCH, st::KEY_ENOENT, "Not found"),
    ]
    .concat();
    assert_eq!(all(&mut s, &req), expected);
    store.advance_clock(17);
    assert!(store.get(b"t").is_none());
}

#[test]
fn binary_unknown_opcode_is_answered_and_skipped() {
    let (mut s, _) = session();
    let req = [
        breq(0x50, b"k", &[], b"xyz", 0),
        breq(op::NOOP, b"", &[], &[], 0),
    ]
    .concat();
    let expected = [
        berr(0x50, st::UNKNOWN_COMMAND, "Unknown command"),
        bres(op::NOOP, 0, 0, &[], &[], &[]),
    ]
    .concat();
    assert_eq!(all(&mut s, &req), expected);
    // With a body near u32::MAX, the body is swallowed as it arrives: nothing buffered.
    let (mut s, _) = session();
    let (p, r) = run(&mut s, &breq_raw(0x80, 0x77, 1, 0, u32::MAX - 15, 0, b"k"));
    assert_eq!((p.consumed, p.close, p.need), (25, false, 0));
    assert_eq!(r, berr(0x77, st::UNKNOWN_COMMAND, "Unknown command"));
}

/// Inputs after which a binary connection must answer with an error and close.
fn fatal_binary_inputs() -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let ext = set_ext(0, 0);
    vec![
        (
            "body shorter than key + extras (CVE-2016-8704 class)",
            breq_raw(0x80, op::SET, 3, 8, 4, 0, b"keyvalue"),
            berr(op::SET, st::UNKNOWN_COMMAND, "Unknown command"),
        ),
        (
            "key length near u16::MAX with a short body (CVE-2016-8705 class)",
            breq_raw(0x80, op::APPEND, 0xffff, 0, 100, 0, &[b'k'; 100]),
            berr(op::APPEND, st::UNKNOWN_COMMAND, "Unknown command"),
        ),
        (
            "key over 250 bytes (CVE-2016-8706 class)",
            breq(op::GET, &[b'k'; 251], &[], &[], 0),
            berr(op::GET, st::EINVAL, "Invalid arguments"),
        ),
        (
            "get with body length near u32::MAX",
            breq_raw(0x80, op::GET, 1, 0, u32::MAX, 0, b"k"),
            berr(op::GET, st::EINVAL, "Invalid arguments"),
        ),
        (
            "get carrying a value",
            breq(op::GET, b"k", &[], b"v", 0),
            berr(op::GET, st::EINVAL, "Invalid arguments"),
        ),
        (
            "set without extras",
            breq(op::SET, b"k", &[], b"v", 0),
            berr(op::SET, st::EINVAL, "Invalid arguments"),
        ),
        (
            "noop with a key",
            breq(op::NOOP, b"k", &[], &[], 0),
            berr(op::NOOP, st::EINVAL, "Invalid arguments"),
        ),
        (
            "wrong magic once binary",
            [
                breq(op::NOOP, b"", &[], &[], 0),
                breq_raw(0x81, op::GET, 0, 0, 0, 0, &[]),
            ]
            .concat(),
            [
                bres(op::NOOP, 0, 0, &[], &[], &[]),
                berr(op::GET, st::EINVAL, "Invalid arguments"),
            ]
            .concat(),
        ),
        (
            "incr with short extras",
            breq(op::INCREMENT, b"k", &ext, &[], 0),
            berr(op::INCREMENT, st::EINVAL, "Invalid arguments"),
        ),
    ]
}

#[test]
fn binary_bad_headers_answer_and_close() {
    for (what, input, expected) in fatal_binary_inputs() {
        let (mut s, _) = session();
        let (p, r) = run(&mut s, &input);
        assert!(p.close, "{what}: not closed");
        assert_eq!(r, expected, "{what}");
        assert_eq!(p.consumed, input.len(), "{what}");
        // Nothing after it is executed.
        let (p, r) = run(&mut s, &breq(op::NOOP, b"", &[], &[], 0));
        assert!(p.close && r.is_empty(), "{what}: executed after close");
    }
}

#[test]
fn binary_too_large_is_refused_and_swallowed() {
    let store = Arc::new(Store::new(64 << 20, 100));
    let limits = Limits { max_item_size: 100 };
    let mut s = Session::new(store.clone(), Arc::new(Stats::new(1)), limits);
    let mut out = WriteBuffer::new();
    s.process(&breq(op::SET, b"a", &set_ext(0, 0), b"old", 0), &mut out);
    drain(&mut out);
    // Header only: wait for the key before answering.
    let big = breq(op::SET, b"a", &set_ext(0, 0), &[b'x'; 1000], 0);
    let p = s.process(&big[..24], &mut out);
    assert_eq!((p.consumed, p.need), (0, 33));
    let p = s.process(&big[..40], &mut out);
    assert_eq!((p.consumed, p.close), (40, false));
    assert_eq!(drain(&mut out), berr(op::SET, st::E2BIG, "Too large."));
    assert!(
        store.get(b"a").is_none(),
        "a refused set leaves no stale value"
    );
    let mut rest = big[40..].to_vec();
    rest.extend(breq(op::NOOP, b"", &[], &[], 0));
    let p = s.process(&rest, &mut out);
    assert_eq!(p.consumed, rest.len());
    assert_eq!(drain(&mut out), bres(op::NOOP, 0, 0, &[], &[], &[]));
    // A body length near u32::MAX on a set: refused, then swallowed without buffering.
    let p = s.process(
        &breq_raw(0x80, op::SETQ, 1, 8, u32::MAX, 0, &[0; 9]),
        &mut out,
    );
    assert_eq!((p.consumed, p.close, p.need), (33, false, 0));
    assert_eq!(drain(&mut out), berr(op::SETQ, st::E2BIG, "Too large."));
    let p = s.process(&[0u8; 4096], &mut out);
    assert_eq!((p.consumed, p.need), (4096, 0));
    assert!(out.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Both protocols: pipelining, splitting, back-pressure, garbage

fn ascii_script() -> Vec<u8> {
    b"set a 1 0 3\r\nabc\r\nget a b\r\nadd b 0 0 2 noreply\r\nxy\r\nappend a 0 0 1\r\nd\r\n\
      gets a\r\nincr n 1\r\nset n 0 0 1\r\n7\r\nincr n 3\r\ndecr n 20\r\ntouch a 100\r\n\
      delete b\r\ndelete b\r\ncas a 0 0 1 999\r\nq\r\nflush_all\r\nget a\r\nversion\r\n\
      verbosity 1\r\nbogus\r\nset c 0 0 2\r\nxyz\r\n"
        .to_vec()
}

fn binary_script() -> Vec<u8> {
    let ext = set_ext(3, 0);
    [
        breq(op::SET, b"a", &ext, b"abc", 0),
        breq(op::GETK, b"a", &[], &[], 0),
        breq(op::GETQ, b"b", &[], &[], 0),
        breq(op::ADDQ, b"b", &ext, b"xy", 0),
        breq(op::APPEND, b"a", &[], b"d", 0),
        breq(op::PREPENDQ, b"a", &[], b"_", 0),
        breq(op::GET, b"a", &[], &[], 0),
        breq(op::INCREMENT, b"n", &incr_ext(2, 10, 0), &[], 0),
        breq(op::DECREMENTQ, b"n", &incr_ext(1, 0, 0), &[], 0),
        breq(op::GAT, b"n", &100u32.to_be_bytes(), &[], 0),
        breq(op::DELETE, b"b", &[], &[], 0),
        breq(op::DELETEQ, b"b", &[], &[], 0),
        breq(0x42, b"", &[], b"junk", 0),
        breq(op::FLUSHQ, b"", &[], &[], 0),
        breq(op::GETKQ, b"a", &[], &[], 0),
        breq(op::VERSION, b"", &[], &[], 0),
        breq(op::NOOP, b"", &[], &[], 0),
    ]
    .concat()
}

#[test]
fn pipelined_and_split_at_every_byte_give_the_same_bytes() {
    for script in [ascii_script(), binary_script()] {
        let (mut s, _) = session();
        let whole = all(&mut s, &script);
        assert!(!whole.is_empty());
        // One byte more per call, consuming what each call consumed.
        let (mut s, _) = session();
        let (trickled, closed) = trickle(&mut s, &script);
        assert!(!closed);
        assert_eq!(trickled, whole);
        // Split in two at every byte: nothing of an incomplete request is consumed, and the
        // concatenated output is the same.
        // Under Miri (a thousand times slower) every 37th cut, plus both ends.
        let step = if cfg!(miri) { 37 } else { 1 };
        let cuts = (0..script.len()).step_by(step).chain([script.len() - 1]);
        for cut in cuts {
            let (mut s, _) = session();
            let (p, first) = run(&mut s, &script[..cut]);
            assert!(p.consumed <= cut);
            let (q, second) = run(&mut s, &script[p.consumed..]);
            assert_eq!(p.consumed + q.consumed, script.len(), "cut at {cut}");
            assert_eq!([first, second].concat(), whole, "cut at {cut}");
        }
    }
}

#[test]
fn expected_pipeline_responses() {
    // The CAS unique `gets a` shows: that of "a" after the commands before it.
    let (mut s, store) = session();
    all(
        &mut s,
        b"set a 1 0 3\r\nabc\r\nadd b 0 0 2 noreply\r\nxy\r\nappend a 0 0 1\r\nd\r\n",
    );
    let cas = cas_of(&store, b"a");
    let (mut s, store) = session();
    let r = all(&mut s, &ascii_script());
    assert_eq!(
        text(&r),
        "STORED\r\nVALUE a 1 3\r\nabc\r\nEND\r\nSTORED\r\n"
            .to_string()
            + &format!("VALUE a 1 4 {cas}\r\nabcd\r\nEND\r\n")
            + "NOT_FOUND\r\nSTORED\r\n10\r\n0\r\nTOUCHED\r\nDELETED\r\nNOT_FOUND\r\nEXISTS\r\nOK\r\n\
               END\r\n"
            + &format!("VERSION {}\r\n", stats::VERSION)
            // "xyz\r\n" for 2 bytes: "z\r" is no "\r\n", then the lone "\n" is an empty line.
            + "OK\r\nERROR\r\nCLIENT_ERROR bad data chunk\r\nERROR\r\n"
    );
    assert!(store.is_empty());
}

#[test]
fn stops_early_when_backed_up_and_resumes() {
    let (mut s, _) = session();
    let value = vec![b'v'; 8192];
    let mut set = b"set big 0 0 8192\r\n".to_vec();
    set.extend(&value);
    set.extend(b"\r\n");
    all(&mut s, &set);
    let gets: Vec<u8> = b"get big\r\n".repeat(10);
    let mut out = WriteBuffer::new();
    out.set_watermarks(Some(Watermarks::new(1024, 16 * 1024)));
    let mut consumed = 0;
    let mut response = Vec::new();
    let mut calls = 0;
    while consumed < gets.len() {
        let p = s.process(&gets[consumed..], &mut out);
        assert!(!p.close);
        calls += 1;
        if p.consumed < gets.len() - consumed {
            assert!(out.is_backed_up(), "stopped early only at the high mark");
        }
        consumed += p.consumed;
        response.extend(drain(&mut out));
    }
    assert!(
        calls >= 5,
        "only {calls} calls: did not stop at the high mark"
    );
    let one = [&b"VALUE big 0 8192\r\n"[..], &value, b"\r\nEND\r\n"].concat();
    assert_eq!(response, one.repeat(10));
}

#[test]
fn hard_limit_overflow_closes_instead_of_panicking() {
    let (mut s, _) = session();
    let mut set = b"set big 0 0 8192\r\n".to_vec();
    set.extend(vec![b'v'; 8192]);
    set.extend(b"\r\n");
    all(&mut s, &set);
    let mut out = WriteBuffer::new();
    out.set_hard_limit(Some(4096));
    let p = s.process(b"get big\r\n", &mut out);
    assert!(p.close);
    out.check_invariants();
}

/// A small deterministic generator (xorshift) for garbage input.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn garbage_never_panics_and_need_stays_bounded() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let pieces: Vec<Vec<u8>> = vec![
        ascii_script(),
        binary_script(),
        b"get ".to_vec(),
        b"set k 0 0 5\r\n".to_vec(),
        b"\r\n".to_vec(),
        b"\n".to_vec(),
        vec![0x80],
        breq_raw(0x80, op::SET, 0xffff, 0xff, u32::MAX, 0, &[]),
        breq_raw(0x80, op::GET, 10, 0, 5, 0, &[]),
        b"incr k 99999999999999999999999\r\n".to_vec(),
        vec![b' '; 3000],
    ];
    let streams = if cfg!(miri) { 40 } else { 3000 };
    for _ in 0..streams {
        let mut input = Vec::new();
        for _ in 0..rng.below(6) {
            match rng.below(3) {
                0 => {
                    let p = &pieces[rng.below(pieces.len())];
                    let from = rng.below(p.len() + 1);
                    let to = from + rng.below(p.len() - from + 1);
                    input.extend(&p[from..to]);
                }
                1 => input.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
                _ => {
                    let p = &pieces[rng.below(pieces.len())];
                    input.extend(p);
                    if !input.is_empty() {
                        let i = rng.below(input.len());
                        input[i] = rng.next() as u8;
                    }
                }
            }
        }
        let store = Arc::new(Store::new(1 << 20, 4096));
        let limits = Limits {
            max_item_size: 4096,
        };
        let mut s = Session::new(store, Arc::new(Stats::new(1)), limits);
        let mut out = WriteBuffer::new();
        let mut at = 0;
        // Feed in random pieces as a loop would, until closed or everything is consumed.
        while at < input.len() {
            let end = (at + 1 + rng.below(input.len() - at)).min(input.len());
            let p = s.process(&input[at..end], &mut out);
            out.check_invariants();
            assert!(p.consumed <= end - at);
            assert!(p.need <= limits.max_request(), "need {}", p.need);
            drain(&mut out);
            at += p.consumed;
            if p.close {
                break;
            }
            if p.consumed == 0 && end == input.len() {
                break; // incomplete tail
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Store semantics

#[test]
fn store_modes_and_results() {
    let store = Store::new(1 << 20, 1000);
    assert_eq!(
        store.store(Mode::Replace, b"k", b"v", 0, 0, 0),
        StoreResult::NotStored
    );
    let StoreResult::Stored(c1) = store.store(Mode::Add, b"k", b"v", 5, 0, 0) else {
        panic!()
    };
    assert_eq!(
        store.store(Mode::Add, b"k", b"w", 0, 0, 0),
        StoreResult::NotStored
    );
    let StoreResult::Stored(c2) = store.store(Mode::Set, b"k", b"w", 6, 0, 0) else {
        panic!()
    };
    assert!(c2 > c1, "CAS uniques increase");
    assert_eq!(
        store.store(Mode::Cas, b"k", b"x", 0, 0, c1),
        StoreResult::Exists
    );
    assert_eq!(
        store.store(Mode::Cas, b"nope", b"x", 0, 0, c1),
        StoreResult::NotFound
    );
    assert!(matches!(
        store.store(Mode::Cas, b"k", b"x", 7, 0, c2),
        StoreResult::Stored(_)
    ));
    assert_eq!(store.get(b"k").unwrap().flags, 7);
    assert_eq!(
        store.store(Mode::Append, b"k", b"y", 0, 0, 1),
        StoreResult::Exists
    );
    assert!(matches!(
        store.store(Mode::Append, b"k", b"y", 0, 0, 0),
        StoreResult::Stored(_)
    ));
    assert_eq!(&*store.get(b"k").unwrap().value, b"xy");
    assert_eq!(
        store.store(Mode::Set, b"k", &[0; 1001], 0, 0, 0),
        StoreResult::TooLarge
    );
    assert_eq!(
        store.store(Mode::Append, b"k", &[0; 999], 0, 0, 0),
        StoreResult::TooLarge
    );
    assert_eq!(store.delete(b"k", 1), DeleteResult::Exists);
    assert_eq!(store.delete(b"k", 0), DeleteResult::Deleted);
    assert_eq!(store.delete(b"k", 0), DeleteResult::NotFound);
    assert_eq!(store.bytes(), 0);
    assert!(store.is_empty());
}

#[test]
fn store_delta_semantics() {
    let store = Store::new(1 << 20, 1000);
    assert_eq!(store.delta(b"n", true, 1, 0), DeltaResult::NotFound);
    store.store(Mode::Set, b"n", b"18446744073709551614", 3, 0, 0);
    assert!(matches!(
        store.delta(b"n", true, 3, 0),
        DeltaResult::Value(1, _)
    ));
    // The value keeps its length (space padded), flags survive.
    let item = store.get(b"n").unwrap();
    assert_eq!(&*item.value, b"1                   ");
    assert_eq!(item.flags, 3);
    assert!(matches!(
        store.delta(b"n", false, 5, 0),
        DeltaResult::Value(0, _)
    ));
    assert!(matches!(
        store.delta(b"n", true, 12, item.cas),
        DeltaResult::Exists
    ));
    for bad in [&b""[..], b"abc", b"12a", b"-1", b"99999999999999999999"] {
        store.store(Mode::Set, b"b", bad, 0, 0, 0);
        assert_eq!(
            store.delta(b"b", true, 1, 0),
            DeltaResult::NonNumeric,
            "{bad:?}"
        );
    }
    assert_eq!(store::parse_counter(b" 42 \r"), Some(42));
}

#[test]
fn store_value_handed_out_outlives_replace_and_delete() {
    let store = Store::new(1 << 20, 1 << 20);
    store.store(Mode::Set, b"k", &vec![1u8; 4096], 0, 0, 0);
    let item = store.get(b"k").unwrap();
    let mut out = WriteBuffer::new();
    out.pin(item.value.clone());
    drop(item);
    store.store(Mode::Set, b"k", &vec![2u8; 4096], 0, 0, 0);
    store.delete(b"k", 0);
    store.flush_all(0);
    assert_eq!(drain(&mut out), vec![1u8; 4096]);
}

#[test]
fn store_evicts_least_recently_used_under_the_limit() {
    let limit = 64 * 1024;
    let store = Store::new(limit, 4096);
    let value = vec![0u8; 1000];
    store.tick();
    store.store(Mode::Set, b"hot", &value, 0, 0, 0);
    for i in 0..1000 {
        // The protocol ticks the clock once per batch of requests; here each request is one.
        store.tick();
        let key = format!("key{i}");
        assert!(matches!(
            store.store(Mode::Set, key.as_bytes(), &value, 0, 0, 0),
            StoreResult::Stored(_)
        ));
        assert!(store.bytes() <= limit, "{} over {limit}", store.bytes());
        assert!(
            store.get(b"hot").is_some(),
            "the hot item was evicted at {i}"
        );
    }
    let per_item = 1000 + 6 + store::ITEM_OVERHEAD;
    assert!(
        store.len() >= limit / per_item - 1,
        "only {} items kept",
        store.len()
    );
    // Exactly the most recently used survive, whichever shards they are in.
    let kept = store.len() - 1;
    for i in 0..1000 {
        let present = store.get(format!("key{i}").as_bytes()).is_some();
        assert_eq!(present, i >= 1000 - kept, "key{i}");
    }
    let evictions = store.counters.evictions.load(Ordering::Relaxed);
    assert_eq!(evictions as usize, 1001 - store.len());
    // Growing an item evicts others, never the item itself (whichever shards they share).
    for (a, b) in [(&b"a"[..], &b"b"[..]), (b"b", b"a")] {
        let store = Store::new(1000, 1000);
        store.tick();
        store.store(Mode::Set, a, &[1; 400], 0, 0, 0);
        store.tick();
        store.store(Mode::Set, b, &[2; 300], 0, 0, 0);
        store.tick();
        let grown = store.store(Mode::Set, a, &[3; 500], 0, 0, 0);
        assert!(matches!(grown, StoreResult::Stored(_)));
        assert_eq!(&*store.get(a).unwrap().value, &[3; 500][..]);
        assert!(store.get(b).is_none());
        assert_eq!(store.bytes(), 500 + 1 + store::ITEM_OVERHEAD);
    }
    // An item larger than the whole limit cannot be stored.
    let store = Store::new(1000, 4096);
    assert_eq!(
        store.store(Mode::Set, b"k", &[0; 2000], 0, 0, 0),
        StoreResult::NoMemory
    );
}

#[test]
fn store_is_consistent_under_threads() {
    let limit = 256 * 1024;
    let store = Arc::new(Store::new(limit, 8192));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(t + 1);
                let ops = if cfg!(miri) { 200 } else { 20_000 };
                for _ in 0..ops {
                    let key = format!("k{}", rng.below(500));
                    match rng.below(4) {
                        0 => {
                            let len = rng.below(4096);
                            store.store(Mode::Set, key.as_bytes(), &vec![t as u8; len], 0, 0, 0);
                        }
                        1 => {
                            store.delete(key.as_bytes(), 0);
                        }
                        2 => {
                            store.delta(key.as_bytes(), true, 1, 0);
                        }
                        _ => {
                            if let Some(item) = store.get(key.as_bytes()) {
                                assert_eq!(&*item.key, key.as_bytes());
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(store.bytes() <= limit);
    // The byte count is exactly the sum over the items left.
    let mut sum = 0;
    for i in 0..500 {
        if let Some(item) = store.get(format!("k{i}").as_bytes()) {
            sum += item.size();
        }
    }
    assert_eq!(store.bytes(), sum);
    store.flush_all(0);
    assert_eq!(store.bytes(), 0);
}

#[test]
fn hit_answers_what_get_does_and_the_tick_does_not_hide_a_moved_clock() {
    let store = Store::new(64 << 20, MAX_ITEM);
    store.tick();
    store.store(Mode::Set, b"k", b"value", 5, 0, 0);
    store.store(Mode::Set, b"e", b"soon gone", 0, 2, 0);
    let item = store.get(b"k").unwrap();
    let hit = store.hit(b"k").unwrap();
    assert_eq!((hit.flags, hit.cas), (item.flags, item.cas));
    assert!(Arc::ptr_eq(&hit.value, &item.value), "the item's own value");
    assert!(store.hit(b"missing").is_none());
    // The tick worked the time out once; moving the clock after it must still count.
    assert!(store.hit(b"e").is_some());
    store.advance_clock(3);
    assert!(
        store.hit(b"e").is_none(),
        "expired once the clock moved past it"
    );
    // A second store on the same thread ticks for itself and still sees its own clock.
    let other = Store::new(64 << 20, MAX_ITEM);
    other.store(Mode::Set, b"e", b"x", 0, 2, 0);
    other.tick();
    store.tick();
    assert!(other.hit(b"e").is_some());
    assert!(store.hit(b"k").is_some());
}

#[test]
fn store_counts_evictions_reclaims_and_expiries_as_memcached_item_stats() {
    use store::ITEM_OVERHEAD;
    let c = |store: &Store, f: fn(&store::StoreCounters) -> &std::sync::atomic::AtomicU64| {
        f(&store.counters).load(Ordering::Relaxed)
    };
    // Room for four items of 100 bytes.
    let size = 100 + 1 + ITEM_OVERHEAD;
    let store = Store::new(4 * size, MAX_ITEM);
    let value = [b'v'; 100];
    // A tick before each command, so that each is used at its own time for the LRU.
    for (key, exptime) in [(b"a", 0), (b"b", 1000), (b"c", 0), (b"d", 5)] {
        store.tick();
        assert!(matches!(
            store.store(Mode::Set, key, &value, 0, exptime, 0),
            StoreResult::Stored(_)
        ));
    }
    store.tick();
    assert!(store.get(b"a").is_some()); // fetched, and now the most recently used
                                        // Two more: evicts b (expiry set, never read), then c (no expiry, never read).
    store.tick();
    store.store(Mode::Set, b"e", &value, 0, 0, 0);
    store.tick();
    store.store(Mode::Set, b"f", &value, 0, 0, 0);
    assert_eq!(c(&store, |s| &s.evictions), 2);
    assert_eq!(c(&store, |s| &s.evicted_nonzero), 1);
    assert_eq!(c(&store, |s| &s.evicted_unfetched), 2);
    assert_eq!(c(&store, |s| &s.reclaimed), 0);
    // d expires; the next store takes it from the tail: a reclaim, not an eviction.
    store.advance_clock(10);
    store.tick();
    store.store(Mode::Set, b"g", &value, 0, 0, 0);
    assert_eq!(c(&store, |s| &s.evictions), 2);
    assert_eq!(c(&store, |s| &s.reclaimed), 1);
    assert_eq!(c(&store, |s| &s.expired_unfetched), 1);
    // An expired item found by a lookup.
    store.store(Mode::Set, b"h", b"x", 0, 1, 0);
    store.advance_clock(2);
    assert!(store.get(b"h").is_none());
    assert_eq!(c(&store, |s| &s.get_expired), 1);
    // Too big for the whole cache: out of memory.
    let huge = vec![0u8; 5 * size];
    assert_eq!(
        store.store(Mode::Set, b"i", &huge, 0, 0, 0),
        StoreResult::NoMemory
    );
    assert_eq!(c(&store, |s| &s.outofmemory), 1);
    store.reset_counters();
    assert_eq!(c(&store, |s| &s.evictions), 0);
    assert_eq!(store.total_items(), 0);
    assert!(!store.is_empty());
}

#[test]
fn ascii_expiry_and_length_are_read_as_memcached_reads_them() {
    let (mut s, _) = session();
    // Byte for byte as memcached 1.6.18: C's strtol cut to 32 bits.
    for (request, reply) in [
        // Expiry 4294967296 is 0: never expires.
        (
            &b"set k 5 4294967296 1\r\nx\r\nget k\r\n"[..],
            "STORED\r\nVALUE k 5 1\r\nx\r\nEND\r\n",
        ),
        // Length 4294967297 is 1.
        (
            b"set k 6 0 4294967297\r\ny\r\nget k\r\n",
            "STORED\r\nVALUE k 6 1\r\ny\r\nEND\r\n",
        ),
        // Length 4294967295 is -1; lengths past INT_MAX - 2 are refused too.
        (
            b"set i 0 0 4294967295\r\n",
            "CLIENT_ERROR bad command line format\r\n",
        ),
        (
            b"set i 0 0 2147483647\r\n",
            "CLIENT_ERROR bad command line format\r\n",
        ),
        (
            b"set k 5 -9223372036854775809 1\r\nx\r\n",
            "CLIENT_ERROR bad command line format\r\nERROR\r\n",
        ),
        // A refused delete says nothing under noreply.
        (
            b"delete k 10 noreply\r\nget k\r\n",
            "VALUE k 6 1\r\ny\r\nEND\r\n",
        ),
        // Commands memcached knows the first letter of answer ERROR, HTTP or not.
        (b"gxx / HTTP/1.0\r\nmx HTTP/1.1\r\n", "ERROR\r\nERROR\r\n"),
    ] {
        assert_eq!(text(&all(&mut s, request)), reply, "{}", text(request));
    }
}

#[test]
fn ascii_http_lines_are_hung_up_on() {
    for line in [
        &b"GET / HTTP/1.0\r\nversion\r\n"[..],
        b"PUT /asdf/asd/fasdfasdf/sadf HTTP/1.1\r\n",
        b"DELETE HTTP/1.1\r\n",
    ] {
        let (mut s, _) = session();
        let (p, r) = run(&mut s, line);
        assert!(p.close, "{}", text(line));
        assert!(r.is_empty(), "{}", text(&r));
    }
}

#[test]
fn stats_detail_counts_per_prefix_as_memcached() {
    // The replies of memcached 1.6.18's t/stats-detail.t, byte for byte.
    let (mut s, _store) = session();
    let mut ask = |input: &[u8]| text(&all(&mut s, input));
    assert_eq!(ask(b"stats detail dump\r\n"), "END\r\n");
    assert_eq!(ask(b"stats detail on\r\n"), "OK\r\n");
    assert_eq!(ask(b"set foo:123 0 0 6\r\nfooval\r\n"), "STORED\r\n");
    let dump = |n: &str| format!("PREFIX foo {n}\r\nEND\r\n");
    assert_eq!(
        ask(b"stats detail dump\r\n"),
        dump("get 0 hit 0 set 1 del 0")
    );
    ask(b"get foo:123\r\n");
    assert_eq!(
        ask(b"stats detail dump\r\n"),
        dump("get 1 hit 1 set 1 del 0")
    );
    ask(b"get foo:124\r\n");
    assert_eq!(
        ask(b"stats detail dump\r\n"),
        dump("get 2 hit 1 set 1 del 0")
    );
    assert_eq!(ask(b"delete foo:125\r\n"), "NOT_FOUND\r\n");
    assert_eq!(
        ask(b"stats detail dump\r\n"),
        dump("get 2 hit 1 set 1 del 1")
    );
    assert_eq!(ask(b"stats reset\r\n"), "RESET\r\n");
    assert_eq!(ask(b"stats detail dump\r\n"), "END\r\n");
    ask(b"get foo:123\r\n");
    assert_eq!(
        ask(b"stats detail dump\r\n"),
        dump("get 1 hit 1 set 0 del 0")
    );
    // Keys without the delimiter are not counted; prefixes are listed in the order seen.
    ask(b"get plain\r\nset bar:1 0 0 1\r\nx\r\n");
    assert!(ask(b"stats settings\r\n").contains("STAT detail_enabled yes\r\n"));
    assert_eq!(ask(b"stats detail off\r\n"), "OK\r\n");
    ask(b"get foo:124 foo:123\r\n");
    assert_eq!(
        ask(b"stats detail dump\r\n"),
        "PREFIX foo get 1 hit 1 set 0 del 0\r\nPREFIX bar get 0 hit 0 set 1 del 0\r\nEND\r\n"
    );
    assert!(ask(b"stats settings\r\n").contains("STAT detail_enabled no\r\n"));
}
