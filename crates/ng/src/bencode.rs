//! Bencode values: decoding with strict validation and canonical encoding.
//!
//! The decoder is total and linear: every input gives a value or a [`DecodeError`] (never a
//! panic), each input byte is looked at a bounded number of times (no re-scans, one copy of
//! each byte string), nothing is preallocated from a length the peer declared, and the
//! nesting depth and the number of items are bounded by [`Limits`] (recursion depth, and
//! so stack use, is bounded by `max_depth`).

use std::collections::BTreeMap;

use thiserror::Error;

/// Default maximum nesting of lists/dictionaries accepted by [`decode`].
pub const MAX_DEPTH: usize = 32;

/// Default maximum number of items (values of any type, and dictionary keys) accepted by
/// [`decode`]. A 64 KiB datagram holds at most ~32 000 items (`le` is 2 bytes), so this only
/// bites on larger inputs; servers use the tighter [`crate::message::REQUEST_LIMITS`].
pub const MAX_ITEMS: usize = 65_536;

/// Resource bounds of one decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of lists/dictionaries (a top-level list is depth 1).
    pub max_depth: usize,
    /// Most items: every value (integer, string, list, dictionary) and every dictionary key.
    pub max_items: usize,
}

impl Limits {
    /// [`MAX_DEPTH`] and [`MAX_ITEMS`].
    pub const DEFAULT: Limits = Limits {
        max_depth: MAX_DEPTH,
        max_items: MAX_ITEMS,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// A bencode value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Integer, `i<n>e`.
    Int(i64),
    /// Byte string, `<len>:<bytes>`.
    Bytes(Vec<u8>),
    /// List, `l...e`.
    List(Vec<Value>),
    /// Dictionary with byte-string keys, `d...e` (kept sorted).
    Dict(BTreeMap<Vec<u8>, Value>),
}

/// Why a byte sequence is not valid bencode. Offsets are relative to the
/// start of the decoded input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended in the middle of a value.
    #[error("unexpected end of input")]
    UnexpectedEnd,
    /// Malformed integer (empty, `-0`, leading zero, stray byte or overflow).
    #[error("invalid integer at byte {offset}")]
    InvalidInt {
        /// Offset of the `i` that starts the integer.
        offset: usize,
    },
    /// Malformed byte-string length (leading zero, stray byte or overflow).
    #[error("invalid string length at byte {offset}")]
    InvalidLength {
        /// Offset of the first length digit.
        offset: usize,
    },
    /// A dictionary key is not a byte string.
    #[error("dictionary key at byte {offset} is not a byte string")]
    NonStringKey {
        /// Offset of the offending key.
        offset: usize,
    },
    /// Lists/dictionaries nested deeper than [`Limits::max_depth`].
    #[error("nesting deeper than {limit} levels")]
    TooDeep {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// More items than [`Limits::max_items`].
    #[error("more than {limit} items")]
    TooManyItems {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// Bytes remain after a complete value.
    #[error("trailing data at byte {offset}")]
    TrailingData {
        /// Offset of the first byte after the value.
        offset: usize,
    },
    /// A byte that cannot start a value.
    #[error("unexpected byte 0x{byte:02x} at byte {offset}")]
    UnexpectedByte {
        /// Offset of the byte.
        offset: usize,
        /// The byte itself.
        byte: u8,
    },
}

/// Decodes `input`, which must hold exactly one value, within [`Limits::DEFAULT`].
pub fn decode(input: &[u8]) -> Result<Value, DecodeError> {
    decode_with(input, Limits::DEFAULT)
}

/// Decodes `input`, which must hold exactly one value, within `limits`.
pub fn decode_with(input: &[u8], limits: Limits) -> Result<Value, DecodeError> {
    let (value, used) = decode_prefix_with(input, limits)?;
    if used == input.len() {
        Ok(value)
    } else {
        Err(DecodeError::TrailingData { offset: used })
    }
}

/// Decodes the value at the start of `input` within [`Limits::DEFAULT`]; returns it with the
/// number of bytes it occupied.
pub fn decode_prefix(input: &[u8]) -> Result<(Value, usize), DecodeError> {
    decode_prefix_with(input, Limits::DEFAULT)
}

/// Decodes the value at the start of `input` within `limits`; returns it with the number of
/// bytes it occupied.
pub fn decode_prefix_with(input: &[u8], limits: Limits) -> Result<(Value, usize), DecodeError> {
    let mut d = Decoder::new(input, limits);
    let value = d.value(0)?;
    Ok((value, d.pos))
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    limits: Limits,
    items: usize,
    /// Bytes examined or copied, containers opened and closed: the decoder's work, which the
    /// tests hold to a constant multiple of the input length.
    work: u64,
}

impl<'a> Decoder<'a> {
    fn new(input: &'a [u8], limits: Limits) -> Self {
        Decoder {
            input,
            pos: 0,
            limits,
            items: 0,
            work: 0,
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.work += 1;
        self.input.get(self.pos).copied()
    }

    /// Counts one item against [`Limits::max_items`].
    fn item(&mut self) -> Result<(), DecodeError> {
        self.items += 1;
        if self.items > self.limits.max_items {
            return Err(DecodeError::TooManyItems {
                limit: self.limits.max_items,
            });
        }
        Ok(())
    }

    /// Parses one value; `depth` is the number of enclosing containers.
    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        let first = self.peek();
        if first.is_some() {
            self.item()?;
        }
        match first {
            None => Err(DecodeError::UnexpectedEnd),
            Some(b'i') => self.int().map(Value::Int),
            Some(b'0'..=b'9') => self.bytes().map(|b| Value::Bytes(b.to_vec())),
            Some(b'l') => {
                self.open(depth)?;
                let mut items = Vec::new();
                loop {
                    match self.peek() {
                        None => return Err(DecodeError::UnexpectedEnd),
                        Some(b'e') => break,
                        Some(_) => items.push(self.value(depth + 1)?),
                    }
                }
                self.pos += 1;
                Ok(Value::List(items))
            }
            Some(b'd') => {
                self.open(depth)?;
                let mut map = BTreeMap::new();
                loop {
                    match self.peek() {
                        None => return Err(DecodeError::UnexpectedEnd),
                        Some(b'e') => break,
                        Some(b'0'..=b'9') => {
                            self.item()?;
                            let key = self.bytes()?.to_vec();
                            let value = self.value(depth + 1)?;
                            map.insert(key, value); // duplicate key: last wins
                        }
                        Some(_) => return Err(DecodeError::NonStringKey { offset: self.pos }),
                    }
                }
                self.pos += 1;
                Ok(Value::Dict(map))
            }
            Some(byte) => Err(DecodeError::UnexpectedByte {
                offset: self.pos,
                byte,
            }),
        }
    }

    /// Enters a container: checks depth and skips the opening byte.
    fn open(&mut self, depth: usize) -> Result<(), DecodeError> {
        if depth >= self.limits.max_depth {
            return Err(DecodeError::TooDeep {
                limit: self.limits.max_depth,
            });
        }
        self.pos += 1;
        Ok(())
    }

    fn int(&mut self) -> Result<i64, DecodeError> {
        let start = self.pos;
        let invalid = DecodeError::InvalidInt { offset: start };
        let mut end = start + 1;
        let negative = self.input.get(end) == Some(&b'-');
        if negative {
            end += 1;
        }
        let digits_start = end;
        // At most 19 digits fit an i64: stop scanning there instead of walking a huge
        // integer to its end.
        while end - digits_start <= 19 && matches!(self.input.get(end), Some(b'0'..=b'9')) {
            end += 1;
        }
        self.work += (end - start) as u64;
        match self.input.get(end) {
            None => return Err(DecodeError::UnexpectedEnd),
            Some(b'e') => {}
            Some(_) => return Err(invalid),
        }
        let digits = self.input.get(digits_start..end).unwrap_or_default();
        let leading_zero = digits.first() == Some(&b'0') && (digits.len() > 1 || negative);
        if digits.is_empty() || leading_zero {
            return Err(invalid);
        }
        let mut n: i64 = 0;
        for &b in digits {
            self.work += 1;
            let d = i64::from(b - b'0');
            n = n
                .checked_mul(10)
                .and_then(|n| {
                    if negative {
                        n.checked_sub(d)
                    } else {
                        n.checked_add(d)
                    }
                })
                .ok_or(invalid.clone())?;
        }
        self.pos = end + 1;
        Ok(n)
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        let invalid = DecodeError::InvalidLength { offset: start };
        let mut len: usize = 0;
        let mut i = start;
        while let Some(&b @ b'0'..=b'9') = self.input.get(i) {
            self.work += 1;
            if i > start && len == 0 {
                return Err(invalid); // leading zero
            }
            len = len
                .checked_mul(10)
                .and_then(|l| l.checked_add(usize::from(b - b'0')))
                .ok_or(invalid.clone())?;
            i += 1;
        }
        match self.input.get(i) {
            None => return Err(DecodeError::UnexpectedEnd),
            Some(b':') if i > start => {}
            Some(_) => return Err(invalid),
        }
        let data = self
            .input
            .get(i + 1..)
            .and_then(|rest| rest.get(..len))
            .ok_or(DecodeError::UnexpectedEnd)?;
        self.work += len as u64; // the caller copies it once
        self.pos = i + 1 + len;
        Ok(data)
    }
}

impl Value {
    /// Appends the canonical encoding (sorted keys, minimal integers) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(n) => {
                out.push(b'i');
                out.extend_from_slice(n.to_string().as_bytes());
                out.push(b'e');
            }
            Value::Bytes(b) => encode_bytes(b, out),
            Value::List(items) => {
                out.push(b'l');
                items.iter().for_each(|v| v.encode(out));
                out.push(b'e');
            }
            Value::Dict(map) => {
                out.push(b'd');
                for (k, v) in map {
                    encode_bytes(k, out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    /// Returns the canonical encoding as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// The bytes of a byte string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// A byte string that is valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The integer value.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The items of a list.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// The entries of a dictionary.
    pub fn as_dict(&self) -> Option<&BTreeMap<Vec<u8>, Value>> {
        match self {
            Value::Dict(map) => Some(map),
            _ => None,
        }
    }

    /// Looks `key` up (exact bytes); `None` if absent or `self` is not a dictionary.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_dict().and_then(|m| m.get(key.as_bytes()))
    }

    /// A byte string holding `s`.
    pub fn str(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    /// A byte string holding `b`.
    pub fn bytes(b: impl Into<Vec<u8>>) -> Value {
        Value::Bytes(b.into())
    }

    /// An integer.
    pub fn int(n: i64) -> Value {
        Value::Int(n)
    }

    /// An empty list.
    pub fn list() -> Value {
        Value::List(Vec::new())
    }

    /// An empty dictionary.
    pub fn dict() -> Value {
        Value::Dict(BTreeMap::new())
    }

    /// Sets `key` to `v` in a dictionary (replacing any old value); does
    /// nothing if `self` is not a dictionary.
    pub fn insert(&mut self, key: &str, v: impl Into<Value>) {
        if let Value::Dict(map) = self {
            map.insert(key.as_bytes().to_vec(), v.into());
        }
    }

    /// Appends `v` to a list; does nothing if `self` is not a list.
    pub fn push(&mut self, v: impl Into<Value>) {
        if let Value::List(items) = self {
            items.push(v.into());
        }
    }
}

fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

impl From<&str> for Value {
    /// A byte string holding the UTF-8 text.
    fn from(s: &str) -> Value {
        Value::str(s)
    }
}

impl From<String> for Value {
    /// A byte string holding the UTF-8 text.
    fn from(s: String) -> Value {
        Value::Bytes(s.into_bytes())
    }
}

impl From<&[u8]> for Value {
    /// A byte string.
    fn from(b: &[u8]) -> Value {
        Value::Bytes(b.to_vec())
    }
}

impl From<Vec<u8>> for Value {
    /// A byte string.
    fn from(b: Vec<u8>) -> Value {
        Value::Bytes(b)
    }
}

/// Lossless integer conversions into [`Value::Int`].
macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(n: $t) -> Value {
                Value::Int(n.into())
            }
        }
    )*};
}
from_int!(i64, i32, u32, u16);

