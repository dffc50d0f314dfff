//! RFC 3339 text to Unix milliseconds and back (no clock reads, no dependencies).

use linecord_jobs::civil_from_days;

/// Days since 1970-01-01 of a proleptic Gregorian date (the inverse of
/// [`linecord_jobs::civil_from_days`]).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// RFC 3339 UTC text with milliseconds of a Unix time in ms (`2026-11-25T09:12:03.120Z`).
pub fn format_ms(unix_ms: u64) -> String {
    linecord_jobs::rfc3339(unix_ms)
}

/// `(year, month, day)` of a Unix time in ms (UTC): the storage path of a recording.
pub fn ymd(unix_ms: u64) -> (i64, u32, u32) {
    civil_from_days((unix_ms / 86_400_000) as i64)
}

/// Parses RFC 3339 date-time text (`2026-11-25T09:12:03Z`, `…03.120Z`, `…03+01:00`; `t`,
/// `z` and a space instead of `T` are accepted too) into Unix ms. `None` for anything else
/// or for times before 1970.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let year = num(0, 4)?;
    let month = u32::try_from(num(5, 2)?).ok()?;
    let day = u32::try_from(num(8, 2)?).ok()?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let (hh, mm, ss) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
        return None;
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let mut pos = 19;
    let mut millis = 0i64;
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while b.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
        if pos == start {
            return None;
        }
        // Keep milliseconds; further digits are truncated.
        let digits = &s[start..pos];
        let ms_text: String = digits.chars().chain("000".chars()).take(3).collect();
        millis = ms_text.parse().ok()?;
    }
    let offset_min = match b.get(pos) {
        Some(b'Z' | b'z') if pos + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if pos + 6 == b.len() && b.get(pos + 3) == Some(&b':') => {
            let oh = num(pos + 1, 2)?;
            let om = num(pos + 4, 2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let m = oh * 60 + om;
            if *sign == b'-' {
                -m
            } else {
                m
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss - offset_min * 60;
    let ms = secs.checked_mul(1000)?.checked_add(millis)?;
    u64::try_from(ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_offsets() {
        for ms in [0u64, 1_795_597_923_120, 951_782_400_000, 4_102_444_799_999] {
            assert_eq!(parse_rfc3339(&format_ms(ms)), Some(ms), "{ms}");
        }
        assert_eq!(
            parse_rfc3339("2026-11-25T10:12:03.12+01:00"),
            Some(1_795_597_923_120)
        );
        assert_eq!(
            parse_rfc3339("2026-11-25T09:12:03Z"),
            Some(1_795_597_923_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-25t09:12:03.1204567z"),
            Some(1_795_597_923_120)
        );
        assert_eq!(ymd(1_795_597_923_120), (2026, 11, 25));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "2026-11-25",
            "2026-11-25T09:12:03",
            "2026-13-25T09:12:03Z",
            "2026-11-25T09:12:03.Z",
            "2026-11-25T09:12:03+0100",
            "1969-12-31T23:59:59Z",
            "2026-11-25T09:12:03Zjunk",
            "２０２６-11-25T09:12:03Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
