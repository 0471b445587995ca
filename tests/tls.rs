//! `TlsSession` against rustls's own client: every byte the session sends is decrypted by an
//! in-process client and compared with the plaintext queued, through random partial writes;
//! pinned values are released exactly once, when encrypted; records are counted on the wire;
//! the steal, `is_empty`, the water marks and the hard limit hold one layer down; bad input
//! from the peer ends in an error, never a panic; and a soak runs through a 4 KiB `SO_SNDBUF`.
//!
//! Not under Miri: rustls's `aws-lc-rs` provider runs C and assembly, which Miri cannot interpret (and
//! its TLS dev-dependencies are for little-endian targets only).
#![cfg(all(feature = "rustls", unix, not(miri), target_endian = "little"))]

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::crypto::CipherSuiteCommon;
use rustls::{ClientConnection, SupportedCipherSuite, Tls12CipherSuite, Tls13CipherSuite};
use sendbuf::{LocalPool, Pool, PoolLimits, Pressure, Stealable, TlsError, TlsSession, Watermarks};
use sendbuf_testkit::tls::{connect, deliver, pki, Client};
use sendbuf_testkit::util::{Counted, DropCount, PrefixWriter, XorShift};

/// The TLS records in `wire`: (content type, length) of each, from their 5-byte headers.
fn records(wire: &[u8]) -> Vec<(u8, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 5 <= wire.len() {
        let len = u16::from_be_bytes([wire[at + 3], wire[at + 4]]) as usize;
        out.push((wire[at], len));
        at += 5 + len;
    }
    assert_eq!(at, wire.len(), "the wire ends inside a record");
    out
}

/// Application-data records (content type 23) in `wire`.
fn app_records(wire: &[u8]) -> usize {
    records(wire).iter().filter(|&&(typ, _)| typ == 23).count()
}

#[test]
fn handshake_then_a_request_and_its_response() {
    let pki = pki();
    let (mut server, mut client) = connect(&pki);
    assert!(server.is_empty(), "{server:?}");

    let req = client.send(b"get k\r\n");
    deliver(&mut server, &req);
    assert_eq!(server.read_buffer().data(), b"get k\r\n");
    server.read_buffer_mut().consume(7);

    let value: Arc<[u8]> = vec![b'v'; 5000].into();
    let out = server.write_buffer();
    out.put_slice(b"VALUE k 0 5000\r\n");
    out.pin(value.clone());
    out.put_slice(b"\r\nEND\r\n");
    let mut wire = Vec::new();
    server.write_to(&mut wire).unwrap();
    client.feed(&wire);

    let mut expected = b"VALUE k 0 5000\r\n".to_vec();
    expected.extend_from_slice(&value);
    expected.extend_from_slice(b"\r\nEND\r\n");
    assert_eq!(client.received, expected);
    assert_eq!(Arc::strong_count(&value), 1, "released once encrypted");
    assert!(server.is_empty(), "{server:?}");
}

#[test]
fn random_responses_decrypt_byte_exact_through_random_partial_writes() {
    let pki = pki();
    for seed in 1..=24u64 {
        let (mut server, mut client) = connect(&pki);
        let mut rng = XorShift::new(seed);
        let drops = DropCount::new();
        let mut expected = Vec::new();
        let mut created = 0;
        let mut writer = PrefixWriter::random(seed, 1 + rng.below(20_000));
        for round in 0..40 {
            let out = server.write_buffer();
            for _ in 0..rng.range(1, 12) {
                match rng.below(3) {
                    0 => {
                        let bytes = {
                            let n = rng.range(1, 200);
                            rng.bytes(n)
                        };
                        out.put_slice(&bytes);
                        expected.extend_from_slice(&bytes);
                    }
                    1 => {
                        let bytes = {
                            let n = rng.range(0, 70_000);
                            rng.bytes(n)
                        };
                        expected.extend_from_slice(&bytes);
                        created += 1;
                        out.pin(Counted::counting(bytes, &drops));
                    }
                    _ => {
                        let mut f = out.format();
                        f.put_u32(round);
                        f.put_decimal(seed);
                        expected.extend_from_slice(&round.to_be_bytes());
                        expected.extend_from_slice(seed.to_string().as_bytes());
                        f.commit();
                    }
                }
            }
            // A send or two per round, each taking a random prefix of what is offered.
            for _ in 0..rng.range(1, 3) {
                server.write_to(&mut writer).unwrap();
            }
        }
        while server.has_pending() {
            server.write_to(&mut writer).unwrap();
        }
        client.feed(&writer.out);
        assert_eq!(client.received.len(), expected.len(), "seed {seed}");
        assert!(
            client.received == expected,
            "seed {seed}: plaintext differs"
        );
        // Flattened values were dropped at once (copied), the others once encrypted: every
        // value exactly once either way.
        assert_eq!(drops.get(), created, "seed {seed}");
        assert!(server.is_empty(), "seed {seed}: {server:?}");
        assert!(
            writer.short > 0,
            "seed {seed}: no partial write was exercised"
        );
    }
}

