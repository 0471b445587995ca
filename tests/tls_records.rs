//! `TlsSession`'s record layer, pinned down from the outside so that it holds whoever seals and
//! opens the records: rustls itself, or the session after the handshake (with
//! `enable_secret_extraction` set in the `ServerConfig`). Every test runs against both
//! configurations, and most against every cipher suite of rustls's `aws-lc-rs` provider that the
//! test certificate (ECDSA P-256) can use, TLS 1.2 and TLS 1.3; rustls's client decrypts and
//! checks everything the session sends.
//!
//! Covered: requests in many small records read in random pieces, and responses (scratch and
//! pinned values of 10 B to 100 KiB) through random partial writes, byte-exact, with the record
//! framing and the stats checked on the wire; a request pipelined behind the client's
//! `Finished` (TLS 1.3 full and resumed handshakes, TLS 1.2 resumed); plaintext queued during
//! the handshake; client `KeyUpdate`s (TLS 1.3), also while older records are half sent;
//! a tampered record, records of random bytes, oversized and unknown-type record headers, and
//! random garbage (an error and an alert, never a panic); `close_notify` both ways; small
//! responses packed into one record; and a stream that ends inside a record.
//!
//! Not under Miri: rustls's `aws-lc-rs` provider runs C and assembly, which Miri cannot interpret (and
//! its TLS dev-dependencies are for little-endian targets only).
#![cfg(all(feature = "rustls", not(miri), target_endian = "little"))]

use std::fmt;
use std::io::{self, Write};
use std::sync::Arc;

use rustls::crypto::aws_lc_rs::{cipher_suite, default_provider};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{
    AlertDescription, ClientConfig, HandshakeKind, ProtocolVersion, RootCertStore, ServerConfig,
    SupportedCipherSuite,
};
use sendbuf::{Stealable, TlsSession};
use sendbuf_testkit::tls::{connect, deliver, pki, Client, Pki};
use sendbuf_testkit::util::{PrefixWriter, XorShift};

// ---------------------------------------------------------------------------------------------
// Configurations: one cipher suite, secret extraction on or off.
// ---------------------------------------------------------------------------------------------

/// One configuration under test: the only cipher suite the client offers, and whether the
/// server's configuration allows secret extraction (the session's own record layer).
#[derive(Clone, Copy)]
struct Case {
    suite: SupportedCipherSuite,
    /// Bytes a record adds to its plaintext besides its 5-byte header: TLS 1.3's content type
    /// and tag, TLS 1.2's explicit nonce (AES-GCM only) and tag.
    overhead: usize,
    extraction: bool,
}

impl Case {
    /// Every suite of the `aws-lc-rs` provider an ECDSA certificate can use, times secret
    /// extraction off and on.
    fn all() -> Vec<Case> {
        let suites = [
            (cipher_suite::TLS13_AES_128_GCM_SHA256, 1 + 16),
            (cipher_suite::TLS13_AES_256_GCM_SHA384, 1 + 16),
            (cipher_suite::TLS13_CHACHA20_POLY1305_SHA256, 1 + 16),
            (
                cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                8 + 16,
            ),
            (
                cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                8 + 16,
            ),
            (
                cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                16,
            ),
        ];
        let mut cases = Vec::new();
        for extraction in [false, true] {
            for (suite, overhead) in suites {
                cases.push(Case {
                    suite,
                    overhead,
                    extraction,
                });
            }
        }
        cases
    }

    /// The TLS 1.3 cases (key updates).
    fn tls13() -> Vec<Case> {
        Case::all().into_iter().filter(Case::is_tls13).collect()
    }

    fn is_tls13(&self) -> bool {
        self.suite.version().version == ProtocolVersion::TLSv1_3
    }

    /// testkit's certificate (ECDSA P-256, rcgen's default) with configurations of this
    /// test's own: the server offers every suite and both versions, `enable_secret_extraction`
    /// as the case says; the client offers only the case's suite and its version, so the
    /// server has to pick it.
    fn pki(&self) -> Pki {
        let mut pki = pki();
        let cert = CertificateDer::from_pem_slice(pki.cert_pem.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
        let mut server = ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        server.enable_secret_extraction = self.extraction;
        let provider = CryptoProvider {
            cipher_suites: vec![self.suite],
            ..default_provider()
        };
        let mut roots = RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[self.suite.version()])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        pki.server = Arc::new(server);
        pki.client = Arc::new(client);
        pki
    }

