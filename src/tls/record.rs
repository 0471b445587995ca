//! The session's own record layer, after the handshake: TLS 1.2 and 1.3 records sealed and
//! opened with aws-lc-rs's AEADs from the traffic keys rustls hands over
//! ([`dangerous_into_kernel_connection`]), the slot kernel TLS would take.
//!
//! rustls keeps only what it needs to derive the next keys (a [`KernelConnection`]); this
//! layer keeps the keys, the sequence numbers and nothing else. A record is written into the
//! session's scratch by the cipher, which reads its plaintext where it lies (aws-lc-rs's
//! out-of-place seal): rustls 0.23 copies the plaintext into a `Vec` of its own, seals it there
//! and copies the sealed record out.
//!
//! [`dangerous_into_kernel_connection`]: rustls::server::UnbufferedServerConnection::dangerous_into_kernel_connection

use core::ops::Range;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::crypto::cipher::AeadKey;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{
    AlertDescription, CipherSuite, ConnectionTrafficSecrets, InvalidMessage, ProtocolVersion,
    SupportedCipherSuite,
};

/// Record content types (RFC 8446, 5.1).
pub(super) const ALERT: u8 = 21;
pub(super) const HANDSHAKE: u8 = 22;
pub(super) const APPLICATION_DATA: u8 = 23;

/// Handshake message type of a TLS 1.3 `KeyUpdate` (RFC 8446, 4.6.3).
const KEY_UPDATE: u8 = 24;

/// Length of the AEAD tag of every suite here.
const TAG_LEN: usize = 16;

/// Length of a record header.
pub(super) const HEADER_LEN: usize = 5;

/// Whether the session can take over records of `suite`: the AEADs aws-lc-rs implements.
pub(super) fn supports(suite: SupportedCipherSuite) -> bool {
    matches!(
        suite.suite(),
        CipherSuite::TLS13_AES_128_GCM_SHA256
            | CipherSuite::TLS13_AES_256_GCM_SHA384
            | CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
            | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
    )
}

/// Why a received record was refused: rustls's error for the application, and the alert the
/// peer gets (none when the peer sent a fatal alert itself).
pub(super) struct Refused {
    pub(super) error: rustls::Error,
    pub(super) alert: Option<AlertDescription>,
}

impl Refused {
    fn new(error: rustls::Error, alert: AlertDescription) -> Refused {
        Refused {
            error,
            alert: Some(alert),
        }
    }

    fn decode(what: InvalidMessage) -> Refused {
        Refused::new(
            rustls::Error::InvalidMessage(what),
            AlertDescription::DecodeError,
        )
    }

    fn unexpected(what: &'static str) -> Refused {
        Refused::new(
            rustls::Error::InvalidMessage(InvalidMessage::UnexpectedMessage(what)),
            AlertDescription::UnexpectedMessage,
        )
    }
}

/// What one received record was, once opened.
pub(super) enum Opened {
    /// Application data, at this range of the record.
    Data(Range<usize>),
    /// The peer's `close_notify`.
    CloseNotify,
    /// Nothing for the application (a warning alert, a key update, padding).
    Nothing,
}

/// One direction's key: the secret, the sequence number, and aws-lc-rs's expanded key, made on
/// first use and dropped while the session is idle.
struct Keys {
    alg: &'static aead::Algorithm,
    key: AeadKey,
    iv: [u8; aead::NONCE_LEN],
    seq: u64,
    /// Boxed: aws-lc-rs's AES-GCM key is over 500 bytes, and only a busy session needs it.
    expanded: Option<Box<LessSafeKey>>,
}

impl Keys {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> Result<Keys, rustls::Error> {
        let (alg, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(rustls::Error::General("unsupported traffic secrets".into())),
        };
        let iv = iv
            .as_ref()
            .try_into()
            .map_err(|_| rustls::Error::General("traffic IV of unexpected length".into()))?;
        Ok(Keys {
            alg,
            key,
            iv,
            seq,
            expanded: None,
        })
    }

    /// aws-lc-rs's key, expanded now if the session was idle.
    fn key(&mut self) -> &LessSafeKey {
        let (alg, key) = (self.alg, &self.key);
        self.expanded.get_or_insert_with(|| {
            let key = UnboundKey::new(alg, key.as_ref()).expect("key length of its suite");
            Box::new(LessSafeKey::new(key))
        })
    }

