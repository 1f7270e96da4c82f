//! CRC-32C (Castagnoli, the iSCSI polynomial), the checksum of every page,
//! WAL record and WAL segment header on disk (`docs/FORMAT.md`).
//!
//! Computed by `crc-fast`, which folds with carry-less multiplication
//! (`PCLMULQDQ`, `VPCLMULQDQ` where the CPU has it) alongside the CPU's
//! CRC instruction. Measured on the development VM (Xeon with AVX-512,
//! `benches/checksum.rs`): a 4 KiB page in cache in 87 ns against 273 ns
//! for the `crc32c` crate's three-way CRC-instruction loop, 683 against
//! 925 ns from memory; a scratch probe found it no slower at any size down
//! to 24 bytes (WAL records). A page is checksummed on every load from
//! the file, so this is on the larger-than-memory read path
//! (`docs/BENCHMARKS.md`, "stop 10").
//!
//! The `crc32c` crate stays as a dev-dependency: the tests hold these
//! functions to it, so the on-disk values cannot drift.

/// The CRC-32C of `data`.
#[inline]
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    crc_fast::crc32_iscsi(data)
}

/// The CRC-32C of `first` followed by `second`, without joining them.
pub(crate) fn crc32c_pair(first: &[u8], second: &[u8]) -> u32 {
    let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    digest.update(first);
    digest.update(second);
    // CRC-32 values fit 32 bits; the digest reports them in a u64.
    digest.finalize() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_value_of_the_catalogue() {
        // "123456789" is the CRC catalogue's check input for CRC-32/ISCSI.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c_pair(b"1234", b"56789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn agrees_with_the_crc32c_crate_at_every_length_and_split() {
        let mut rng = fastrand::Rng::with_seed(42);
        let data: Vec<u8> = (0..9000).map(|_| rng.u8(..)).collect();
        for len in (0..600).chain([1000, 4064, 4092, 4096, 8192, 9000]) {
            let start = rng.usize(0..=data.len() - len);
            let bytes = &data[start..start + len];
            let expected = ::crc32c::crc32c(bytes);
            assert_eq!(crc32c(bytes), expected, "length {len}");
            let split = rng.usize(0..=len);
            assert_eq!(crc32c_pair(&bytes[..split], &bytes[split..]), expected, "length {len} split {split}");
        }
    }
}
