//! The probes' keys: 16 bytes, a hash of the index then the index, so
//! keys in index order arrive in random key order (as in the benches).

/// A 64-bit mix of `x` (splitmix64's finalizer).
pub fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The key of index `i`.
pub fn key(i: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&splitmix(i).to_be_bytes());
    key[8..].copy_from_slice(&i.to_be_bytes());
    key
}
