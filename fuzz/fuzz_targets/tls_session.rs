//! A `TlsSession`'s life after a handshake (plaintext queued and pinned, sends that take any
//! prefix, requests read in any pieces, close_notify, garbage from the peer), every byte sent
//! decrypted by a rustls client and checked against the plaintext queued.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: sendbuf_testkit::tls_model::TlsInput| {
    sendbuf_testkit::tls_model::run(&input);
});