    /// The next record's nonce: the IV with the sequence number XORed into its end.
    fn nonce(&self) -> [u8; aead::NONCE_LEN] {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        nonce
    }

    /// The TLS 1.2 additional data of the record at the current sequence number.
    fn tls12_aad(&self, typ: u8, plaintext_len: usize) -> [u8; 13] {
        let mut aad = [0u8; 13];
        aad[..8].copy_from_slice(&self.seq.to_be_bytes());
        aad[8] = typ;
        aad[9..11].copy_from_slice(&[3, 3]);
        aad[11..].copy_from_slice(&(plaintext_len as u16).to_be_bytes());
        aad
    }
}

/// The record layer of one session after its handshake.
pub(super) struct RecordLayer {
    /// rustls's remains: what derives the next keys of a TLS 1.3 key update.
    kernel: KernelConnection<ServerConnectionData>,
    tls13: bool,
    /// TLS 1.2 AES-GCM: every record carries its 8-byte explicit nonce.
    explicit_nonce: bool,
    /// Records one key may seal (the suite's confidentiality limit).
    limit: u64,
    tx: Keys,
    rx: Keys,
}

impl RecordLayer {
    /// Takes records over from `conn`, whose handshake is complete and who has nothing left to
    /// send.
    pub(super) fn new(
        conn: rustls::server::UnbufferedServerConnection,
    ) -> Result<RecordLayer, rustls::Error> {
        let (secrets, kernel) = conn.dangerous_into_kernel_connection()?;
        let suite = kernel.negotiated_cipher_suite();
        let tls13 = kernel.protocol_version() == ProtocolVersion::TLSv1_3;
        let limit = match suite {
            SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
            SupportedCipherSuite::Tls12(s) => s.common.confidentiality_limit,
        };
        let tx = Keys::new(secrets.tx)?;
        let rx = Keys::new(secrets.rx)?;
        Ok(RecordLayer {
            kernel,
            tls13,
            explicit_nonce: !tls13 && !core::ptr::eq(tx.alg, &aead::CHACHA20_POLY1305),
            // A TLS 1.3 key is updated before its limit; a TLS 1.2 one cannot be.
            limit: limit.min(u64::MAX - 1),
            tx,
            rx,
        })
    }

    /// Drops aws-lc-rs's expanded keys (about 1 KiB for AES-GCM), kept as secrets while idle.
    pub(super) fn shrink(&mut self) {
        self.tx.expanded = None;
        self.rx.expanded = None;
    }

    /// Bytes a record adds in front of its plaintext and behind it.
    pub(super) fn overhead(&self) -> (usize, usize) {
        match (self.tls13, self.explicit_nonce) {
            // The content type and the tag follow the plaintext.
            (true, _) => (HEADER_LEN, 1 + TAG_LEN),
            (false, true) => (HEADER_LEN + 8, TAG_LEN),
            (false, false) => (HEADER_LEN, TAG_LEN),
        }
    }

    /// The largest record payload (after the header) a peer may send.
    fn max_payload(&self) -> usize {
        if self.tls13 {
            super::MAX_RECORD_PLAINTEXT + 256
        } else {
            super::MAX_RECORD_PLAINTEXT + 2048
        }
    }

    /// Whether the next record would pass the key's limit: a TLS 1.3 session updates its key
    /// first ([`key_update`](Self::key_update)); a TLS 1.2 one must stop.
    pub(super) fn tx_exhausted(&self) -> bool {
        // One record short of it: a `KeyUpdate` is sealed under the old key.
        self.tx.seq + 1 >= self.limit
    }

    /// Whether the key can be updated (TLS 1.3).
    pub(super) fn can_update(&self) -> bool {
        self.tls13
    }

