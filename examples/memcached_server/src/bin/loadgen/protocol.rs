//! The memcached binary protocol as the load generator speaks it: constants, keys, request headers.

pub(crate) const HEADER: usize = 24;
pub(crate) const KEY_LEN: usize = 16;
pub(crate) const SET_EXTRAS: usize = 8;
const REQ_MAGIC: u8 = 0x80;
pub(crate) const RES_MAGIC: u8 = 0x81;
pub(crate) const OP_GET: u8 = 0x00;
pub(crate) const OP_SET: u8 = 0x01;
pub(crate) const STATUS_OK: u16 = 0x0000;
pub(crate) const STATUS_KEY_NOT_FOUND: u16 = 0x0001;

/// The 16-byte key for index `i`: `lg:` and 13 decimal digits.
pub(crate) fn key(i: usize) -> [u8; KEY_LEN] {
    let mut k = *b"lg:0000000000000";
    let mut n = i;
    for slot in k[3..].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    k
}

/// Appends one binary request header to `out`.
pub(crate) fn put_header(out: &mut Vec<u8>, opcode: u8, extras: usize, body: usize, opaque: u32) {
    out.push(REQ_MAGIC);
    out.push(opcode);
    out.extend_from_slice(&(KEY_LEN as u16).to_be_bytes());
    out.push(extras as u8);
    out.push(0); // data type
    out.extend_from_slice(&0u16.to_be_bytes()); // vbucket
    out.extend_from_slice(&(body as u32).to_be_bytes());
    out.extend_from_slice(&opaque.to_be_bytes());
    out.extend_from_slice(&0u64.to_be_bytes()); // cas
}