/// The seed failure one layer down: the response is encrypted (its plaintext gone, its value
/// released), half of its ciphertext is sent, and the plaintext queue alone looks idle. The
/// session must not be: its steal is refused until the last ciphertext byte is sent.
#[test]
fn steal_is_refused_while_ciphertext_is_half_sent() {
    let pki = pki();
    let (mut server, mut client) = connect(&pki);
    let (value, drops) = Counted::new(vec![7u8; 40_000]);
    server.write_buffer().put_slice(b"VALUE k 0 40000\r\n");
    server.write_buffer().pin(value);
    server.write_buffer().put_slice(b"\r\nEND\r\n");

    let mut half = PrefixWriter::fixed(20_000);
    server.write_to(&mut half).unwrap();
    assert_eq!(half.out.len(), 20_000);
    assert_eq!(drops.get(), 1, "encrypted, so released");
    assert!(server.write_buffer().is_empty(), "no plaintext left");
    assert!(server.unsent_tls_len() > 0);
    assert!(!server.is_empty());
    let err = server.steal().unwrap_err();
    assert_eq!(err.pending, server.unsent_tls_len());

    let mut rest = PrefixWriter::fixed(usize::MAX);
    server.write_to(&mut rest).unwrap();
    assert!(server.is_empty());
    assert!(server.steal().unwrap() > 0, "storage given back");
    assert_eq!(server.storage_bytes(), 0);
    client.feed(&half.out);
    client.feed(&rest.out);
    assert_eq!(client.received.len(), 17 + 40_000 + 7);
}

#[test]
fn steal_is_refused_while_anything_is_held() {
    let pki = pki();
    // During the handshake: the server owes its flight.
    let mut server = TlsSession::new(pki.server.clone()).unwrap();
    let mut client = Client::new(&pki);
    deliver(&mut server, &client.outgoing());
    assert!(server.has_pending());
    assert!(server.steal().is_err(), "handshake bytes unsent");
    let mut wire = Vec::new();
    server.write_to(&mut wire).unwrap();
    client.feed(&wire);
    deliver(&mut server, &client.outgoing());
    let mut wire = Vec::new();
    server.write_to(&mut wire).unwrap(); // session tickets
    client.feed(&wire);
    assert!(server.is_empty(), "{server:?}");

    // Plaintext queued, not yet encrypted.
    server.write_buffer().put_slice(b"STORED\r\n");
    assert!(server.steal().is_err());
    let mut wire = Vec::new();
    server.write_to(&mut wire).unwrap();
    client.feed(&wire);
    assert_eq!(client.received, b"STORED\r\n");
    assert!(server.steal().is_ok());

    // A request received and not consumed.
    deliver(&mut server, &client.send(b"get a\r\n"));
    assert!(server.steal().is_err());
    server.read_buffer_mut().consume(7);
    assert!(server.steal().is_ok());

    // Half a record received.
    let record = client.send(b"get b\r\n");
    deliver(&mut server, &record[..record.len() / 2]);
    assert!(server.read_buffer().is_empty());
    assert!(server.steal().is_err(), "a partial record waits");
    deliver(&mut server, &record[record.len() / 2..]);
    assert_eq!(server.read_buffer().data(), b"get b\r\n");

    // close_notify asked for.
    server.read_buffer_mut().consume(7);
    server.queue_close_notify();
    assert!(server.steal().is_err());
    let mut wire = Vec::new();
    server.write_to(&mut wire).unwrap();
    assert_eq!(records(&wire).len(), 1);
    client.feed(&wire);
    assert!(client.closed, "the client saw close_notify");
    assert!(server.is_empty());
    // Nothing goes out after close_notify: a value queued later is dropped, not sent.
    let (late, drops) = Counted::new(vec![1u8; 5000]);
    server.write_buffer().pin(late);
    let mut wire = Vec::new();
    server.write_to(&mut wire).unwrap();
    assert!(wire.is_empty(), "{} bytes after close_notify", wire.len());
    assert_eq!(drops.get(), 1);
    assert!(server.is_empty());
}