    /// Seals `plaintext` as a record of type `typ` into `record`, which is exactly
    /// [`overhead`](Self::overhead)'s prefix, `plaintext.len()` and its suffix long. The cipher
    /// reads the plaintext where it lies (scratch, a pinned value) and writes the record: no
    /// copy before it.
    pub(super) fn seal(&mut self, typ: u8, plaintext: &[u8], record: &mut [u8]) {
        let (prefix, suffix) = self.overhead();
        let n = plaintext.len();
        debug_assert_eq!(record.len(), prefix + n + suffix);
        let outer = if self.tls13 { APPLICATION_DATA } else { typ };
        let payload_len = (record.len() - HEADER_LEN) as u16;
        record[..HEADER_LEN].copy_from_slice(&[outer, 3, 3, 0, 0]);
        record[3..HEADER_LEN].copy_from_slice(&payload_len.to_be_bytes());
        let nonce = self.tx.nonce();
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&record[..HEADER_LEN]);
        let tls12_aad;
        let (aad, extra_in): (&[u8], &[u8]) = if self.tls13 {
            // The content type is sealed behind the plaintext.
            (&header, core::slice::from_ref(&typ))
        } else {
            if self.explicit_nonce {
                record[HEADER_LEN..prefix].copy_from_slice(&nonce[4..]);
            }
            tls12_aad = self.tx.tls12_aad(typ, n);
            (&tls12_aad, &[])
        };
        let (ciphertext, extra_and_tag) = record[prefix..].split_at_mut(n);
        self.tx
            .key()
            .seal_out_of_place_scatter(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                plaintext,
                ciphertext,
                extra_in,
                extra_and_tag,
            )
            .expect("aws-lc-rs seals any record length TLS allows");
        self.tx.seq += 1;
    }

    /// Bytes of the next record in `received`, if a complete one is there.
    ///
    /// # Errors
    ///
    /// A header no peer may send: a length past the largest record.
    pub(super) fn next_record(&self, received: &[u8]) -> Result<Option<usize>, Refused> {
        // The content type and version are refused as soon as they arrive, as rustls does:
        // nothing is gained by waiting for the rest of a record that cannot be valid.
        match received.first() {
            None => return Ok(None),
            Some(&APPLICATION_DATA) => {}
            Some(&(ALERT | HANDSHAKE)) if !self.tls13 => {}
            Some(_) => {
                return Err(Refused::new(
                    rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType),
                    AlertDescription::UnexpectedMessage,
                ))
            }
        }
        if received.get(1).is_some_and(|&major| major != 3) {
            return Err(Refused::decode(InvalidMessage::UnknownProtocolVersion));
        }
        if received.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([received[3], received[4]]));
        if len > self.max_payload() {
            return Err(Refused::new(
                rustls::Error::PeerSentOversizedRecord,
                AlertDescription::RecordOverflow,
            ));
        }
        Ok((received.len() >= HEADER_LEN + len).then_some(HEADER_LEN + len))
    }

    /// Opens the complete record `record` in place.
    ///
    /// # Errors
    ///
    /// A record that does not decrypt, or that no peer may send after the handshake.
    pub(super) fn open(&mut self, record: &mut [u8]) -> Result<(u8, Range<usize>), Refused> {
        let (prefix, suffix) = self.overhead();
        let typ = record[0];
        if record.len() < prefix + suffix - usize::from(self.tls13) {
            return Err(Refused::new(
                rustls::Error::DecryptError,
                AlertDescription::BadRecordMac,
            ));
        }
        let bad_mac = || Refused::new(rustls::Error::DecryptError, AlertDescription::BadRecordMac);
        if self.tls13 {
            if typ != APPLICATION_DATA {
                return Err(Refused::unexpected(
                    "unencrypted record after the handshake",
                ));
            }
            let nonce = Nonce::assume_unique_for_key(self.rx.nonce());
            let (header, payload) = record.split_at_mut(HEADER_LEN);
            let plain = self
                .rx
                .key()
                .open_in_place(nonce, Aad::from(&header[..]), payload)
                .map_err(|_| bad_mac())?;
            self.rx.seq += 1;
            // The content type is the last byte that is not padding.
            let Some(end) = plain.iter().rposition(|&b| b != 0) else {
                return Err(Refused::unexpected("record without a content type"));
            };
            if end > super::MAX_RECORD_PLAINTEXT {
                return Err(Refused::new(
                    rustls::Error::PeerSentOversizedRecord,
                    AlertDescription::RecordOverflow,
                ));
            }
            let inner = plain[end];
            Ok((inner, HEADER_LEN..HEADER_LEN + end))
        } else {
            let ciphertext_len = record.len() - prefix - TAG_LEN;
            let aad = self.rx.tls12_aad(typ, ciphertext_len);
            let mut nonce = self.rx.nonce();
            if self.explicit_nonce {
                nonce[4..].copy_from_slice(&record[HEADER_LEN..prefix]);
            }
            let nonce = Nonce::assume_unique_for_key(nonce);
            let plain_len = self
                .rx
                .key()
                .open_in_place(nonce, Aad::from(aad), &mut record[prefix..])
                .map_err(|_| bad_mac())?
                .len();
            self.rx.seq += 1;
            if plain_len > super::MAX_RECORD_PLAINTEXT {
                return Err(Refused::new(
                    rustls::Error::PeerSentOversizedRecord,
                    AlertDescription::RecordOverflow,
                ));
            }
            Ok((typ, prefix..prefix + plain_len))
        }
    }

    /// What an opened record of type `typ` with plaintext `payload` means. A handshake record
    /// is a TLS 1.3 key update (the peer's receive key changes here; `answer` is told to
    /// update ours when the peer asked) or, in TLS 1.2, a renegotiation, which is declined
    /// (`answer` gets the warning alert).
    pub(super) fn interpret(
        &mut self,
        typ: u8,
        payload: &[u8],
        range: Range<usize>,
        answer: &mut Answer,
    ) -> Result<Opened, Refused> {
        match typ {
            APPLICATION_DATA => Ok(Opened::Data(range)),
            ALERT => {
                let &[level, description] = payload else {
                    return Err(Refused::decode(InvalidMessage::MessageTooShort));
                };
                let description = AlertDescription::from(description);
                if description == AlertDescription::CloseNotify {
                    return Ok(Opened::CloseNotify);
                }
                // TLS 1.2 warnings are ignored, as rustls does; TLS 1.3 has none but
                // `user_canceled`, which is followed by `close_notify`.
                if (!self.tls13 && level == 1) || description == AlertDescription::UserCanceled {
                    return Ok(Opened::Nothing);
                }
                Err(Refused {
                    error: rustls::Error::AlertReceived(description),
                    alert: None,
                })
            }
            HANDSHAKE if self.tls13 => {
                // One `KeyUpdate`, ending the record: the next record is under the new key.
                let &[KEY_UPDATE, 0, 0, 1, request] = payload else {
                    return Err(Refused::unexpected("handshake message after the handshake"));
                };
                if request > 1 {
                    return Err(Refused::new(
                        rustls::Error::InvalidMessage(InvalidMessage::InvalidKeyUpdate),
                        AlertDescription::IllegalParameter,
                    ));
                }
                let next = self.kernel.update_rx_secret().map_err(|error| Refused {
                    error,
                    alert: Some(AlertDescription::InternalError),
                })?;
                self.rx = Keys::new(next).map_err(|error| Refused {
                    error,
                    alert: Some(AlertDescription::InternalError),
                })?;
                if request == 1 {
                    answer.key_update = true;
                }
                Ok(Opened::Nothing)
            }
            HANDSHAKE => {
                answer.no_renegotiation = true;
                Ok(Opened::Nothing)
            }
            _ => Err(Refused::new(
                rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType),
                AlertDescription::UnexpectedMessage,
            )),
        }
    }

    /// The plaintext of a `KeyUpdate` that does not ask the peer for one back.
    pub(super) const KEY_UPDATE_NOT_REQUESTED: [u8; 5] = [KEY_UPDATE, 0, 0, 1, 0];

    /// Switches the send key to the next one, after a `KeyUpdate` was sealed under the old.
    pub(super) fn update_tx(&mut self) -> Result<(), rustls::Error> {
        self.tx = Keys::new(self.kernel.update_tx_secret()?)?;
        Ok(())
    }
}

/// What the peer's records ask of the send side.
#[derive(Debug, Default)]
pub(super) struct Answer {
    /// A `KeyUpdate` of ours, then the new key.
    pub(super) key_update: bool,
    /// A TLS 1.2 `no_renegotiation` warning.
    pub(super) no_renegotiation: bool,
}

/// An alert's plaintext: its level and description.
pub(super) fn alert(description: AlertDescription) -> [u8; 2] {
    let level = match description {
        AlertDescription::CloseNotify | AlertDescription::NoRenegotiation => 1,
        _ => 2,
    };
    [level, u8::from(description)]
}
