//! Byte count and SHA-256 of a file as it streams to storage, so markers and the manifest can
//! record both without reading the file back.

use sha2::{Digest, Sha256};

/// Counts bytes and hashes them with SHA-256.
#[derive(Clone, Default)]
pub struct CountingSha256 {
    hasher: Sha256,
    bytes: u64,
}

impl std::fmt::Debug for CountingSha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingSha256")
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl CountingSha256 {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.bytes += data.len() as u64;
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes seen and the lowercase hex SHA-256 of them.
    pub fn finish(self) -> (u64, String) {
        (self.bytes, hex::encode(self.hasher.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_across_updates() {
        let mut c = CountingSha256::new();
        c.update(b"ab");
        c.update(b"c");
        let (n, h) = c.finish();
        assert_eq!(n, 3);
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