/// Responses share records: each run of scratch is sealed in records of up to 16 KiB, values
/// shorter than a record are copied into scratch beside their header and trailer, and a longer
/// pinned value is encrypted from its own memory in its own records, the scratch between two
/// such values (trailer and next header) taking one more. The same through rustls and through
/// the session's own records.
#[test]
fn responses_share_records() {
    let base = pki();
    for own in [true, false] {
        let pki = base.variant(own, None);
        let (mut server, mut client) = connect(&pki);
        let mut respond = |server: &mut TlsSession, value: &Arc<[u8]>| {
            let before = server.stats();
            let mut sent = 0;
            for i in 0..64 {
                let out = server.write_buffer();
                let header = format!("VALUE k{i:02} 0 {}\r\n", value.len());
                sent += header.len() + value.len() + 7;
                out.put_slice(header.as_bytes());
                out.pin(value.clone());
                out.put_slice(b"\r\nEND\r\n");
            }
            let mut wire = Vec::new();
            server.write_to(&mut wire).unwrap();
            let records = app_records(&wire);
            assert_eq!(server.stats().records - before.records, records as u64);
            let received = client.received.len();
            client.feed(&wire);
            assert_eq!(client.received.len() - received, sent);
            records
        };
        // 64 responses of 5 bytes: 1,600 bytes in one record.
        assert_eq!(respond(&mut server, &Arc::from(&b"hello"[..])), 1);
        // Of 4 KiB: 263 KB of scratch in records of up to 16 KiB (a few end early, at the end
        // of a scratch block), against 129 if each value were its own record.
        let records = respond(&mut server, &vec![b'x'; 4096].into());
        assert!((17..=24).contains(&records), "own {own}: {records} records");
        // Of 20 KiB, pinned: two records per value, one per run of scratch around them.
        assert_eq!(
            respond(&mut server, &vec![b'y'; 20 * 1024].into()),
            64 * 3 + 1
        );
    }
}

#[test]
fn requests_already_received_are_all_processed_at_once() {
    let pki = pki();
    let (mut server, mut client) = connect(&pki);
    // Three requests in three records, arriving in one read.
    let mut tls = client.send(b"get a\r\n");
    tls.extend(client.send(b"get b\r\n"));
    tls.extend(client.send(b"get c\r\n"));
    assert_eq!(app_records(&tls), 3);
    let n = server.read_tls_from(&mut &tls[..]).unwrap();
    assert_eq!(n, tls.len());
    assert_eq!(server.read_buffer().data(), b"get a\r\nget b\r\nget c\r\n");
}

