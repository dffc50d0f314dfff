//! CRC32C arithmetic that lets the reader check many overlapping spans in one pass.
//!
//! CRC32C (with its standard pre- and post-conditioning) is linear over GF(2): for byte
//! strings `A` and `B`, `crc(A ‖ B) = crc(A) · x^(8·|B|) ⊕ crc(B)` (mod the polynomial), the
//! identity behind zlib's `crc32_combine`. So with `C(x)` = the CRC of the bytes from a
//! fixed base up to offset `x`, the CRC of any span `[d, e)` is
//! `C(e) ⊕ C(d) · x^(8·(e − d))`, and a reader that walks the file once, computing `C` as
//! it goes, can check every candidate block's CRC when the walk passes the block's end, at
//! a cost that does not depend on the block's claimed length ([`shift`] takes O(log n)
//! multiplications of 32-bit words, no bytes). See `reader.rs`.

/// The CRC32C polynomial, reflected.
const POLY: u32 = 0x82F6_3B78;

/// `a · b` modulo the polynomial, both in the reflected representation (x^0 is bit 31).
fn mul_mod(a: u32, mut b: u32) -> u32 {
    let mut m = 1u32 << 31;
    let mut p = 0u32;
    // At most 32 rounds: one per bit of `a`.
    while m != 0 {
        if a & m != 0 {
            p ^= b;
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    p
}

/// `x^(2^k)` modulo the polynomial for k = 0..64 (reflected), built at compile time.
const X2N: [u32; 64] = {
    let mut t = [0u32; 64];
    let mut p = 1u32 << 30; // x^1
    let mut k = 0;
    while k < 64 {
        t[k] = p;
        // p = p · p (a const-fn copy of `mul_mod`).
        let (mut m, mut acc, mut b) = (1u32 << 31, 0u32, p);
        while m != 0 {
            if p & m != 0 {
                acc ^= b;
            }
            m >>= 1;
            b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
        }
        p = acc;
        k += 1;
    }
    t
};

/// `crc · x^(8·bytes)` modulo the polynomial: what `crc` becomes when `bytes` more bytes
/// follow (the first term of the combination identity above).
pub(crate) fn shift(crc: u32, bytes: u64) -> u32 {
    // x^(8n) = x^(n · 2^3): multiply the factors x^(2^(k+3)) of the set bits k of n.
    let mut factor = 1u32 << 31; // x^0
    let mut n = bytes;
    let mut k = 3usize;
    while n != 0 && k < X2N.len() {
        if n & 1 != 0 {
            factor = mul_mod(X2N[k], factor);
        }
        n >>= 1;
        k += 1;
    }
    mul_mod(factor, crc)
}

/// CRC32C of the concatenation of two strings given their CRCs and the second's length.
#[cfg(test)]
pub(crate) fn combine(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    shift(crc_a, len_b) ^ crc_b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combine_matches_the_crate() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for split in [0, 1, 3, 29, 100, 4096, 4999, 5000] {
            let (a, b) = data.split_at(split);
            let got = combine(crc32c::crc32c(a), crc32c::crc32c(b), b.len() as u64);
            assert_eq!(got, crc32c::crc32c(&data), "split {split}");
            assert_eq!(
                got,
                crc32c::crc32c_combine(crc32c::crc32c(a), crc32c::crc32c(b), b.len()),
            );
        }
    }

    #[test]
    fn span_crc_from_prefix_crcs() {
        // C(e) ⊕ shift(C(d), e − d) is the CRC of bytes d..e.
        let data: Vec<u8> = (0..3000u32).map(|i| (i ^ (i >> 3)) as u8).collect();
        for (d, e) in [
            (0usize, 0usize),
            (0, 3000),
            (17, 18),
            (100, 2999),
            (1500, 1500),
        ] {
            let cd = crc32c::crc32c(&data[..d]);
            let ce = crc32c::crc32c(&data[..e]);
            assert_eq!(
                ce ^ shift(cd, (e - d) as u64),
                crc32c::crc32c(&data[d..e]),
                "{d}..{e}"
            );
        }
        assert_eq!(shift(0x1234_5678, 0), 0x1234_5678);
        assert_eq!(shift(0, 1 << 40), 0);
    }
}
