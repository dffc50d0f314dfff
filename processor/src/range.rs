//! HTTP `Range` requests on a byte sequence of known length (RFC 9110 §14).
//!
//! One range per request is served (`bytes=a-b`, `bytes=a-`, `bytes=-n`); a request for
//! several ranges is answered with the whole body, which RFC 9110 §14.2 allows. A range
//! that is malformed or that no byte satisfies is refused with 416.

/// What to send for a request with or without a `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeReply {
    /// 200 with the whole body.
    Full,
    /// 206 with bytes `start..=end` (inclusive, as in `Content-Range`).
    Partial {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Decides how to answer `range` (the header's value, if any) for a body of `len` bytes.
pub fn resolve(range: Option<&str>, len: u64) -> RangeReply {
    let Some(h) = range else {
        return RangeReply::Full;
    };
    let h = h.trim();
    let Some(spec) = h
        .get(..6)
        .filter(|p| p.eq_ignore_ascii_case("bytes="))
        .map(|_| &h[6..])
    else {
        // Another unit: ignore the header (RFC 9110 §14.2).
        return RangeReply::Full;
    };
    if spec.contains(',') {
        return RangeReply::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeReply::Unsatisfiable;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match (a.trim().is_empty(), b.trim().is_empty()) {
        // bytes=-n: the last n bytes.
        (true, false) => match num(b) {
            Some(n) if n > 0 && len > 0 => RangeReply::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            _ => RangeReply::Unsatisfiable,
        },
        // bytes=a-: from a to the end.
        (false, true) => match num(a) {
            Some(start) if start < len => RangeReply::Partial {
                start,
                end: len - 1,
            },
            _ => RangeReply::Unsatisfiable,
        },
        // bytes=a-b.
        (false, false) => match (num(a), num(b)) {
            (Some(start), Some(end)) if start <= end && start < len => RangeReply::Partial {
                start,
                end: end.min(len - 1),
            },
            _ => RangeReply::Unsatisfiable,
        },
        (true, true) => RangeReply::Unsatisfiable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeReply::*;

    #[test]
    fn ranges() {
        assert_eq!(resolve(None, 10), Full);
        assert_eq!(resolve(Some("bytes=0-0"), 10), Partial { start: 0, end: 0 });
        assert_eq!(resolve(Some("bytes=2-5"), 10), Partial { start: 2, end: 5 });
        assert_eq!(resolve(Some("bytes=2-"), 10), Partial { start: 2, end: 9 });
        assert_eq!(
            resolve(Some("bytes=5-100"), 10),
            Partial { start: 5, end: 9 }
        );
        assert_eq!(resolve(Some("bytes=-3"), 10), Partial { start: 7, end: 9 });
        assert_eq!(resolve(Some("bytes=-30"), 10), Partial { start: 0, end: 9 });
        assert_eq!(resolve(Some("BYTES=1-1"), 10), Partial { start: 1, end: 1 });
        assert_eq!(resolve(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(resolve(Some("bytes=10-20"), 10), Unsatisfiable);
        assert_eq!(resolve(Some("bytes=5-2"), 10), Unsatisfiable);
        assert_eq!(resolve(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(resolve(Some("bytes=x-2"), 10), Unsatisfiable);
        assert_eq!(resolve(Some("bytes=-"), 10), Unsatisfiable);
        assert_eq!(resolve(Some("bytes=+1-2"), 10), Unsatisfiable);
        assert_eq!(resolve(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(resolve(Some("bytes=0-1,4-5"), 10), Full);
        assert_eq!(resolve(Some("items=0-1"), 10), Full);
    }
}
