//! The meta commands (`mg`, `ms`, `md`, `ma`, `mn`, `me`) driven through `Session::process`
//! with the exact bytes memcached 1.6.18 answers (the expected answers were also checked
//! against a memcached 1.6.18 server, CAS uniques aside, except where a comment says this
//! server differs): every flag, the refusals and their `CLIENT_ERROR` strings, the swallowing
//! of a refused `ms`'s data block, and a quiet pipeline split at every byte.

use std::sync::Arc;

use memcached_server::handler::Limits;
use memcached_server::protocol::Session;
use memcached_server::stats::Stats;
use memcached_server::store::{Mode, Store, StoreResult};
use sendbuf::WriteBuffer;

const MAX_ITEM: usize = 1024 * 1024;
const LIMITS: Limits = Limits {
    max_item_size: MAX_ITEM,
};

fn session() -> (Session, Arc<Store>) {
    let store = Arc::new(Store::new(64 << 20, MAX_ITEM));
    let s = Session::new(store.clone(), Arc::new(Stats::new(1)), LIMITS);
    (s, store)
}

/// Feeds `input` in reads that end at `cuts` (and at its end), as the worker does: what a call
/// leaves unconsumed is fed again with the next read. Everything must be consumed; returns the
/// response bytes.
fn feed(s: &mut Session, input: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut out = WriteBuffer::new();
    let mut buffered = Vec::new();
    let mut response = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain([&input.len()]) {
        buffered.extend_from_slice(&input[from..to]);
        from = to;
        let p = s.process(&buffered, &mut out);
        out.check_invariants();
        assert!(!p.close, "closed on {:?}", text(input));
        buffered.drain(..p.consumed);
        assert!(p.need == 0 || p.need > buffered.len(), "need {}", p.need);
        let before = response.len();
        for slice in out.io_slices() {
            response.extend_from_slice(slice);
        }
        out.advance(response.len() - before);
    }
    assert!(buffered.is_empty(), "unconsumed: {:?}", text(&buffered));
    response
}

