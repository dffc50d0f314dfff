//! ITU-T G.711 µ-law and A-law companding.
//!
//! Decoding goes through 256-entry tables computed at compile time; encoding follows the
//! reference segment search of Sun's `g711.c` (the ITU-T G.711 tables): µ-law on the
//! biased 14-bit magnitude, A-law on the 13-bit value. Both the tables and the encoders
//! agree with CPython's `audioop` for every code and every 16-bit input. For every code `c` of either law,
//! `decode(encode(decode(c))) == decode(c)`, and `decode(encode(x))` is non-decreasing in
//! `x`.
//!
//! Sign conventions are the standard ones: µ-law `0xFF` is +0 and `0x00` the most negative
//! value (−32124); A-law `0xD5` is +8, `0x55` is −8, `0xAA` is the largest positive value
//! (+32256) and `0x2A` the most negative (−32256).

/// µ-law bias in the 16-bit domain (decoding).
const ULAW_BIAS: i32 = 0x84;

/// Decodes one µ-law code (used to build the table at compile time).
const fn ulaw_decode_calc(code: u8) -> i16 {
    let u = !code;
    let quant = (u & 0x0F) as i32;
    let seg = ((u & 0x70) >> 4) as i32;
    let t = ((quant << 3) + ULAW_BIAS) << seg;
    let v = if u & 0x80 != 0 {
        ULAW_BIAS - t
    } else {
        t - ULAW_BIAS
    };
    v as i16
}

/// Decodes one A-law code (used to build the table at compile time).
const fn alaw_decode_calc(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let seg = ((a & 0x70) >> 4) as i32;
    if seg == 0 {
        t += 8;
    } else {
        t += 0x108;
        t <<= seg - 1;
    }
    let v = if a & 0x80 != 0 { t } else { -t };
    v as i16
}

/// Builds a 256-entry decoding table from a per-code function.
const fn build_ulaw_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = ulaw_decode_calc(i as u8);
        i += 1;
    }
    table
}

/// Builds the A-law decoding table.
const fn build_alaw_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = alaw_decode_calc(i as u8);
        i += 1;
    }
    table
}

/// µ-law code → linear sample.
static ULAW_TABLE: [i16; 256] = build_ulaw_table();
/// A-law code → linear sample.
static ALAW_TABLE: [i16; 256] = build_alaw_table();

/// Index of the first segment whose upper end is at least `value` (8 if none is).
fn segment(value: i32, ends: &[i32; 8]) -> u8 {
    let mut seg = 0u8;
    for &end in ends {
        if value <= end {
            return seg;
        }
        seg += 1;
    }
    seg
}

/// Upper ends of the µ-law segments (biased 14-bit magnitude).
const ULAW_SEG_END: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
/// Bias added to the 14-bit µ-law magnitude before the segment search (`0x84 >> 2`).
const ULAW_BIAS14: i32 = ULAW_BIAS >> 2;
/// Largest 14-bit µ-law magnitude before the bias (`32635 >> 2`).
const ULAW_CLIP14: i32 = 8159;
/// Upper ends of the A-law segments (12-bit magnitude).
const ALAW_SEG_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

/// Decodes a µ-law code to a 16-bit linear sample.
#[must_use]
#[inline]
pub fn ulaw_to_linear(code: u8) -> i16 {
    ULAW_TABLE[usize::from(code)]
}

/// Decodes an A-law code to a 16-bit linear sample.
#[must_use]
#[inline]
pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW_TABLE[usize::from(code)]
}

/// Encodes a 16-bit linear sample as µ-law.
#[must_use]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    // 14-bit value, then sign and magnitude; the magnitude is clipped and biased.
    let x = i32::from(sample) >> 2;
    let (magnitude, mask) = if x < 0 { (-x, 0x7Fu8) } else { (x, 0xFFu8) };
    let magnitude = magnitude.min(ULAW_CLIP14) + ULAW_BIAS14;
    let seg = segment(magnitude, &ULAW_SEG_END);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let quant = ((magnitude >> (seg + 1)) & 0x0F) as u8;
    ((seg << 4) | quant) ^ mask
}

