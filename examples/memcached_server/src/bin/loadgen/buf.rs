//! The page-aligned receive buffer every mode reads into, out of the 4K-aliasing trap.

/// Size of each thread's page-aligned receive buffer.
pub(crate) const RECV_BUF: usize = 256 << 10;

/// A zeroed buffer of `len` bytes starting on a 4096-byte boundary, out of the 4K-aliasing trap.
pub(crate) struct AlignedBuf {
    storage: Vec<u8>,
    at: usize,
    len: usize,
}

impl AlignedBuf {
    pub(crate) fn new(len: usize) -> AlignedBuf {
        let storage = vec![0u8; len + 4096];
        let at = storage.as_ptr().align_offset(4096);
        assert!(at < 4096, "cannot page-align the receive buffer");
        AlignedBuf { storage, at, len }
    }

    pub(crate) fn as_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.at..self.at + self.len]
    }
}
