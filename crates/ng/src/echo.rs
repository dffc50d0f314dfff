//! Bounded, escaped echoes of peer input, for error replies and log lines.
//!
//! Whatever a peer sends may end up in an `error-reason` (to name the key or value that was
//! refused) and in the log. Both must stay short and printable whatever the input is: a
//! 60 KB key must not come back as a 60 KB reply, nor a terminal escape sequence reach an
//! operator's console. [`quote`] renders a piece of input as at most [`MAX_ECHO`] bytes of
//! escaped text (plus `…` when cut); [`reason`] bounds a whole message to [`MAX_REASON`]
//! bytes and escapes what is not printable. Both are linear in their output, not their input.

/// Most bytes of escaped text [`quote`] keeps of one piece of input (then `…`).
pub const MAX_ECHO: usize = 64;

/// Most bytes of an `error-reason` (and of a logged refusal reason), `…` included.
pub const MAX_REASON: usize = 256;

/// The ellipsis appended to cut text.
pub const ELLIPSIS: &str = "…";

/// Escaped text of `raw`: printable characters as they are, `\` and `'` and `"` escaped,
/// control and other non-printable characters as `\u{..}`, bytes that are not UTF-8 as
/// `\xNN`; at most [`MAX_ECHO`] bytes of it, followed by `…` when `raw` was longer.
pub fn quote(raw: &[u8]) -> String {
    let (mut out, cut) = escape(raw, MAX_ECHO, true);
    if cut {
        out.push_str(ELLIPSIS);
    }
    out
}

/// [`quote`] of a string.
pub fn quote_str(s: &str) -> String {
    quote(s.as_bytes())
}

/// `text` made safe to send and log: control and non-printable characters escaped (quotes
/// and backslashes kept, so text built with [`quote`] is not escaped twice) and cut to at
/// most [`MAX_REASON`] bytes including a final `…`. Applying it again changes nothing.
pub fn reason(text: &str) -> String {
    let (out, cut) = escape(text.as_bytes(), MAX_REASON, false);
    if !cut {
        return out;
    }
    let (mut out, _) = escape(text.as_bytes(), MAX_REASON - ELLIPSIS.len(), false);
    out.push_str(ELLIPSIS);
    out
}

/// Escapes `raw` into at most `budget` bytes; returns the text and whether input was left.
fn escape(raw: &[u8], budget: usize, quotes: bool) -> (String, bool) {
    let mut out = String::with_capacity(budget.min(raw.len() * 4));
    let mut unit = String::with_capacity(16);
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            unit.clear();
            match c {
                '\\' | '\'' | '"' if !quotes => unit.push(c),
                c => unit.extend(c.escape_debug()),
            }
            if out.len() + unit.len() > budget {
                return (out, true);
            }
            out.push_str(&unit);
        }
        for b in chunk.invalid() {
            if out.len() + 4 > budget {
                return (out, true);
            }
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    (out, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_printable_input_is_kept() {
        assert_eq!(quote(b"transcode-opus"), "transcode-opus");
        assert_eq!(quote_str("Äb ü"), "Äb ü");
        assert_eq!(quote(b""), "");
        assert_eq!(reason("unsupported key 'dtls'"), "unsupported key 'dtls'");
    }

    #[test]
    fn long_input_keeps_a_64_byte_prefix() {
        let key = vec![b'k'; 60_000];
        let q = quote(&key);
        assert_eq!(q, format!("{}…", "k".repeat(MAX_ECHO)));
        assert_eq!(q.len(), MAX_ECHO + ELLIPSIS.len());
        // Multi-byte characters are never split.
        let q = quote_str(&"é".repeat(100));
        assert!(q.ends_with('…'));
        assert_eq!(q.trim_end_matches('…'), "é".repeat(MAX_ECHO / 2));
        // Exactly 64 bytes is not cut.
        assert_eq!(quote(&[b'a'; MAX_ECHO]), "a".repeat(MAX_ECHO));
    }

    #[test]
    fn control_characters_quotes_and_bad_utf8_are_escaped() {
        assert_eq!(quote(b"a\r\nb"), "a\\r\\nb");
        assert_eq!(quote(b"\x1b[31mred"), "\\u{1b}[31mred");
        assert_eq!(quote(b"it's \\ \"x\""), "it\\'s \\\\ \\\"x\\\"");
        assert_eq!(quote(&[b'a', 0xff, 0xfe, b'b']), "a\\xff\\xfeb");
        assert_eq!(quote_str("\u{202e}evil"), "\\u{202e}evil");
        // A run of escapes is bounded by the output size, not the input's.
        let q = quote(&[0xff; 10_000]);
        assert!(q.len() <= MAX_ECHO + ELLIPSIS.len(), "{}", q.len());
        assert!(q.starts_with("\\xff\\xff"));
    }

    #[test]
    fn reasons_are_bounded_and_stable() {
        let long = format!("bad SDP: {}", "x\u{7}".repeat(1_000));
        let r = reason(&long);
        assert!(r.len() <= MAX_REASON, "{}", r.len());
        assert!(r.starts_with("bad SDP: x\\u{7}x"));
        assert!(r.ends_with('…'));
        assert_eq!(reason(&r), r);
        let q = format!("unsupported key '{}'", quote(&[b'k'; 1000]));
        assert_eq!(reason(&q), q);
    }

    proptest! {
        #[test]
        fn any_bytes_give_short_printable_text(raw in proptest::collection::vec(any::<u8>(), 0..600)) {
            let q = quote(&raw);
            prop_assert!(q.len() <= MAX_ECHO + ELLIPSIS.len());
            prop_assert!(!q.chars().any(char::is_control));
            let text = String::from_utf8_lossy(&raw);
            let r = reason(&text);
            prop_assert!(r.len() <= MAX_REASON);
            prop_assert!(!r.chars().any(char::is_control));
            prop_assert_eq!(reason(&r), r.clone());
        }
    }
}