#[test]
fn water_marks_and_hard_limit_count_plaintext_and_records() {
    let pki = pki();
    let (mut server, mut client) = connect(&pki);
    server.set_watermarks(Some(Watermarks::new(1000, 4000)));
    server.write_buffer().put_slice(&[1u8; 3000]);
    // Encrypted but not sent (the socket takes nothing): the records count.
    let stuck = |server: &mut TlsSession| {
        let err = server.write_to(&mut Full).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    };
    stuck(&mut server);
    assert!(server.write_buffer().pending_len() == 0 && server.unsent_tls_len() > 3000);
    assert!(!server.is_backed_up());
    server.write_buffer().put_slice(&[2u8; 1000]);
    assert!(
        server.is_backed_up(),
        "1000 bytes of plaintext plus {} of records reach the high mark",
        server.unsent_tls_len()
    );
    let mut wire = Vec::new();
    server.write_to(&mut wire).unwrap();
    assert!(!server.is_backed_up(), "drained below the low mark");
    client.feed(&wire);
    assert_eq!(client.received.len(), 4000);

    server.set_watermarks(None);
    server.write_buffer().set_hard_limit(Some(4096));
    server.write_buffer().put_slice(&[3u8; 3000]);
    stuck(&mut server);
    let err = server
        .write_buffer()
        .try_put_slice(&[4u8; 1100])
        .unwrap_err();
    assert_eq!(err.held, server.unsent_tls_len());
    assert!(server.write_buffer().try_put_slice(&[4u8; 1000]).is_ok());
}

/// A steal drops the buffers, not only their storage: what they were set to (through the
/// session or directly) comes back with them when the session gets work again, from the pool.
#[test]
fn settings_outlive_the_steal_of_the_buffers() {
    let pki = pki();
    let pool = LocalPool::new(PoolLimits::new());
    let (server, mut client) = connect(&pki);
    let mut server = server.with_pool(pool.clone()); // its buffers exist: they take the pool
    server.set_max_read_len(100);
    server.set_watermarks(Some(Watermarks::new(1000, 4000)));
    server.write_buffer().set_hard_limit(Some(1 << 20));
    server.write_buffer().set_flatten_threshold(100);
    server.write_buffer().put_slice(&[1u8; 5000]);
    assert_eq!(
        server.write_buffer().take_pressure_event(),
        Some(Pressure::High)
    );
    let mut wire = Vec::new();
    server.write_to(&mut wire).unwrap();
    client.feed(&wire);
    assert!(!server.is_backed_up());
    // The crossing back under the low mark is not taken before the steal.
    let taken = pool.stats().taken;
    assert!(server.steal().unwrap() > 0);
    assert!(pool.stats().returned > 0);

    // Idle, without buffers: every question is answered without making them.
    assert!(server.is_empty() && !server.has_pending() && !server.is_backed_up());
    assert_eq!((server.pending_len(), server.unsent_tls_len()), (0, 0));
    assert_eq!(server.storage_bytes(), 0);
    assert_eq!(server.write_to(&mut Vec::new()).unwrap(), 0);
    assert_eq!(server.steal().unwrap(), 0);
    assert!(
        format!("{server:?}").contains("buffers: false"),
        "{server:?}"
    );
    assert_eq!(server.stats().plaintext_out, 5000);
    server.set_max_read_len(200); // set while idle

    // Work again: the buffers as they were set, their storage from the pool.
    deliver(&mut server, &client.send(b"get k\r\n"));
    assert_eq!(server.read_buffer().data(), b"get k\r\n");
    assert_eq!(server.read_buffer().max_len(), 400);
    server.read_buffer_mut().consume(7);
    let out = server.write_buffer();
    assert_eq!(out.watermarks(), Some(Watermarks::new(1000, 4000)));
    assert_eq!(out.hard_limit(), Some(1 << 20));
    assert_eq!(out.flatten_threshold(), 100);
    assert_eq!(out.take_pressure_event(), Some(Pressure::Low));
    out.put_slice(&[2u8; 5000]);
    assert!(server.is_backed_up());
    let mut wire = Vec::new();
    server.write_to(&mut wire).unwrap();
    client.feed(&wire);
    assert!(pool.stats().taken > taken);
    assert_eq!(client.received.len(), 10_000);
}

/// A socket whose send buffer is full.
struct Full;