/// Feeds `input` in one read; returns the response as text.
fn all(s: &mut Session, input: &[u8]) -> String {
    text(&feed(s, input, &[]))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn set(store: &Store, key: &[u8], value: &[u8]) {
    let r = store.store(Mode::Set, key, value, 0, 0, 0);
    assert!(matches!(r, StoreResult::Stored(_)));
}

/// The CAS unique a `mg ... c` reports (a meta get: it marks the item fetched).
fn cas_of(s: &mut Session, key: &str) -> u64 {
    let r = all(s, format!("mg {key} c\r\n").as_bytes());
    let token = r.split_whitespace().nth(1).unwrap();
    token.strip_prefix('c').unwrap().parse().unwrap()
}

#[test]
fn mn_and_bare_commands() {
    let (mut s, _) = session();
    assert_eq!(all(&mut s, b"mn\r\nmn foo bar\r\n"), "MN\r\nMN\r\n");
    // Unknown two-letter commands and commands without a key.
    assert_eq!(all(&mut s, b"mz foo\r\n"), "ERROR\r\n");
    assert_eq!(
        all(&mut s, b"mg\r\nms\r\nmd\r\nma\r\n"),
        "ERROR\r\nERROR\r\nERROR\r\nERROR\r\n"
    );
    assert_eq!(
        all(&mut s, b"me\r\n"),
        "CLIENT_ERROR bad command line format\r\n"
    );
}

#[test]
fn mg_miss_hit_and_return_flags() {
    let (mut s, _) = session();
    assert_eq!(all(&mut s, b"mg miss\r\nmg miss v\r\n"), "EN\r\nEN\r\n");
    assert_eq!(all(&mut s, b"mg miss k Oabc s\r\n"), "EN kmiss Oabc\r\n");
    assert_eq!(
        all(&mut s, b"mg miss q\r\nmg miss v q k\r\nmn\r\n"),
        "MN\r\n"
    );
    assert_eq!(
        all(
            &mut s,
            b"ms foo 3 F5 T0\r\nbar\r\nmg foo f s v h l t k Oop\r\nmg foo h\r\nmg foo\r\n"
        ),
        "HD\r\nVA 3 f5 s3 h0 l0 t-1 kfoo Oop\r\nbar\r\nHD h1\r\nHD\r\n"
    );
    // A hit is answered even with q.
    assert_eq!(
        all(&mut s, b"mg foo q\r\nmg foo v q\r\n"),
        "HD\r\nVA 3\r\nbar\r\n"
    );
    let cas = cas_of(&mut s, "foo");
    assert_ne!(cas, 0);
    // Flags only parsed for other commands are accepted and ignored.
    assert_eq!(
        all(&mut s, b"mg foo s P L C1 F1 J1 D1 M1 I\r\n"),
        "HD s3\r\n"
    );
}

#[test]
fn mg_hit_before_last_access_and_no_bump() {
    let (mut s, store) = session();
    all(&mut s, b"ms foo 1\r\nx\r\n");
    // `u` neither marks the item fetched nor moves its access time.
    assert_eq!(all(&mut s, b"mg foo u h\r\n"), "HD h0\r\n");
    assert_eq!(all(&mut s, b"mg foo h\r\n"), "HD h0\r\n");
    assert_eq!(all(&mut s, b"mg foo u h\r\n"), "HD h1\r\n");
    store.advance_clock(5);
    assert_eq!(all(&mut s, b"mg foo u l\r\n"), "HD l5\r\n");
    assert_eq!(
        all(&mut s, b"mg foo l\r\nmg foo l\r\n"),
        "HD l5\r\nHD l0\r\n"
    );
}

#[test]
fn mg_ttl_and_touch_in_request_order() {
    let (mut s, store) = session();
    all(&mut s, b"ms foo 1 T100\r\nx\r\n");
    // `t` before `T` reports the old TTL, after it the new one.
    assert_eq!(all(&mut s, b"mg foo t T200\r\n"), "HD t100\r\n");
    assert_eq!(all(&mut s, b"mg foo T300 t\r\n"), "HD t300\r\n");
    store.advance_clock(10);
    assert_eq!(all(&mut s, b"mg foo t\r\n"), "HD t290\r\n");
    // A negative TTL expires the item.
    assert_eq!(all(&mut s, b"mg foo T-1\r\nmg foo\r\n"), "HD\r\nEN\r\n");
}

#[test]
fn mg_vivify_and_recache_wins() {
    let (mut s, _) = session();
    // The first miss creates an empty item and wins; later ones see Z.
    assert_eq!(
        all(&mut s, b"mg foo N30 t s v\r\nmg foo N30 t s v\r\n"),
        "VA 0 t30 s0 W\r\n\r\nVA 0 t30 s0 Z\r\n\r\n"
    );
    // q does not hide what a vivified miss answers.
    assert_eq!(all(&mut s, b"mg bar s N30 t q\r\n"), "HD s0 t30 W\r\n");
    // T and N on a created item: the later one sets the TTL.
    assert_eq!(all(&mut s, b"mg a N30 T60 t\r\n"), "HD t60 W\r\n");
    assert_eq!(all(&mut s, b"mg b T60 N30 t\r\n"), "HD t30 W\r\n");
    // R wins once when the TTL is below its time; never for an item that never expires.
    all(&mut s, b"ms r 1 T100\r\nx\r\nms forever 1\r\nx\r\n");
    assert_eq!(
        all(&mut s, b"mg r R200 t\r\nmg r R200 t\r\nmg r R50 t\r\n"),
        "HD t100 W\r\nHD t100 Z\r\nHD t100 Z\r\n"
    );
    assert_eq!(all(&mut s, b"mg forever R200\r\n"), "HD\r\n");
    // A new store clears the win.
    assert_eq!(
        all(&mut s, b"ms r 1 T100\r\ny\r\nmg r R200\r\n"),
        "HD\r\nHD W\r\n"
    );
}

#[test]
fn mg_large_value_is_pinned() {
    let (mut s, store) = session();
    let value = vec![b'v'; 100_000];
    set(&store, b"big", &value);
    let mut out = WriteBuffer::new();
    let input = b"mg big s v\r\n";
    assert_eq!(s.process(input, &mut out).consumed, input.len());
    assert_eq!(out.segments(), 3);
    let item = store.get(b"big").unwrap();
    assert_eq!(out.io_slices()[1].as_ptr(), item.value.as_ptr());
    let mut expected = b"VA 100000 s100000\r\n".to_vec();
    expected.extend(&value);
    expected.extend(b"\r\n");
    let mut got = Vec::new();
    for slice in out.io_slices() {
        got.extend_from_slice(slice);
    }
    assert_eq!(got, expected);
}

#[test]
fn mg_refusals() {
    let (mut s, _) = session();
    let cases: &[(&[u8], &str)] = &[
        (b"mg foo m o o o\r\n", "CLIENT_ERROR invalid flag\r\n"),
        (b"mg foo v v\r\n", "CLIENT_ERROR duplicate flag\r\n"),
        (b"mg foo \xff\r\n", "CLIENT_ERROR duplicate flag\r\n"),
        // After a bad argument the parse goes on; the last one names the error.
        (
            b"mg foo bx Tx\r\n",
            "CLIENT_ERROR bad token in command line format\r\n",
        ),
        (b"mg foo Tx bx\r\n", "CLIENT_ERROR error decoding key\r\n"),
        (
            b"mg foo Nx\r\n",
            "CLIENT_ERROR bad token in command line format\r\n",
        ),
        (b"mg foo b\r\n", "CLIENT_ERROR error decoding key\r\n"),
        (b"mg foo Fx\r\n", "CLIENT_ERROR bad command line format\r\n"),
        (
            b"mg foo MSS\r\n",
            "CLIENT_ERROR incorrect length for M token\r\n",
        ),
        (
            b"mg foo Jx\r\n",
            "CLIENT_ERROR invalid numeric initial value\r\n",
        ),
        (
            b"mg foo Dx\r\n",
            "CLIENT_ERROR invalid numeric delta value\r\n",
        ),
        (
            b"mg foo a b c d e f g h i j k l m n o p q r s\r\n",
            "CLIENT_ERROR options flags are too long\r\n",
        ),
        (
            b"mg foo Oaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            "CLIENT_ERROR opaque token too long\r\n",
        ),
    ];
    for &(input, expected) in cases {
        assert_eq!(all(&mut s, input), expected, "{:?}", text(input));
    }
    let long = format!("mg {} v q\r\n", "k".repeat(251));
    assert_eq!(
        all(&mut s, long.as_bytes()),
        "CLIENT_ERROR bad command line format\r\n"
    );
}

#[test]
fn ms_modes() {
    let (mut s, _) = session();
    assert_eq!(
        all(
            &mut s,
            b"ms foo 3 ME\r\nbar\r\nms foo 3 ME\r\nbaz\r\nms new 3 MR\r\nbaz\r\n\
              ms foo 1 MA\r\n!\r\nms foo 1 MP\r\n^\r\nmg foo v\r\n"
        ),
        "HD\r\nNS\r\nNS\r\nHD\r\nHD\r\nVA 5\r\n^bar!\r\n"
    );
    assert_eq!(
        all(
            &mut s,
            b"ms foo 2 MR\r\nab\r\nms foo 2 MS F7 T9\r\ncd\r\nmg foo f t v\r\n"
        ),
        "HD\r\nHD\r\nVA 2 f7 t9\r\ncd\r\n"
    );
    assert_eq!(
        all(&mut s, b"ms none 1 MA\r\nx\r\nms none 1 MP\r\nx\r\n"),
        "NS\r\nNS\r\n"
    );
}

#[test]
fn ms_cas_and_returned_flags() {
    let (mut s, _) = session();
    // A CAS on a missing item is NF (set), NS (append).
    assert_eq!(
        all(&mut s, b"ms foo 3 C0\r\nbar\r\nms foo 3 C0 MA\r\nbar\r\n"),
        "NF\r\nNS\r\n"
    );
    assert_eq!(all(&mut s, b"ms foo 3 k Oxx\r\nbar\r\n"), "HD kfoo Oxx\r\n");
    let cas = cas_of(&mut s, "foo");
    let bad = cas + 10;
    assert_eq!(
        all(&mut s, format!("ms foo 2 c C{bad}\r\nio\r\n").as_bytes()),
        "EX c0\r\n"
    );
    assert_eq!(
        all(&mut s, format!("ms foo 2 MR C{bad}\r\nio\r\n").as_bytes()),
        "EX\r\n"
    );
    assert_eq!(
        all(&mut s, format!("ms foo 2 MA C{bad}\r\nio\r\n").as_bytes()),
        "EX\r\n"
    );
    // Add ignores the CAS.
    assert_eq!(
        all(&mut s, format!("ms foo 2 ME C{bad}\r\nio\r\n").as_bytes()),
        "NS\r\n"
    );
    let r = all(&mut s, format!("ms foo 2 c C{cas}\r\nio\r\n").as_bytes());
    let new: u64 = r.trim_end().strip_prefix("HD c").unwrap().parse().unwrap();
    assert_eq!(cas_of(&mut s, "foo"), new);
    assert_ne!(new, cas);
    // q hides HD only.
    assert_eq!(
        all(
            &mut s,
            b"ms foo 3 k Oxx q\r\nbar\r\nms foo 1 ME q\r\nx\r\nmn\r\n"
        ),
        "NS\r\nMN\r\n"
    );
}

#[test]
fn ms_invalidate_keeps_a_stale_value() {
    let (mut s, _) = session();
    all(&mut s, b"ms foo 3 T100\r\nmoo\r\n");
    assert_eq!(all(&mut s, b"md foo I T30\r\n"), "HD\r\n");
    assert_eq!(
        all(&mut s, b"mg foo s t v\r\n"),
        "VA 3 s3 t30 X W\r\nmoo\r\n"
    );
    // A CAS older than the item's stores a stale value that keeps the TTL and the win.
    assert_eq!(all(&mut s, b"ms foo 1 T90 C0\r\nf\r\n"), "EX\r\n");
    assert_eq!(all(&mut s, b"ms foo 1 I T90 C1\r\nf\r\n"), "HD\r\n");
    assert_eq!(all(&mut s, b"mg foo t v\r\n"), "VA 1 t30 Z X\r\nf\r\n");
    // Without I, or with a newer CAS, it is a mismatch.
    assert_eq!(all(&mut s, b"ms foo 1 C1\r\ng\r\n"), "EX\r\n");
    let cas = cas_of(&mut s, "foo");
    assert_eq!(
        all(
            &mut s,
            format!("ms foo 1 I C{}\r\ng\r\n", cas + 1).as_bytes()
        ),
        "EX\r\n"
    );
    // The right CAS stores a fresh item.
    assert_eq!(
        all(
            &mut s,
            format!("ms foo 1 T90 C{cas}\r\ng\r\nmg foo t v\r\n").as_bytes()
        ),
        "HD\r\nVA 1 t90\r\ng\r\n"
    );
}

#[test]
fn ms_refusals_swallow_the_data_block() {
    let (mut s, _) = session();
    // Each refused block holds a command that must not run (`mn\r\n`, then the block's end).
    let cases: &[(&[u8], &str)] = &[
        (
            b"ms foo 4 MX\r\nmn\r\n\r\n",
            "CLIENT_ERROR invalid mode for ms M token\r\n",
        ),
        (
            b"ms foo 4 MSS\r\nmn\r\n\r\n",
            "CLIENT_ERROR incorrect length for M token\r\n",
        ),
        (
            b"ms foo 4 v v\r\nmn\r\n\r\n",
            "CLIENT_ERROR duplicate flag\r\n",
        ),
        (b"ms foo 4 !\r\nmn\r\n\r\n", "CLIENT_ERROR invalid flag\r\n"),
        (
            b"ms foo 4 Fx\r\nmn\r\n\r\n",
            "CLIENT_ERROR bad command line format\r\n",
        ),
        (
            b"ms foo 4 Tx\r\nmn\r\n\r\n",
            "CLIENT_ERROR bad token in command line format\r\n",
        ),
        (
            b"ms foo 4 Cx\r\nmn\r\n\r\n",
            "CLIENT_ERROR bad token in command line format\r\n",
        ),
        (
            b"ms foo 4 b\r\nmn\r\n\r\n",
            "CLIENT_ERROR error decoding key\r\n",
        ),
        (
            b"ms foo 4 Oaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nmn\r\n\r\n",
            "CLIENT_ERROR opaque token too long\r\n",
        ),
        // memcached answers these before reading the length, and runs the block.
        (
            b"ms foo 4 a b c d e f g h i j k l m n o p q\r\nmn\r\n\r\n",
            "CLIENT_ERROR options flags too long\r\n",
        ),
    ];
    for &(input, expected) in cases {
        assert_eq!(all(&mut s, input), expected, "{:?}", text(input));
        // Errors are not hidden by q.
        let quiet = [&input[..9], b"q ", &input[9..]].concat();
        assert_eq!(all(&mut s, &quiet), expected, "{:?}", text(&quiet));
    }
    let long = format!("ms {} 4\r\nmn\r\n\r\n", "k".repeat(251));
    assert_eq!(
        all(&mut s, long.as_bytes()),
        "CLIENT_ERROR bad command line format\r\n"
    );
    // Refused before its block arrives: the block is swallowed as it comes.
    assert_eq!(
        text(&feed(
            &mut s,
            b"ms foo 4 MX\r\nmn\r\n\r\nmn\r\n",
            &[13, 15, 17, 19]
        )),
        "CLIENT_ERROR invalid mode for ms M token\r\nMN\r\n"
    );
    assert_eq!(all(&mut s, b"mg foo\r\n"), "EN\r\n");
}

#[test]
fn ms_bad_length_and_data() {
    let (mut s, store) = session();
    // Without a length there is nothing to swallow: memcached reads on as commands.
    assert_eq!(
        all(&mut s, b"ms foo bar\r\nmn\r\nms foo -1\r\nms foo\r\n"),
        "CLIENT_ERROR bad command line format\r\nMN\r\n\
         CLIENT_ERROR bad command line format\r\nCLIENT_ERROR bad command line format\r\n"
    );
    assert_eq!(
        all(&mut s, b"ms foo 3\r\nbarxx\r\nmn\r\n"),
        "CLIENT_ERROR bad data chunk\r\nERROR\r\nMN\r\n"
    );
    // Lengths and client flags read as memcached reads them: a `+`, and the low 32 bits.
    assert_eq!(
        all(
            &mut s,
            b"ms foo +2\r\nab\r\nms bar 4294967298 F4294967297\r\ncd\r\nmg bar f v\r\n"
        ),
        "HD\r\nHD\r\nVA 2 f1\r\ncd\r\n"
    );
    // Too large: refused, swallowed, and the old value is gone.
    set(&store, b"foo", b"old");
    let mut big = format!("ms foo {} q\r\n", MAX_ITEM + 1).into_bytes();
    big.extend(vec![b'x'; MAX_ITEM + 1]);
    big.extend(b"\r\nmn\r\n");
    assert_eq!(
        all(&mut s, &big),
        "SERVER_ERROR object too large for cache\r\nMN\r\n"
    );
    assert!(store.get(b"foo").is_none());
}

#[test]
fn md_delete_invalidate_and_clear() {
    let (mut s, _) = session();
    assert_eq!(
        all(&mut s, b"md foo\r\nmd foo q\r\nmd foo k Oz\r\n"),
        "NF\r\nNF\r\nNF kfoo Oz\r\n"
    );
    assert_eq!(
        all(&mut s, b"ms foo 1\r\nx\r\nmd foo q\r\nmg foo\r\n"),
        "HD\r\nEN\r\n"
    );
    all(&mut s, b"ms foo 1\r\nx\r\n");
    let cas = cas_of(&mut s, "foo");
    assert_eq!(
        all(&mut s, format!("md foo C{} k\r\n", cas + 1).as_bytes()),
        "EX kfoo\r\n"
    );
    assert_eq!(
        all(&mut s, format!("md foo C{cas} Oa\r\n").as_bytes()),
        "HD Oa\r\n"
    );
    // Invalidate: a new CAS, stale; another invalidation hands out the win again.
    all(&mut s, b"ms foo 1 T100\r\nx\r\n");
    let cas = cas_of(&mut s, "foo");
    assert_eq!(
        all(&mut s, b"md foo I T30\r\nmg foo t v\r\nmg foo t v\r\n"),
        "HD\r\nVA 1 t30 X W\r\nx\r\nVA 1 t30 Z X\r\nx\r\n"
    );
    assert_ne!(cas_of(&mut s, "foo"), cas);
    assert_eq!(
        all(&mut s, b"md foo I\r\nmg foo t v\r\n"),
        "HD\r\nVA 1 t30 X W\r\nx\r\n"
    );
    // T without I changes nothing.
    assert_eq!(
        all(&mut s, b"ms bar 1\r\ny\r\nmd bar T30 q\r\nmg bar\r\n"),
        "HD\r\nEN\r\n"
    );
    // x (refused by memcached 1.6.18) keeps the item, with an empty value and the flags of F.
    assert_eq!(
        all(
            &mut s,
            b"ms foo 1 F3 T100\r\nx\r\nmd foo x\r\nmg foo f t v\r\n"
        ),
        "HD\r\nHD\r\nVA 0 f0 t100\r\n\r\n"
    );
    assert_eq!(
        all(&mut s, b"md foo x F9\r\nmg foo f s\r\n"),
        "HD\r\nHD f9 s0\r\n"
    );
    assert_eq!(
        all(
            &mut s,
            b"md foo Q\r\nmd foo v v\r\nmd foo Oaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
        ),
        "CLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR invalid or duplicate flag\r\n\
         CLIENT_ERROR opaque token too long\r\n"
    );
}

#[test]
fn ma_incr_decr_and_vivify() {
    let (mut s, _) = session();
    assert_eq!(
        all(
            &mut s,
            b"ma foo\r\nma foo q\r\nma foo N0 J10 v\r\nma foo v\r\nma foo q v\r\n\
              ma foo MD D100 v t\r\nma foo M+ v\r\nma foo k Oq v\r\nma foo\r\nmn\r\n"
        ),
        "NF\r\nNF\r\nVA 2\r\n10\r\nVA 2\r\n11\r\nVA 1 t-1\r\n0\r\nVA 1\r\n1\r\n\
         VA 1 kfoo Oq\r\n2\r\nHD\r\nMN\r\n"
    );
    assert_eq!(
        all(
            &mut s,
            b"ma foo M- D2 v\r\nma foo MI D5 v\r\nma foo D18446744073709551615 v\r\n"
        ),
        "VA 1\r\n1\r\nVA 1\r\n6\r\nVA 1\r\n5\r\n"
    );
    // A created item is answered even with q; its TTL follows N then T in order.
    assert_eq!(all(&mut s, b"ma new N0 J5 q v\r\n"), "VA 1\r\n5\r\n");
    assert_eq!(
        all(&mut s, b"ma n2 N100 t T200 v\r\n"),
        "VA 1 t100\r\n0\r\n"
    );
    assert_eq!(all(&mut s, b"mg n2 t\r\n"), "HD t200\r\n");
    // CAS.
    let cas = cas_of(&mut s, "foo");
    assert_eq!(
        all(&mut s, format!("ma foo C{} v k\r\n", cas + 1).as_bytes()),
        "EX kfoo\r\n"
    );
    let r = all(&mut s, format!("ma foo C{cas} c v\r\n").as_bytes());
    let new: u64 = r[6..r.find("\r\n").unwrap()].parse().unwrap();
    assert_eq!(r, format!("VA 1 c{new}\r\n6\r\n"));
    assert_eq!(cas_of(&mut s, "foo"), new);
    assert_ne!(new, cas);
    // Refusals.
    assert_eq!(
        all(&mut s, b"ms text 2\r\nhi\r\nma text\r\n"),
        "HD\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
    );
    assert_eq!(
        all(&mut s, b"ma foo MX\r\nma foo Dx\r\nma foo Jx\r\nma foo MX Oaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"),
        "CLIENT_ERROR invalid mode for ma M token\r\nCLIENT_ERROR invalid or duplicate flag\r\n\
         CLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR invalid mode for ma M token\r\n"
    );
}

#[test]
fn base64_keys() {
    let (mut s, store) = session();
    // "Zm9v" is "foo".
    assert_eq!(
        all(
            &mut s,
            b"ms Zm9v 2 b k\r\nhi\r\nmg Zm9v b k v\r\nmg foo v\r\nmg Zm9v v\r\n"
        ),
        "HD kZm9v b\r\nVA 2 kZm9v b\r\nhi\r\nVA 2\r\nhi\r\nEN\r\n"
    );
    assert!(store.get(b"foo").is_some());
    assert_eq!(
        all(
            &mut s,
            b"md Zm9v b k q\r\nmd Zm9v b k\r\nma Zm9v b k N0\r\nme Zm9v b\r\n"
        )
        .split(" cas=")
        .next()
        .unwrap(),
        "NF kZm9v b\r\nHD kZm9v b\r\nME Zm9v exp=-1 la=0"
    );
    assert_eq!(
        all(&mut s, b"me !!! b\r\n"),
        "CLIENT_ERROR bad command line format\r\n"
    );
}

#[test]
fn me_debug() {
    let (mut s, store) = session();
    assert_eq!(all(&mut s, b"me foo\r\n"), "EN\r\n");
    all(&mut s, b"ms foo 3 T100\r\nbar\r\n");
    let cas = cas_of(&mut s, "foo");
    store.advance_clock(4);
    // exp as memcached prints it: time since expiry (negative while alive). size counts the
    // key, the value and the per-item overhead.
    let size = 3 + 3 + memcached_server::store::ITEM_OVERHEAD;
    assert_eq!(
        all(&mut s, b"me foo\r\n"),
        format!("ME foo exp=-96 la=4 cas={cas} fetch=yes cls=1 size={size}\r\n")
    );
}

/// A quiet pipeline: hits, a quiet miss, quiet stores, deletes and incrs, closed by `mn`.
const PIPELINE: &[u8] = b"mg k1 v q\r\nmg miss v q\r\nms k2 2 q\r\nv2\r\nmg k2 s v q\r\n\
    md k2 q\r\nmg k2 v q\r\nma n q\r\nma n q D5\r\nmg n v q\r\nms k1 2 q T9\r\nab\r\n\
    mg k1 k t v q Oend\r\nmn\r\n";

fn pipeline_store() -> (Session, Arc<Store>) {
    let (s, store) = session();
    set(&store, b"k1", b"v1");
    set(&store, b"n", b"10");
    (s, store)
}

#[test]
fn quiet_pipeline_answers_only_hits_then_mn() {
    let (mut s, _) = pipeline_store();
    let whole = feed(&mut s, PIPELINE, &[]);
    assert_eq!(
        text(&whole),
        "VA 2\r\nv1\r\nVA 2 s2\r\nv2\r\nVA 2\r\n16\r\nVA 2 kk1 t9 Oend\r\nab\r\nMN\r\n"
    );
    // Split in two at every byte, and trickled a byte at a time: the same bytes.
    for cut in 1..PIPELINE.len() {
        let (mut s, _) = pipeline_store();
        assert_eq!(feed(&mut s, PIPELINE, &[cut]), whole, "cut at {cut}");
    }
    let (mut s, _) = pipeline_store();
    let bytes: Vec<usize> = (1..PIPELINE.len()).collect();
    assert_eq!(feed(&mut s, PIPELINE, &bytes), whole);
}

#[test]
fn meta_and_classic_commands_share_items() {
    let (mut s, _) = session();
    assert_eq!(
        all(
            &mut s,
            b"set foo 5 0 2\r\nhi\r\nmg foo f v\r\nms foo 2 F6\r\nho\r\nget foo\r\n"
        ),
        "STORED\r\nVA 2 f5\r\nhi\r\nHD\r\nVALUE foo 6 2\r\nho\r\nEND\r\n"
    );
    let cas = cas_of(&mut s, "foo");
    assert_eq!(
        all(&mut s, format!("gets foo\r\ncas foo 0 0 1 {cas}\r\nx\r\nma foo\r\n").as_bytes()),
        format!("VALUE foo 6 2 {cas}\r\nho\r\nEND\r\nSTORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n")
    );
}