    /// The handshake as [`connect`] runs it, checking the client got the case's suite.
    fn connect(&self, pki: &Pki) -> (TlsSession, Client) {
        let (server, client) = connect(pki);
        self.check_negotiated(&client);
        assert_eq!(server.seals_records(), self.extraction, "{self}");
        (server, client)
    }

    fn check_negotiated(&self, client: &Client) {
        assert_eq!(
            client.conn.negotiated_cipher_suite(),
            Some(self.suite),
            "{self}"
        );
        assert_eq!(
            client.conn.protocol_version(),
            Some(self.suite.version().version),
            "{self}"
        );
    }

    /// Content type and length of the one record an alert is sent in: TLS 1.3 hides the type
    /// behind application data's.
    fn alert_record(&self) -> (u8, usize) {
        (if self.is_tls13() { 23 } else { 21 }, 2 + self.overhead)
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}, secret extraction {}",
            self.suite.suite(),
            if self.extraction { "on" } else { "off" }
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

/// The records in `wire`: (content type, length) of each, from their 5-byte headers, checking
/// that each says TLS 1.2 (as TLS 1.3's records do too) and is no longer than RFC 8446 allows
/// (2^14 + 256), and that the wire ends at a record's end.
fn records(wire: &[u8]) -> Vec<(u8, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 5 <= wire.len() {
        assert_eq!(&wire[at + 1..at + 3], &[3, 3], "record version at {at}");
        let len = u16::from_be_bytes([wire[at + 3], wire[at + 4]]) as usize;
        assert!(len <= 16_384 + 256, "a record of {len} bytes at {at}");
        out.push((wire[at], len));
        at += 5 + len;
    }
    assert_eq!(at, wire.len(), "the wire ends inside a record");
    out
}

/// Hands `tls` to the server in reads of `1..=max` bytes, so that records arrive split
/// anywhere, headers included.
fn deliver_in_pieces(server: &mut TlsSession, tls: &[u8], rng: &mut XorShift, max: usize) {
    let mut rest = tls;
    while !rest.is_empty() {
        let n = rng.range(1, max).min(rest.len());
        let read = server.read_tls_from(&mut &rest[..n]).unwrap();
        assert!(read > 0, "a read took nothing: {server:?}");
        rest = &rest[read..];
    }
}

/// Sends everything pending through `writer` (partial writes), and returns what it took.
fn flush(server: &mut TlsSession, writer: &mut PrefixWriter) -> Vec<u8> {
    while server.has_pending() {
        let sent = server.write_to(writer).unwrap();
        assert!(sent > 0, "a send made no progress: {server:?}");
    }
    std::mem::take(&mut writer.out)
}

/// Everything the client decrypted since the last call.
fn received(client: &mut Client) -> Vec<u8> {
    std::mem::take(&mut client.received)
}

/// Queues a response of a header, the value pinned, and a trailer; appends its bytes to
/// `expected`.
fn respond(server: &mut TlsSession, name: &str, value: &Arc<[u8]>, expected: &mut Vec<u8>) {
    let header = format!("VALUE {name} 0 {}\r\n", value.len());
    let out = server.write_buffer();
    out.put_slice(header.as_bytes());
    out.pin(value.clone());
    out.put_slice(b"\r\nEND\r\n");
    expected.extend_from_slice(header.as_bytes());
    expected.extend_from_slice(value);
    expected.extend_from_slice(b"\r\nEND\r\n");
}

/// The client sends `plaintext` (one record per call of `send`), the server reads it in
/// random pieces, and finds exactly it.
fn request(
    server: &mut TlsSession,
    client: &mut Client,
    plaintext: &[u8],
    rng: &mut XorShift,
    what: &dyn fmt::Display,
) {
    let tls = client.send(plaintext);
    deliver_in_pieces(server, &tls, rng, 700);
    assert_eq!(server.read_buffer().data(), plaintext, "{what}");
    server.read_buffer_mut().consume(plaintext.len());
}

/// A failed session: sending what it has (the alert, if any) works, it holds nothing after,
/// its steal succeeds, it reads no more, and nothing queued later goes out. Returns the bytes
/// it sent.
fn finish_failed_session(server: &mut TlsSession, what: &dyn fmt::Display) -> Vec<u8> {
    let mut wire = Vec::new();
    while server.has_pending() {
        let before = wire.len();
        server.write_to(&mut wire).unwrap();
        assert!(wire.len() > before, "{what}: a send made no progress");
    }
    assert!(server.is_empty(), "{what}: {server:?}");
    assert!(server.read_buffer().is_empty(), "{what}");
    assert!(server.steal().is_ok(), "{what}: {server:?}");
    assert_eq!(server.storage_bytes(), 0, "{what}");
    let err = server.read_tls_from(&mut &[23u8, 3, 3, 0, 1, 0][..]);
    assert_eq!(
        err.unwrap_err().kind(),
        io::ErrorKind::InvalidData,
        "{what}: read after failure"
    );
    server.write_buffer().put_slice(b"never sent");
    let mut after = Vec::new();
    server.write_to(&mut after).unwrap();
    assert!(
        after.is_empty(),
        "{what}: {} bytes after failing",
        after.len()
    );
    wire
}

/// What the client makes of `wire`, the failed server's last bytes: `None` if there were
/// none, else the error rustls's client reports processing them (an alert received).
fn client_verdict(client: &mut Client, wire: &[u8]) -> Option<rustls::Error> {
    if wire.is_empty() {
        return None;
    }
    client.conn.read_tls(&mut &wire[..]).unwrap();
    Some(
        client
            .conn
            .process_new_packets()
            .expect_err("the client accepted the failed server's bytes"),
    )
}

// ---------------------------------------------------------------------------------------------
// 1. Data both ways, every suite and version.
// ---------------------------------------------------------------------------------------------

/// Per suite, version and configuration: requests of several KiB in records of 1 to 300
/// bytes, read in random pieces of up to 700 bytes; responses of scratch and pinned values of
/// 10 B, 4 KiB, 20 KiB and 100 KiB, through a writer that takes 1 to 3000 bytes a call. The
/// client decrypts exactly what was queued, in order; the records are unpadded and as many as
/// the stats say; every value is released once sent; the session is empty and stolen after
/// each round, and goes on after the steal.
#[test]
fn every_suite_carries_requests_and_responses_through_partial_writes() {
    for (i, case) in Case::all().into_iter().enumerate() {
        let pki = case.pki();
        let (mut server, mut client) = case.connect(&pki);
        let mut rng = XorShift::new(i as u64 + 1);
        let mut writer = PrefixWriter::random(i as u64 + 1000, 3000);
        for round in 0..3 {
            // Client to server: many small records, read in pieces that split them.
            let mut plaintext = Vec::new();
            let mut tls = Vec::new();
            while plaintext.len() < 6000 {
                let piece = {
                    let n = rng.range(1, 300);
                    rng.bytes(n)
                };
                tls.extend(client.send(&piece));
                plaintext.extend_from_slice(&piece);
            }
            assert!(records(&tls).len() > 20, "{case}");
            let before = server.stats();
            deliver_in_pieces(&mut server, &tls, &mut rng, 700);
            assert!(
                server.read_buffer().data() == plaintext,
                "{case}, round {round}: the requests differ"
            );
            assert_eq!(
                server.stats().plaintext_in - before.plaintext_in,
                plaintext.len() as u64,
                "{case}"
            );
            server.read_buffer_mut().consume(plaintext.len());

            // Server to client: scratch and pinned values, sizes mixed.
            let values: Vec<Arc<[u8]>> = [10, 4096, 20 * 1024, 100 * 1024, 10, 20 * 1024]
                .into_iter()
                .map(|n| rng.bytes(n).into())
                .collect();
            let mut expected = Vec::new();
            for (j, value) in values.iter().enumerate() {
                respond(&mut server, &format!("r{round}v{j}"), value, &mut expected);
            }
            let before = server.stats();
            let wire = flush(&mut server, &mut writer);
            let stats = server.stats();
            client.feed(&wire);
            let got = received(&mut client);
            assert_eq!(got.len(), expected.len(), "{case}, round {round}");
            assert!(
                got == expected,
                "{case}, round {round}: the responses differ"
            );

            let on_wire = records(&wire);
            assert!(on_wire.iter().all(|&(typ, _)| typ == 23), "{case}");
            assert_eq!(
                stats.records - before.records,
                on_wire.len() as u64,
                "{case}: records counted"
            );
            assert_eq!(
                wire.len(),
                expected.len() + on_wire.len() * (5 + case.overhead),
                "{case}: each record is its plaintext, a header and the suite's overhead"
            );
            assert_eq!(
                stats.plaintext_out - before.plaintext_out,
                expected.len() as u64
            );
            assert_eq!(stats.tls_out - before.tls_out, wire.len() as u64);
            for value in &values {
                assert_eq!(Arc::strong_count(value), 1, "{case}: a value still pinned");
            }
            assert!(server.is_empty(), "{case}: {server:?}");
            assert!(server.steal().is_ok(), "{case}: {server:?}");
            assert_eq!(server.storage_bytes(), 0, "{case}");
        }
        assert!(writer.short > 0, "{case}: no partial write was exercised");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. The handshake's end.
// ---------------------------------------------------------------------------------------------

/// Runs the handshake of `server` with `client`, writing `request` into the client as soon as
/// it may send application data. When the client's last handshake flight ends with its
/// `Finished` (TLS 1.3; TLS 1.2 resumed), the request follows it in the same bytes: returns
/// true after checking that one read of them completes the handshake and hands the request
/// over. Returns false if the request went out on its own, after the handshake.
fn pipelined_handshake(
    server: &mut TlsSession,
    client: &mut Client,
    request: &[u8],
    what: &dyn fmt::Display,
) -> bool {
    for _ in 0..10 {
        if !client.conn.is_handshaking() {
            client.conn.writer().write_all(request).unwrap();
            let tls = client.outgoing();
            if !server.is_handshaking() {
                deliver(server, &tls);
                assert_eq!(server.read_buffer().data(), request, "{what}");
                return false;
            }
            // The client's Finished and the request, in one read.
            let n = server.read_tls_from(&mut &tls[..]).unwrap();
            assert_eq!(n, tls.len(), "{what}");
            assert!(!server.is_handshaking(), "{what}: {server:?}");
            assert_eq!(
                server.read_buffer().data(),
                request,
                "{what}: the request behind the client's Finished"
            );
            return true;
        }
        let out = client.outgoing();
        deliver(server, &out);
        let mut wire = Vec::new();
        server.write_to(&mut wire).unwrap();
        client.feed(&wire);
    }
    panic!("{what}: no handshake after 10 rounds: {server:?}");
}

/// A request pipelined behind the client's `Finished` is in the read buffer after the one
/// read that carries both: TLS 1.3 full and resumed handshakes, TLS 1.2 resumed (a full TLS
/// 1.2 handshake ends with the server's `Finished`, so there the request comes alone). The
/// response then reaches the client.
#[test]
fn a_request_behind_the_clients_finished_is_read_with_it() {
    for case in Case::all() {
        let pki = case.pki();
        for resumed in [false, true] {
            let what = format!("{case}, resumed: {resumed}");
            if resumed {
                // A first connection leaves the client a session to resume.
                let (mut server, mut client) = case.connect(&pki);
                request(
                    &mut server,
                    &mut client,
                    b"get k\r\n",
                    &mut XorShift::new(1),
                    &what,
                );
            }
            let mut server = TlsSession::new(pki.server.clone()).unwrap();
            let mut client = Client::new(&pki);
            let pipelined = pipelined_handshake(&mut server, &mut client, b"get k\r\n", &what);
            case.check_negotiated(&client);
            let kind = if resumed {
                HandshakeKind::Resumed
            } else {
                HandshakeKind::Full
            };
            assert_eq!(client.conn.handshake_kind(), Some(kind), "{what}");
            assert_eq!(pipelined, case.is_tls13() || resumed, "{what}");
            server.read_buffer_mut().consume(7);

            let value: Arc<[u8]> = vec![b'v'; 20_000].into();
            let mut expected = Vec::new();
            respond(&mut server, "k", &value, &mut expected);
            let wire = flush(&mut server, &mut PrefixWriter::random(3, 2000));
            client.feed(&wire);
            assert!(received(&mut client) == expected, "{what}");
            assert_eq!(Arc::strong_count(&value), 1, "{what}");
            assert!(server.is_empty(), "{what}: {server:?}");
            assert!(server.steal().is_ok(), "{what}");
        }
    }
}

/// Plaintext queued before the handshake is done (a greeting, a pinned value) goes out once
/// it is, byte-exact, and the value is released.
#[test]
fn plaintext_queued_during_the_handshake_goes_out_after_it() {
    for case in Case::all() {
        let pki = case.pki();
        let mut server = TlsSession::new(pki.server.clone()).unwrap();
        let mut client = Client::new(&pki);
        let value: Arc<[u8]> = XorShift::new(5).bytes(30_000).into();
        let mut expected = b"hello\r\n".to_vec();
        server.write_buffer().put_slice(b"hello\r\n");
        respond(&mut server, "greeting", &value, &mut expected);
        let mut writer = PrefixWriter::random(9, 1500);
        for _ in 0..10 {
            deliver(&mut server, &client.outgoing());
            // While the handshake runs, plaintext may wait: `write_to` answers `Ok(0)`.
            while server.write_to(&mut writer).unwrap() > 0 {}
            client.feed(&std::mem::take(&mut writer.out));
            if !client.conn.is_handshaking() && !server.is_handshaking() && !server.has_pending() {
                break;
            }
        }
        case.check_negotiated(&client);
        assert!(!server.has_pending(), "{case}: {server:?}");
        assert!(
            received(&mut client) == expected,
            "{case}: the greeting differs"
        );
        assert_eq!(Arc::strong_count(&value), 1, "{case}");
        assert!(server.is_empty(), "{case}: {server:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Key updates (TLS 1.3).
// ---------------------------------------------------------------------------------------------

/// A client configuration that lets the test read the client's record sequence numbers at
/// the end (`dangerous_extract_secrets`): the proof that the server changed its keys.
fn with_client_extraction(mut pki: Pki) -> Pki {
    let mut client = (*pki.client).clone();
    client.enable_secret_extraction = true;
    pki.client = Arc::new(client);
    pki
}

/// The client refreshes its keys (a `KeyUpdate` asking for the server's) one to three times in
/// a row, five times over, with data both ways before and after each. The server reads what
/// the client sends under its new keys; it answers each request for an update with a
/// `KeyUpdate` of its own in front of its next records (one more record on the wire, at least
/// one per refresh batch, at most one per refresh), and the client decrypts everything after
/// it. At the end the client's receive sequence number counts only the records of the last
/// response: the server's keys changed just before it.
#[test]
fn client_key_updates_are_followed_both_ways() {
    for (i, case) in Case::tls13().into_iter().enumerate() {
        let pki = with_client_extraction(case.pki());
        let (mut server, mut client) = case.connect(&pki);
        let mut rng = XorShift::new(100 + i as u64);
        let mut writer = PrefixWriter::random(200 + i as u64, 2500);
        request(&mut server, &mut client, b"before\r\n", &mut rng, &case);
        let mut last_records = 0;
        for update in 0..5 {
            let refreshes = 1 + update % 3;
            for _ in 0..refreshes {
                client.conn.refresh_traffic_keys().unwrap();
            }
            let plaintext = {
                let n = rng.range(100, 5000);
                rng.bytes(n)
            };
            request(&mut server, &mut client, &plaintext, &mut rng, &case);

            let value: Arc<[u8]> = {
                let n = rng.range(10, 40_000);
                rng.bytes(n).into()
            };
            let mut expected = Vec::new();
            respond(&mut server, &format!("u{update}"), &value, &mut expected);
            let before = server.stats();
            let wire = flush(&mut server, &mut writer);
            let data_records = (server.stats().records - before.records) as usize;
            let extra = records(&wire).len() - data_records;
            assert!(
                (1..=refreshes).contains(&extra),
                "{case}, update {update}: {extra} records besides the data's, for {refreshes} \
                 KeyUpdates asking for one"
            );
            client.feed(&wire);
            assert!(
                received(&mut client) == expected,
                "{case}, update {update}: the response differs"
            );
            assert_eq!(Arc::strong_count(&value), 1, "{case}");
            assert!(server.is_empty(), "{case}: {server:?}");
            last_records = data_records as u64;
        }
        // No KeyUpdate asked for: the next response is data alone.
        request(&mut server, &mut client, b"after\r\n", &mut rng, &case);
        assert!(server.is_empty(), "{case}: {server:?}");
        let secrets = client.conn.dangerous_extract_secrets().unwrap();
        assert_eq!(
            secrets.rx.0, last_records,
            "{case}: the client received {} records under the server's current keys, the last \
             response had {last_records}",
            secrets.rx.0
        );
    }
}

/// A KeyUpdate arrives while a large value is half sent (records already sealed under the old
/// keys, the rest still plaintext): the client decrypts the whole value, then the response
/// sent after the update, and the server reads what the client sends after it.
#[test]
fn a_key_update_while_records_are_half_sent() {
    for (i, case) in Case::tls13().into_iter().enumerate() {
        let pki = case.pki();
        let (mut server, mut client) = case.connect(&pki);
        let mut rng = XorShift::new(300 + i as u64);
        let big: Arc<[u8]> = rng.bytes(600 * 1024).into();
        let mut expected = Vec::new();
        respond(&mut server, "big", &big, &mut expected);
        let mut first = PrefixWriter::fixed(10_000);
        server.write_to(&mut first).unwrap();
        assert_eq!(first.out.len(), 10_000, "{case}");
        assert!(server.has_pending(), "{case}");

        client.conn.refresh_traffic_keys().unwrap();
        request(&mut server, &mut client, b"get small\r\n", &mut rng, &case);
        server.write_buffer().put_slice(b"SMALL\r\n");
        expected.extend_from_slice(b"SMALL\r\n");
        let rest = flush(&mut server, &mut PrefixWriter::random(7, 50_000));
        client.feed(&first.out);
        client.feed(&rest);
        let got = received(&mut client);
        assert_eq!(got.len(), expected.len(), "{case}");
        assert!(got == expected, "{case}: the stream differs");
        assert_eq!(Arc::strong_count(&big), 1, "{case}");

        client.conn.refresh_traffic_keys().unwrap();
        request(&mut server, &mut client, b"get again\r\n", &mut rng, &case);
        server.write_buffer().put_slice(b"AGAIN\r\n");
        let wire = flush(&mut server, &mut PrefixWriter::random(8, 100));
        client.feed(&wire);
        assert_eq!(received(&mut client), b"AGAIN\r\n", "{case}");
        assert!(server.is_empty(), "{case}: {server:?}");
        assert!(server.steal().is_ok(), "{case}");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Bad input after the handshake.
// ---------------------------------------------------------------------------------------------

/// A record from the client with one ciphertext byte flipped: `read_tls_from` fails with
/// `InvalidData` and delivers nothing, an alert is pending, and it goes out as one record the
/// client reports as `bad_record_mac`; then the session is empty, stolen, and done.
#[test]
fn a_tampered_record_fails_with_bad_record_mac() {
    for case in Case::all() {
        let pki = case.pki();
        let (mut server, mut client) = case.connect(&pki);
        let mut rng = XorShift::new(11);
        request(&mut server, &mut client, b"get a\r\n", &mut rng, &case);
        let mut tls = client.send(b"get b\r\n");
        assert_eq!(records(&tls).len(), 1, "{case}");
        let middle = 5 + (tls.len() - 5) / 2;
        tls[middle] ^= 0x20;
        let err = server.read_tls_from(&mut &tls[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{case}: {err}");
        assert!(server.read_buffer().is_empty(), "{case}");
        assert!(server.has_pending(), "{case}: no alert to send");
        let wire = finish_failed_session(&mut server, &case);
        assert_eq!(records(&wire), [case.alert_record()], "{case}");
        match client_verdict(&mut client, &wire) {
            Some(rustls::Error::AlertReceived(AlertDescription::BadRecordMac)) => {}
            other => panic!("{case}: the client got {other:?}, not bad_record_mac"),
        }
    }
}

/// Bad input after the handshake: records of random bytes under a well-formed header, a
/// header announcing 65,535 bytes (more than any record may hold), a header of an unknown
/// content type, and random garbage. Each is an `InvalidData` error, never a panic: the
/// headers alone at once (RFC 8446, 5 and 5.2: no need to wait for a body), garbage at the
/// latest when the stream ends. Bad bytes received are answered with one alert record, which
/// the client reports (`bad_record_mac` for the forged records; an end of stream inside a
/// record owes none); and the session ends empty and stolen.
#[test]
fn garbage_after_the_handshake_is_an_error_not_a_panic() {
    for case in Case::all() {
        let pki = case.pki();
        let mut rng = XorShift::new(if case.extraction { 77 } else { 78 });
        for round in 0..40 {
            let what = format!("{case}, round {round}");
            let (mut server, mut client) = case.connect(&pki);
            request(&mut server, &mut client, b"get a\r\n", &mut rng, &what);
            let (bytes, at_once) = match round {
                // A record of random bytes: it cannot authenticate.
                0..=9 => {
                    let len = rng.range(1, 300);
                    let mut record = vec![23, 3, 3];
                    record.extend_from_slice(&(len as u16).to_be_bytes());
                    record.extend(rng.bytes(len));
                    (record, true)
                }
                // A header announcing more than any record may hold, alone and with more.
                10 => (vec![23, 3, 3, 0xff, 0xff], true),
                11 => {
                    let mut record = vec![23, 3, 3, 0xff, 0xff];
                    record.extend(rng.bytes(3000));
                    (record, true)
                }
                // A header of a content type TLS does not have.
                12 => (vec![0x80, 3, 3, 0, 100], true),
                // Anything.
                _ => {
                    let n = rng.range(1, 2000);
                    (rng.bytes(n), false)
                }
            };
            let mut src = &bytes[..];
            let mut failed = None;
            while !src.is_empty() && failed.is_none() {
                failed = server.read_tls_from(&mut src).err();
            }
            assert!(
                failed.is_some() || !at_once,
                "{what}: {:?} read without an error",
                &bytes[..5]
            );
            let at_read = failed.is_some();
            let err = match failed {
                Some(err) => err,
                // A plausible header waits for the rest of its record: the stream ends instead.
                None => server.read_tls_from(&mut io::empty()).unwrap_err(),
            };
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}: {err}");
            assert!(server.read_buffer().is_empty(), "{what}");
            let wire = finish_failed_session(&mut server, &what);
            if at_read {
                // The peer broke the protocol: it is told so, in one alert record.
                assert_eq!(records(&wire), [case.alert_record()], "{what}: {err}");
            } else if !wire.is_empty() {
                assert_eq!(records(&wire), [case.alert_record()], "{what}: {err}");
            }
            match client_verdict(&mut client, &wire) {
                // A record that cannot authenticate is answered as RFC 8446 says.
                Some(rustls::Error::AlertReceived(AlertDescription::BadRecordMac)) => {}
                Some(other) if round < 10 => {
                    panic!("{what}: the client got {other:?}, not bad_record_mac")
                }
                Some(rustls::Error::AlertReceived(_)) | None => {}
                Some(other) => panic!("{what}: the client got {other:?}, not an alert"),
            }
        }
    }
}

/// The stream ends inside a record (within its header, or half way through it): after
/// the half delivered, the end of the stream is an `InvalidData` error, never a panic; the
/// session ends empty and stolen, and anything it sends is an alert.
#[test]
fn a_stream_that_ends_inside_a_record_is_an_error() {
    for case in Case::all() {
        let pki = case.pki();
        for cut in [3, 0] {
            let what = format!("{case}, cut at {cut}");
            let (mut server, mut client) = case.connect(&pki);
            request(
                &mut server,
                &mut client,
                b"get a\r\n",
                &mut XorShift::new(2),
                &what,
            );
            let tls = client.send(&[b'x'; 1000]);
            let cut = if cut == 0 { tls.len() / 2 } else { cut };
            deliver(&mut server, &tls[..cut]);
            assert!(server.read_buffer().is_empty(), "{what}");
            assert!(!server.is_empty(), "{what}: half a record is held");
            let err = server.read_tls_from(&mut io::empty()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}: {err}");
            let wire = finish_failed_session(&mut server, &what);
            if !wire.is_empty() {
                assert_eq!(records(&wire), [case.alert_record()], "{what}");
            }
            match client_verdict(&mut client, &wire) {
                None | Some(rustls::Error::AlertReceived(_)) => {}
                Some(other) => panic!("{what}: the client got {other:?}, not an alert"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. close_notify.
// ---------------------------------------------------------------------------------------------

/// The client sends a request and `close_notify` in one flight: one read hands the request
/// over and `peer_closed()` turns true. The server answers, asks for its own `close_notify`
/// and queues more after it: the client decrypts exactly the answer, then a clean end of
/// stream; the close_notify is one record after the data; the value queued too late is
/// released unsent; and the session is empty and sends nothing more.
#[test]
fn close_notify_from_the_client_then_from_the_server() {
    for case in Case::all() {
        let pki = case.pki();
        let (mut server, mut client) = case.connect(&pki);
        client
            .conn
            .writer()
            .write_all(b"get k\r\nquit\r\n")
            .unwrap();
        client.conn.send_close_notify();
        let tls = client.outgoing();
        assert!(!server.peer_closed(), "{case}");
        let n = server.read_tls_from(&mut &tls[..]).unwrap();
        assert_eq!(n, tls.len(), "{case}");
        assert_eq!(server.read_buffer().data(), b"get k\r\nquit\r\n", "{case}");
        assert!(server.peer_closed(), "{case}");
        server.read_buffer_mut().consume(13);
        assert_eq!(server.read_tls_from(&mut io::empty()).unwrap(), 0, "{case}");

        let value: Arc<[u8]> = XorShift::new(4).bytes(20 * 1024).into();
        let late: Arc<[u8]> = vec![b'L'; 20 * 1024].into();
        let mut expected = Vec::new();
        respond(&mut server, "k", &value, &mut expected);
        server.queue_close_notify();
        server.write_buffer().put_slice(b"late\r\n");
        server.write_buffer().pin(late.clone());
        let before = server.stats();
        let wire = flush(&mut server, &mut PrefixWriter::random(21, 900));
        let data_records = (server.stats().records - before.records) as usize;
        let on_wire = records(&wire);
        assert_eq!(
            on_wire.len(),
            data_records + 1,
            "{case}: data, then close_notify"
        );
        assert_eq!(on_wire.last(), Some(&case.alert_record()), "{case}");
        client.feed(&wire);
        assert!(
            received(&mut client) == expected,
            "{case}: the answer differs"
        );
        assert!(client.closed, "{case}: no clean end of stream");
        assert_eq!(Arc::strong_count(&value), 1, "{case}");
        assert_eq!(
            Arc::strong_count(&late),
            1,
            "{case}: queued after close_notify"
        );
        assert!(server.is_empty(), "{case}: {server:?}");
        assert!(server.steal().is_ok(), "{case}");

        // Both sides closed: what is queued now is dropped, not left pending forever.
        server.write_buffer().put_slice(b"later\r\n");
        let mut after = Vec::new();
        server.write_to(&mut after).unwrap();
        assert!(
            after.is_empty(),
            "{case}: {} bytes after close_notify",
            after.len()
        );
        assert!(
            !server.has_pending(),
            "{case}: a send loop would never end: {server:?}"
        );
        assert!(server.is_empty(), "{case}: {server:?}");
    }
}

/// The server closes first, after responses sent through partial writes: the client reads
/// them, then `Ok(0)`. Its `close_notify` in reply is read without an error.
#[test]
fn close_notify_from_the_server_first() {
    for case in Case::all() {
        let pki = case.pki();
        let (mut server, mut client) = case.connect(&pki);
        let mut rng = XorShift::new(31);
        request(&mut server, &mut client, b"get k\r\n", &mut rng, &case);
        let value: Arc<[u8]> = rng.bytes(100 * 1024).into();
        let mut expected = Vec::new();
        respond(&mut server, "k", &value, &mut expected);
        server.write_buffer().put_slice(b"bye\r\n");
        expected.extend_from_slice(b"bye\r\n");
        server.queue_close_notify();
        assert!(server.has_pending() && !server.is_empty(), "{case}");
        let wire = flush(&mut server, &mut PrefixWriter::random(41, 4000));
        assert_eq!(records(&wire).last(), Some(&case.alert_record()), "{case}");
        client.feed(&wire);
        let got = received(&mut client);
        assert_eq!(got.len(), expected.len(), "{case}");
        assert!(got == expected, "{case}: the responses differ");
        assert!(client.closed, "{case}: no clean end of stream");
        let mut buf = [0u8; 16];
        assert_eq!(
            io::Read::read(&mut client.conn.reader(), &mut buf).unwrap(),
            0,
            "{case}"
        );
        assert_eq!(Arc::strong_count(&value), 1, "{case}");
        assert!(server.is_empty(), "{case}: {server:?}");

        client.conn.send_close_notify();
        let reply = client.outgoing();
        assert!(!reply.is_empty(), "{case}");
        server.read_tls_from(&mut &reply[..]).unwrap();
        assert!(server.read_buffer().is_empty(), "{case}");
        let mut after = Vec::new();
        server.write_to(&mut after).unwrap();
        assert!(
            after.is_empty(),
            "{case}: {} bytes after close_notify",
            after.len()
        );
        assert!(server.is_empty(), "{case}: {server:?}");
        assert!(server.steal().is_ok(), "{case}");
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Small responses share a record.
// ---------------------------------------------------------------------------------------------

/// 64 responses of 30 bytes, queued with `put_slice` and sent with one `write_to`: one record
/// (the stats say so), at most 80 bytes of TLS on top of the 1,920 of plaintext, and the
/// client decrypts them all.
#[test]
fn small_responses_are_packed_into_one_record() {
    for case in Case::all() {
        let pki = case.pki();
        let (mut server, mut client) = case.connect(&pki);
        request(
            &mut server,
            &mut client,
            b"get k\r\n",
            &mut XorShift::new(3),
            &case,
        );
        let mut expected = Vec::new();
        for i in 0..64 {
            let response = format!("VALUE k{i:02} 0 8\r\nabcdefgh\r\nEND\r\n");
            assert_eq!(response.len(), 30);
            server.write_buffer().put_slice(response.as_bytes());
            expected.extend_from_slice(response.as_bytes());
        }
        let before = server.stats();
        let mut wire = Vec::new();
        let sent = server.write_to(&mut wire).unwrap();
        assert_eq!(sent, wire.len(), "{case}");
        assert!(
            server.stats().records - before.records <= 1,
            "{case}: {} records",
            server.stats().records - before.records
        );
        assert!(records(&wire).len() <= 2, "{case}: {:?}", records(&wire));
        assert!(
            wire.len() <= 64 * 30 + 2 * 40,
            "{case}: {} bytes of TLS for {} of plaintext",
            wire.len(),
            64 * 30
        );
        client.feed(&wire);
        assert_eq!(received(&mut client), expected, "{case}");
        assert!(server.is_empty(), "{case}: {server:?}");
    }
}