impl Write for Full {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn garbage_from_the_peer_is_an_error_not_a_panic() {
    let pki = pki();
    let mut rng = XorShift::new(7);
    for round in 0..300 {
        let mut server = TlsSession::new(pki.server.clone()).unwrap();
        let mut bytes = {
            let n = rng.range(1, 2000);
            rng.bytes(n)
        };
        if round % 3 == 0 {
            // A plausible record header in front, so the record layer gets further.
            bytes[0] = [20, 21, 22, 23][rng.below(4)];
            if bytes.len() > 3 {
                bytes[1] = 3;
                bytes[2] = 3;
            }
        }
        let mut src = &bytes[..];
        let mut failed = false;
        while !src.is_empty() {
            match server.read_tls_from(&mut src) {
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
                    failed = true;
                    break;
                }
            }
        }
        // Whatever rustls wants to tell the peer (an alert) goes out without a panic.
        server.write_to(&mut io::sink()).unwrap();
        if failed {
            assert!(server.read_buffer().is_empty());
        }
    }
}

#[test]
fn a_tampered_record_fails_with_an_alert() {
    let pki = pki();
    let (mut server, mut client) = connect(&pki);
    let mut tls = client.send(b"get k\r\n");
    let last = tls.len() - 1;
    tls[last] ^= 1; // the tag no longer matches
    let err = server.read_tls_from(&mut &tls[..]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("TLS"), "{err}");
    assert!(server.read_buffer().is_empty());
    let mut wire = Vec::new();
    server.write_to(&mut wire).unwrap();
    assert_eq!(records(&wire).len(), 1, "one record: the alert");
    client.conn.read_tls(&mut &wire[..]).unwrap();
    match client.conn.process_new_packets() {
        Err(rustls::Error::AlertReceived(alert)) => {
            assert_eq!(alert, rustls::AlertDescription::BadRecordMac)
        }
        other => panic!("the client got {other:?}, not the alert"),
    }
    // Once failed, more input is refused, nothing but the alert went out, and the session
    // holds nothing: its storage can go back.
    server.write_buffer().put_slice(b"never sent");
    let err = server.read_tls_from(&mut &tls[..]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    let mut after = Vec::new();
    server.write_to(&mut after).unwrap();
    assert!(after.is_empty(), "{} bytes after the alert", after.len());
    assert!(server.read_buffer().is_empty());
    assert!(server.is_empty(), "{server:?}");
    assert!(server.steal().is_ok());
}

#[test]
fn a_stream_that_ends_inside_a_record_is_an_error() {
    let pki = pki();
    let (mut server, mut client) = connect(&pki);
    let tls = client.send(b"get k\r\n");
    deliver(&mut server, &tls[..tls.len() - 3]);
    let err = server.read_tls_from(&mut &[][..]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
}

#[test]
fn kernel_tls_detection_answers() {
    // Either answer is fine; the call must not fail on a Linux that has TCP.
    sendbuf::tls::kernel_tls_available().unwrap();
}

/// Soak: responses with pinned values through a real socket whose send buffer is 4 KiB, sent
/// with `send_to` on a non-blocking socket (nearly every send partial), read by a
/// blocking rustls client in another thread and checked against the same generator.
#[test]
fn soak_through_a_tiny_send_buffer() {
    use std::os::fd::AsFd;
    let pki = pki();
    let (server_sock, client_sock) = sendbuf_testkit::util::tcp_pair(4096, 4096);
    let client_config = pki.client.clone();
    const RESPONSES: u64 = 1500;

    fn response(i: u64) -> (Vec<u8>, Vec<u8>) {
        let mut rng = XorShift::new(i + 1);
        let value = {
            let n = rng.range(0, 20_000);
            rng.bytes(n)
        };
        let header = format!("VALUE k{i} 0 {}\r\n", value.len()).into_bytes();
        (header, value)
    }

    let reader = std::thread::spawn(move || {
        let conn = ClientConnection::new(client_config, "localhost".try_into().unwrap()).unwrap();
        let mut stream = rustls::StreamOwned::new(conn, client_sock);
        stream.write_all(b"start\r\n").unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).unwrap(); // ends at the server's close_notify
        let mut expected = Vec::new();
        for i in 0..RESPONSES {
            let (header, value) = response(i);
            expected.extend_from_slice(&header);
            expected.extend_from_slice(&value);
            expected.extend_from_slice(b"\r\nEND\r\n");
        }
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "the decrypted stream differs");
    });

    server_sock.set_nonblocking(true).unwrap();
    let mut sock = &server_sock;
    let mut server = TlsSession::new(pki.server.clone()).unwrap();
    let (mut next, mut full) = (0u64, 0u64);
    let mut started = false;
    loop {
        match server.read_tls_from(&mut sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("server read: {e}"),
        }
        if !started && server.read_buffer().data() == b"start\r\n" {
            server.read_buffer_mut().consume(7);
            started = true;
        }
        while started && next < RESPONSES && server.write_buffer().pending_len() < 64 * 1024 {
            let (header, value) = response(next);
            let out = server.write_buffer();
            out.put_slice(&header);
            out.pin(value);
            out.put_slice(b"\r\nEND\r\n");
            next += 1;
            if next == RESPONSES {
                server.queue_close_notify();
            }
        }
        match server.send_to(server_sock.as_fd()) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("server send: {e}"),
        }
        if server.unsent_tls_len() > 0 {
            full += 1; // the socket took less than the records offered
        }
        if next == RESPONSES && !server.has_pending() {
            break;
        }
        if server.has_pending() {
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
    }
    reader.join().unwrap();
    eprintln!(
        "tls soak: {RESPONSES} responses, {} TLS bytes sent, {} records, {full} sends left \
         records unsent",
        server.stats().tls_out,
        server.stats().records
    );
    assert!(full > 0, "the tiny send buffer was never full");
}