/// Encodes a 16-bit linear sample as A-law.
#[must_use]
pub fn linear_to_alaw(sample: i16) -> u8 {
    let x = i32::from(sample) >> 3;
    let (magnitude, mask) = if x >= 0 { (x, 0xD5u8) } else { (!x, 0x55u8) };
    let seg = segment(magnitude, &ALAW_SEG_END);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let quant = if seg < 2 {
        (magnitude >> 1) & 0x0F
    } else {
        (magnitude >> seg) & 0x0F
    } as u8;
    ((seg << 4) | quant) ^ mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_values() {
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0xFE), 8);
        assert_eq!(ulaw_to_linear(0x7E), -8);
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
    }

    #[test]
    fn alaw_known_values() {
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        // Standard sign convention: bit 7 set (after the 0x55 inversion) is positive.
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(-1), 0x55);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn decode_table_spot_checks() {
        // Values from the reference algorithm (cross-checked with Python's audioop).
        assert_eq!(ulaw_to_linear(0x01), -31100);
        assert_eq!(ulaw_to_linear(0x10), -15996);
        assert_eq!(ulaw_to_linear(0xF0), 120);
        assert_eq!(alaw_to_linear(0x00), -5504);
        assert_eq!(alaw_to_linear(0x80), 5504);
        assert_eq!(alaw_to_linear(0xFF), 848);
    }

    #[test]
    fn decode_tables_match_reference() {
        // FNV-1a 64 over the little-endian samples of all 256 codes, as computed with
        // CPython's audioop (ulaw2lin / alaw2lin).
        let fnv = |decode: fn(u8) -> i16| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for code in 0..=255u8 {
                for byte in decode(code).to_le_bytes() {
                    h ^= u64::from(byte);
                    h = h.wrapping_mul(0x0000_0100_0000_01b3);
                }
            }
            h
        };
        assert_eq!(fnv(ulaw_to_linear), 0xb91e_65d6_8481_a1a8);
        assert_eq!(fnv(alaw_to_linear), 0x693a_40ca_62a3_d2a5);
    }

    #[test]
    fn round_trip_all_codes() {
        for code in 0..=255u8 {
            let u = ulaw_to_linear(code);
            assert_eq!(
                ulaw_to_linear(linear_to_ulaw(u)),
                u,
                "µ-law code {code:#04x}"
            );
            let a = alaw_to_linear(code);
            assert_eq!(
                alaw_to_linear(linear_to_alaw(a)),
                a,
                "A-law code {code:#04x}"
            );
        }
    }

    #[test]
    fn tables_are_distinct_and_symmetric() {
        let mut u: Vec<i16> = (0..=255u8).map(ulaw_to_linear).collect();
        u.sort_unstable();
        u.dedup();
        assert_eq!(u.len(), 255, "µ-law has exactly two codes for zero");
        let mut a: Vec<i16> = (0..=255u8).map(alaw_to_linear).collect();
        a.sort_unstable();
        a.dedup();
        assert_eq!(a.len(), 256);
        for code in 0..=127u8 {
            assert_eq!(ulaw_to_linear(code), -ulaw_to_linear(code | 0x80));
            assert_eq!(alaw_to_linear(code), -alaw_to_linear(code | 0x80));
        }
    }

    #[test]
    fn encode_is_monotonic() {
        let mut prev_u = i16::MIN;
        let mut prev_a = i16::MIN;
        for x in i16::MIN..=i16::MAX {
            let u = ulaw_to_linear(linear_to_ulaw(x));
            let a = alaw_to_linear(linear_to_alaw(x));
            assert!(u >= prev_u, "µ-law not monotonic at {x}");
            assert!(a >= prev_a, "A-law not monotonic at {x}");
            prev_u = u;
            prev_a = a;
        }
    }

    #[test]
    fn quantisation_error_is_bounded() {
        // The error never exceeds half the step of the segment (plus clipping at the ends).
        for x in -32000i16..=32000 {
            let u = i32::from(ulaw_to_linear(linear_to_ulaw(x)));
            let a = i32::from(alaw_to_linear(linear_to_alaw(x)));
            let x = i32::from(x);
            let step = |v: i32| {
                if v.abs() < 64 {
                    16
                } else {
                    (v.abs() / 16).max(16)
                }
            };
            assert!((u - x).abs() <= step(x), "µ-law {x} -> {u}");
            assert!((a - x).abs() <= step(x), "A-law {x} -> {a}");
        }
    }

    /// FNV-1a 64 over the codes for every input from `i16::MIN` to `i16::MAX`.
    fn fnv_of_encoding(encode: fn(i16) -> u8) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for x in i16::MIN..=i16::MAX {
            h ^= u64::from(encode(x));
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }

    #[test]
    fn encoders_match_reference() {
        // Expected values computed with CPython's audioop (lin2ulaw / lin2alaw).
        let cases: [(i16, u8, u8); 9] = [
            (-32768, 0x00, 0x2A),
            (-31612, 0x00, 0x2B),
            (-1, 0x7E, 0x55),
            (1, 0xFF, 0xD5),
            (100, 0xF2, 0xD3),
            (-100, 0x72, 0x53),
            (1000, 0xCE, 0xFA),
            (-1000, 0x4E, 0x7A),
            (32767, 0x80, 0xAA),
        ];
        for (x, u, a) in cases {
            assert_eq!(linear_to_ulaw(x), u, "µ-law of {x}");
            assert_eq!(linear_to_alaw(x), a, "A-law of {x}");
        }
        assert_eq!(fnv_of_encoding(linear_to_ulaw), 0xd5ee_23f7_d0ff_ae91);
        assert_eq!(fnv_of_encoding(linear_to_alaw), 0xf030_666e_b780_cf25);
    }
}