impl From<u64> for Value {
    /// An integer, saturating at `i64::MAX`.
    fn from(n: u64) -> Value {
        Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl From<Vec<Value>> for Value {
    /// A list.
    fn from(items: Vec<Value>) -> Value {
        Value::List(items)
    }
}

impl From<BTreeMap<Vec<u8>, Value>> for Value {
    /// A dictionary.
    fn from(map: BTreeMap<Vec<u8>, Value>) -> Value {
        Value::Dict(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn err(input: &[u8]) -> DecodeError {
        decode(input).unwrap_err()
    }

    #[test]
    fn scalars() {
        assert_eq!(decode(b"i-42e"), Ok(Value::Int(-42)));
        assert_eq!(decode(b"i0e"), Ok(Value::Int(0)));
        assert_eq!(decode(b"i9223372036854775807e"), Ok(Value::Int(i64::MAX)));
        assert_eq!(decode(b"i-9223372036854775808e"), Ok(Value::Int(i64::MIN)));
        assert_eq!(decode(b"5:hello"), Ok(Value::str("hello")));
        assert_eq!(decode(b"0:"), Ok(Value::str("")));
        assert_eq!(Value::Int(-42).to_bytes(), b"i-42e");
        assert_eq!(Value::str("hello").to_bytes(), b"5:hello");
    }

    #[test]
    fn containers() {
        let v = decode(b"d4:listli1e3:twoe3:mapd1:ki0eee").unwrap();
        assert_eq!(
            v.get("list").and_then(Value::as_list).map(<[_]>::len),
            Some(2)
        );
        assert_eq!(
            v.get("map")
                .and_then(|m| m.get("k"))
                .and_then(Value::as_int),
            Some(0)
        );
        assert_eq!(v.get("list").unwrap().get("x"), None);
        assert_eq!(v.to_bytes(), b"d4:listli1e3:twoe3:mapd1:ki0eee");
        assert_eq!(decode(b"le"), Ok(Value::list()));
        assert_eq!(decode(b"de"), Ok(Value::dict()));
    }

    #[test]
    fn unsorted_and_duplicate_keys() {
        let v = decode(b"d1:bi1e1:ai2e1:bi3ee").unwrap();
        assert_eq!(v.get("a"), Some(&Value::Int(2)));
        assert_eq!(v.get("b"), Some(&Value::Int(3)));
        assert_eq!(v.to_bytes(), b"d1:ai2e1:bi3ee");
    }

    #[test]
    fn builders() {
        let mut d = Value::dict();
        d.insert("n", 5);
        d.insert("big", u64::MAX);
        d.insert("s", "x");
        d.insert("l", vec![Value::int(1), Value::from(2u16)]);
        assert_eq!(
            d.to_bytes(),
            b"d3:bigi9223372036854775807e1:lli1ei2ee1:ni5e1:s1:xe"
        );
        let mut not_dict = Value::int(1);
        not_dict.insert("k", 1);
        assert_eq!(not_dict, Value::Int(1));
        let mut l = Value::list();
        l.push("a");
        assert_eq!(l.as_list(), Some(&[Value::str("a")][..]));
        assert_eq!(Value::bytes(vec![0xff]).as_str(), None);
    }

    #[test]
    fn malformed() {
        use DecodeError::*;
        assert_eq!(err(b""), UnexpectedEnd);
        assert_eq!(err(b"i"), UnexpectedEnd);
        assert_eq!(err(b"i12"), UnexpectedEnd);
        assert_eq!(err(b"i-0e"), InvalidInt { offset: 0 });
        assert_eq!(err(b"i03e"), InvalidInt { offset: 0 });
        assert_eq!(err(b"ie"), InvalidInt { offset: 0 });
        assert_eq!(err(b"i-e"), InvalidInt { offset: 0 });
        assert_eq!(err(b"i1xe"), InvalidInt { offset: 0 });
        assert_eq!(err(b"i9223372036854775808e"), InvalidInt { offset: 0 });
        assert_eq!(err(b"li-9223372036854775809ee"), InvalidInt { offset: 1 });
        assert_eq!(err(b"3:ab"), UnexpectedEnd);
        assert_eq!(err(b"01:a"), InvalidLength { offset: 0 });
        assert_eq!(err(b"1x"), InvalidLength { offset: 0 });
        assert_eq!(
            err(b"99999999999999999999999:"),
            InvalidLength { offset: 0 }
        );
        assert_eq!(err(b"l"), UnexpectedEnd);
        assert_eq!(
            err(b"d1:ae"),
            UnexpectedByte {
                offset: 4,
                byte: b'e'
            }
        );
        assert_eq!(err(b"di1e1:ae"), NonStringKey { offset: 1 });
        assert_eq!(err(b"5:hello5:hello"), TrailingData { offset: 7 });
        assert_eq!(
            err(b"x"),
            UnexpectedByte {
                offset: 0,
                byte: b'x'
            }
        );
        assert_eq!(err(&[b'l'; 1000]), TooDeep { limit: MAX_DEPTH });
        assert_eq!(err(&[b'd'; 1000]), NonStringKey { offset: 1 });
    }

    #[test]
    fn depth_limit_is_inclusive() {
        let ok = [vec![b'l'; MAX_DEPTH], vec![b'e'; MAX_DEPTH]].concat();
        assert!(decode(&ok).is_ok());
        let deep = [vec![b'l'; MAX_DEPTH + 1], vec![b'e'; MAX_DEPTH + 1]].concat();
        assert_eq!(
            decode(&deep),
            Err(DecodeError::TooDeep { limit: MAX_DEPTH })
        );
        let tight = Limits {
            max_depth: 2,
            ..Limits::DEFAULT
        };
        assert!(decode_with(b"lldeee", tight).is_err());
        assert!(decode_with(b"llee", tight).is_ok());
        assert_eq!(
            decode_with(b"llleee", tight),
            Err(DecodeError::TooDeep { limit: 2 })
        );
        assert_eq!(
            DecodeError::TooDeep { limit: 2 }.to_string(),
            "nesting deeper than 2 levels"
        );
    }

    #[test]
    fn item_limit_counts_values_and_keys() {
        let three = Limits {
            max_items: 3,
            ..Limits::DEFAULT
        };
        // list + 2 ints = 3 items; dict + key + value = 3 items.
        assert!(decode_with(b"li1ei2ee", three).is_ok());
        assert!(decode_with(b"d1:ai1ee", three).is_ok());
        assert_eq!(
            decode_with(b"li1ei2ei3ee", three),
            Err(DecodeError::TooManyItems { limit: 3 })
        );
        assert_eq!(
            decode_with(b"d1:ai1e1:bi2ee", three),
            Err(DecodeError::TooManyItems { limit: 3 })
        );
        // The default bound: a list of 65 535 empty strings fits, one more does not.
        let mut fits = b"l".to_vec();
        fits.extend(b"0:".repeat(MAX_ITEMS - 1));
        fits.push(b'e');
        assert!(decode(&fits).is_ok());
        let mut over = b"l".to_vec();
        over.extend(b"0:".repeat(MAX_ITEMS));
        over.push(b'e');
        assert_eq!(
            decode(&over),
            Err(DecodeError::TooManyItems { limit: MAX_ITEMS })
        );
    }

    #[test]
    fn huge_integers_are_refused_without_walking_them() {
        let mut big = b"i".to_vec();
        big.extend(std::iter::repeat_n(b'9', 100_000));
        big.push(b'e');
        assert_eq!(err(&big), DecodeError::InvalidInt { offset: 0 });
        let (r, work) = decode_counted(&big, Limits::DEFAULT);
        assert!(r.is_err());
        assert!(work < 64, "{work} steps for a refused integer");
        assert_eq!(
            err(b"i123456789012345678901e"),
            DecodeError::InvalidInt { offset: 0 }
        );
    }

    /// Adversarial shapes of about `n` bytes, each valid up to where it is meant to fail.
    fn shapes(n: usize) -> Vec<(&'static str, Vec<u8>)> {
        let deep = {
            // Lists nested to the limit, repeated side by side inside one list.
            let unit = [vec![b'l'; MAX_DEPTH - 1], vec![b'e'; MAX_DEPTH - 1]].concat();
            let mut v = b"l".to_vec();
            while v.len() + unit.len() < n {
                v.extend_from_slice(&unit);
            }
            v.push(b'e');
            v
        };
        let ints = {
            let mut v = b"l".to_vec();
            while v.len() < n {
                v.extend_from_slice(b"i-1234567890e");
            }
            v.push(b'e');
            v
        };
        let shared_prefix_keys = {
            // Keys with a long common prefix make every map comparison walk it.
            let mut v = b"d".to_vec();
            let mut i = 0u32;
            while v.len() < n {
                let key = format!("{}{i:08}", "p".repeat(200));
                v.extend_from_slice(format!("{}:{key}i0e", key.len()).as_bytes());
                i += 1;
            }
            v.push(b'e');
            v
        };
        let duplicate_keys = {
            let mut v = b"d".to_vec();
            while v.len() < n {
                v.extend_from_slice(b"5:flagsl1:a1:b1:ce");
            }
            v.push(b'e');
            v
        };
        let long_string = {
            let mut v = format!("{n}:").into_bytes();
            v.extend(std::iter::repeat_n(b'x', n));
            v
        };
        let truncated_deep = {
            // Many items, then containers opened to the limit and the input ends.
            let mut v = ints.clone();
            v.pop();
            v.extend(vec![b'l'; MAX_DEPTH - 2]);
            v
        };
        let garbage_at_end = {
            let mut v = ints.clone();
            v.pop();
            v.push(b'x');
            v
        };
        vec![
            ("deep", deep),
            ("ints", ints),
            ("shared-prefix keys", shared_prefix_keys),
            ("duplicate keys", duplicate_keys),
            ("long string", long_string),
            ("truncated deep", truncated_deep),
            ("garbage at end", garbage_at_end),
        ]
    }

    #[test]
    fn work_is_linear_in_the_input() {
        let unlimited = Limits {
            max_depth: MAX_DEPTH,
            max_items: usize::MAX,
        };
        let small = shapes(1_000);
        let big = shapes(64_000);
        for ((name, s), (_, b)) in small.iter().zip(&big) {
            let (_, ws) = decode_counted(s, unlimited);
            let (_, wb) = decode_counted(b, unlimited);
            let per_byte_small = ws as f64 / s.len() as f64;
            let per_byte_big = wb as f64 / b.len() as f64;
            // A constant number of steps per byte, the same at 1 KB and 64 KB: a quadratic
            // decoder would do ~64x more work per byte on the big input.
            assert!(per_byte_big <= 4.0, "{name}: {per_byte_big:.2} steps/byte");
            assert!(
                per_byte_big <= per_byte_small * 1.25 + 0.1,
                "{name}: {per_byte_small:.2} -> {per_byte_big:.2} steps/byte"
            );
        }
    }

    #[test]
    fn the_work_counter_counts() {
        // Guards the linearity test: the counter sees every byte of a string and an int.
        let (_, w) = decode_counted(b"10:0123456789", Limits::DEFAULT);
        assert!(w >= 12, "{w}");
        let (_, w) = decode_counted(b"i123456e", Limits::DEFAULT);
        assert!(w >= 7, "{w}");
    }

    #[test]
    fn prefix() {
        assert_eq!(decode_prefix(b"i1exyz"), Ok((Value::Int(1), 3)));
    }

    /// Decodes and returns the decoder's work count.
    fn decode_counted(input: &[u8], limits: Limits) -> (Result<Value, DecodeError>, u64) {
        let mut d = Decoder::new(input, limits);
        let r = d.value(0);
        (r, d.work)
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
                proptest::collection::btree_map(
                    proptest::collection::vec(any::<u8>(), 0..8),
                    inner,
                    0..8
                )
                .prop_map(Value::Dict),
            ]
        })
    }

    proptest! {
        #[test]
        fn round_trip(v in arb_value()) {
            prop_assert_eq!(decode(&v.to_bytes()), Ok(v));
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&input);
        }

        #[test]
        fn bencode_like_bytes_never_panic(
            input in proptest::collection::vec(
                prop_oneof![Just(b'i'), Just(b'l'), Just(b'd'), Just(b'e'), Just(b':'),
                            Just(b'-'), Just(b'0'), Just(b'1'), Just(b'9'), any::<u8>()],
                0..128)
        ) {
            if let Ok(v) = decode(&input) {
                // Canonical input re-encodes identically only if keys were sorted and
                // unique, but re-decoding the encoding must give the same value.
                prop_assert_eq!(decode(&v.to_bytes()), Ok(v));
            }
        }
    }
}