/// A client's `KeyUpdate` asking for one back (TLS 1.3) is answered before the next response:
/// one more record (the session's `KeyUpdate`, 22 bytes after the header) goes out in front of it, and
/// everything after is under the new keys both ways, which the client proves by decrypting it
/// and the session by reading the client's next request. Through rustls and through the
/// session's own records alike.
#[test]
fn a_key_update_asked_for_is_answered_before_the_next_response() {
    let base = pki();
    for own in [true, false] {
        let pki = base.variant(own, None);
        let (mut server, mut client) = connect(&pki);
        for round in 0..3 {
            client.conn.refresh_traffic_keys().unwrap();
            deliver(&mut server, &client.outgoing());
            assert!(server.read_buffer().is_empty());
            server.write_buffer().put_slice(b"END\r\n");
            let before = server.stats().records;
            let mut wire = Vec::new();
            server.write_to(&mut wire).unwrap();
            assert_eq!(server.stats().records - before, 1, "one response record");
            let sizes: Vec<_> = records(&wire).iter().map(|&(_, len)| len).collect();
            assert_eq!(
                sizes,
                [22, 22],
                "own {own}, round {round}: the KeyUpdate, then END"
            );
            let received = client.received.len();
            client.feed(&wire);
            assert_eq!(&client.received[received..], b"END\r\n");
            deliver(&mut server, &client.send(b"get k\r\n"));
            assert_eq!(server.read_buffer().data(), b"get k\r\n");
            server.read_buffer_mut().consume(7);
        }
        assert!(server.is_empty() && server.steal().is_ok());
    }
}

/// `suite` with a key good for `limit` records only (rustls's `confidentiality_limit`, 2^23 to
/// 2^24.5 records for the real suites), to reach the limit in a test.
fn limited(suite: SupportedCipherSuite, limit: u64) -> SupportedCipherSuite {
    let common = |c: &CipherSuiteCommon| CipherSuiteCommon {
        suite: c.suite,
        hash_provider: c.hash_provider,
        confidentiality_limit: limit,
    };
    match suite {
        SupportedCipherSuite::Tls13(s) => {
            SupportedCipherSuite::Tls13(Box::leak(Box::new(Tls13CipherSuite {
                common: common(&s.common),
                hkdf_provider: s.hkdf_provider,
                aead_alg: s.aead_alg,
                quic: s.quic,
            })))
        }
        SupportedCipherSuite::Tls12(s) => {
            SupportedCipherSuite::Tls12(Box::leak(Box::new(Tls12CipherSuite {
                common: common(&s.common),
                prf_provider: s.prf_provider,
                kx: s.kx,
                sign: s.sign,
                aead_alg: s.aead_alg,
            })))
        }
    }
}

