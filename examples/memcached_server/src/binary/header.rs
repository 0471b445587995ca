//! The binary protocol's wire format: the 24-byte request and response headers, the opcodes and
//! the status codes.

use sendbuf::Encode;

/// First byte of every request.
pub const REQ_MAGIC: u8 = 0x80;
/// First byte of every response.
pub const RES_MAGIC: u8 = 0x81;
/// Length of a request or response header.
pub const HEADER_LEN: usize = 24;

/// Opcodes.
pub mod op {
    #![allow(missing_docs)]
    pub const GET: u8 = 0x00;
    pub const SET: u8 = 0x01;
    pub const ADD: u8 = 0x02;
    pub const REPLACE: u8 = 0x03;
    pub const DELETE: u8 = 0x04;
    pub const INCREMENT: u8 = 0x05;
    pub const DECREMENT: u8 = 0x06;
    pub const QUIT: u8 = 0x07;
    pub const FLUSH: u8 = 0x08;
    pub const GETQ: u8 = 0x09;
    pub const NOOP: u8 = 0x0a;
    pub const VERSION: u8 = 0x0b;
    pub const GETK: u8 = 0x0c;
    pub const GETKQ: u8 = 0x0d;
    pub const APPEND: u8 = 0x0e;
    pub const PREPEND: u8 = 0x0f;
    pub const STAT: u8 = 0x10;
    pub const SETQ: u8 = 0x11;
    pub const ADDQ: u8 = 0x12;
    pub const REPLACEQ: u8 = 0x13;
    pub const DELETEQ: u8 = 0x14;
    pub const INCREMENTQ: u8 = 0x15;
    pub const DECREMENTQ: u8 = 0x16;
    pub const QUITQ: u8 = 0x17;
    pub const FLUSHQ: u8 = 0x18;
    pub const APPENDQ: u8 = 0x19;
    pub const PREPENDQ: u8 = 0x1a;
    pub const TOUCH: u8 = 0x1c;
    pub const GAT: u8 = 0x1d;
    pub const GATQ: u8 = 0x1e;
    pub const GATK: u8 = 0x23;
    pub const GATKQ: u8 = 0x24;
}

/// Response status codes.
pub mod status {
    #![allow(missing_docs)]
    pub const SUCCESS: u16 = 0x0000;
    pub const KEY_ENOENT: u16 = 0x0001;
    pub const KEY_EEXISTS: u16 = 0x0002;
    pub const E2BIG: u16 = 0x0003;
    pub const EINVAL: u16 = 0x0004;
    pub const NOT_STORED: u16 = 0x0005;
    pub const DELTA_BADVAL: u16 = 0x0006;
    pub const UNKNOWN_COMMAND: u16 = 0x0081;
    pub const ENOMEM: u16 = 0x0082;
}

/// A request header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Must be [`REQ_MAGIC`].
    pub magic: u8,
    /// The command (echoed in the response).
    pub opcode: u8,
    /// Key length.
    pub keylen: u16,
    /// Extras length.
    pub extlen: u8,
    /// Extras + key + value length.
    pub bodylen: u32,
    /// Echoed in the response.
    pub opaque: u32,
    /// Compare-and-swap unique, 0 if none.
    pub cas: u64,
}

impl Header {
    /// Decodes the first [`HEADER_LEN`] bytes of `b`.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            magic: b[0],
            opcode: b[1],
            keylen: u16::from_be_bytes([b[2], b[3]]),
            extlen: b[4],
            bodylen: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            opaque: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
            cas: u64::from_be_bytes([b[16], b[17], b[18], b[19], b[20], b[21], b[22], b[23]]),
        }
    }
}

/// A response header: [`RES_MAGIC`], raw datatype, every number big-endian.
#[derive(Debug, Clone, Copy)]
pub(super) struct ResponseHeader<'a> {
    /// The request answered: its opcode and opaque are echoed.
    pub(super) request: &'a Header,
    /// Status code (see [`status`]).
    pub(super) status: u16,
    /// Key length.
    pub(super) key_len: u16,
    /// Extras length.
    pub(super) extras_len: u8,
    /// Extras + key + value length.
    pub(super) body_len: u32,
    /// Compare-and-swap unique of the item, 0 if none.
    pub(super) cas: u64,
}

impl Encode for ResponseHeader<'_> {
    const SIZE: usize = HEADER_LEN;

    fn encode(&self, out: &mut [u8]) {
        out[0] = RES_MAGIC;
        out[1] = self.request.opcode;
        out[2..4].copy_from_slice(&self.key_len.to_be_bytes());
        out[4] = self.extras_len;
        out[5] = 0; // datatype: raw bytes
        out[6..8].copy_from_slice(&self.status.to_be_bytes());
        out[8..12].copy_from_slice(&self.body_len.to_be_bytes());
        out[12..16].copy_from_slice(&self.request.opaque.to_be_bytes());
        out[16..24].copy_from_slice(&self.cas.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_header_encodes_big_endian_after_the_magic() {
        let request = Header {
            magic: REQ_MAGIC,
            opcode: 0x0c,
            keylen: 0,
            extlen: 0,
            bodylen: 0,
            opaque: 0x0b0c_0d0e,
            cas: 0,
        };
        let head = ResponseHeader {
            request: &request,
            status: 0x0506,
            key_len: 0x0102,
            extras_len: 0x04,
            body_len: 0x0708_090a,
            cas: 0x1112_1314_1516_1718,
        };
        let mut out = [0xffu8; HEADER_LEN];
        head.encode(&mut out);
        assert_eq!(
            out,
            [
                0x81, 0x0c, 0x01, 0x02, 0x04, 0x00, 0x05, 0x06, // magic .. status
                0x07, 0x08, 0x09, 0x0a, // body length
                0x0b, 0x0c, 0x0d, 0x0e, // opaque
                0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, // cas
            ]
        );
    }
}