/// At its key's limit a TLS 1.3 session updates its key (a `KeyUpdate`, then the new key)
/// and goes on: 60 responses of one record each, under a limit of 8 records per key, reach the
/// client whole, with at least 7 `KeyUpdate` records among them. The client, under the same
/// limit, updates its own key as it sends 30 requests, which the session follows. Through
/// rustls and through the session's own records alike.
#[test]
fn a_tls13_key_is_updated_at_its_limit() {
    let base = pki();
    let suite = limited(
        rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
        8,
    );
    for own in [true, false] {
        let pki = base.variant(own, Some(suite));
        let (mut server, mut client) = connect(&pki);
        assert_eq!(client.conn.negotiated_cipher_suite(), Some(suite));
        let mut wire = Vec::new();
        for i in 0..60 {
            server
                .write_buffer()
                .put_slice(format!("VALUE {i:02}\r\n").as_bytes());
            server.write_to(&mut wire).unwrap();
        }
        let all = records(&wire).len();
        assert!(all >= 60 + 7, "own {own}: {all} records for 60 responses");
        client.feed(&wire);
        let expected: String = (0..60).map(|i| format!("VALUE {i:02}\r\n")).collect();
        assert_eq!(String::from_utf8_lossy(&client.received), expected);
        for _ in 0..30 {
            deliver(&mut server, &client.send(b"get k\r\n"));
        }
        assert_eq!(server.read_buffer().len(), 30 * 7, "own {own}");
        server.read_buffer_mut().consume(30 * 7);
        // The client's `KeyUpdate`s ask for one back: the session's own records answer at
        // once, rustls with the next response.
        server.write_buffer().put_slice(b"END\r\n");
        let mut wire = Vec::new();
        server.write_to(&mut wire).unwrap();
        client.feed(&wire);
        assert!(
            client.received.ends_with(b"VALUE 59\r\nEND\r\n"),
            "own {own}"
        );
        assert!(server.is_empty(), "own {own}: {server:?}");
    }
}

/// A TLS 1.2 key cannot be renewed: at its limit the session sends `close_notify` with the
/// last record the key allows and fails with `KeysExhausted`; nothing after it is sent, and
/// the client sees the responses before it, then a clean end.
#[test]
fn a_tls12_key_at_its_limit_ends_the_session() {
    let suite = limited(
        rustls::crypto::aws_lc_rs::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        8,
    );
    let pki = pki().variant(true, Some(suite));
    let (mut server, mut client) = connect(&pki);
    assert!(server.seals_records());
    let mut wire = Vec::new();
    let mut failed = None;
    for i in 0..20 {
        server
            .write_buffer()
            .put_slice(format!("VALUE {i:02}\r\n").as_bytes());
        if let Err(e) = server.write_to(&mut wire) {
            failed = Some((i, e));
            break;
        }
    }
    let (at, err) = failed.expect("the key's limit ends the session");
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<TlsError>());
    assert!(matches!(inner, Some(TlsError::KeysExhausted)), "{err}");
    assert!(at <= 8, "the error came at response {at}");
    while server.has_pending() {
        server.write_to(&mut wire).unwrap();
    }
    assert!(
        records(&wire).len() <= 8,
        "{} records",
        records(&wire).len()
    );
    client.feed(&wire);
    let expected: String = (0..at).map(|i| format!("VALUE {i:02}\r\n")).collect();
    assert_eq!(String::from_utf8_lossy(&client.received), expected);
    assert!(client.closed, "close_notify at the limit");
    assert!(server.is_empty() && server.steal().is_ok());
}
