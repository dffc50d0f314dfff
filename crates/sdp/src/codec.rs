//! Codec descriptions: `a=rtpmap` parsing and the static payload types of
//! RFC 3551.

/// One media format of an RTP `m=` line: payload type plus what it encodes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Codec {
    /// RTP payload type (0..=127), the number from the `m=` format list.
    pub payload_type: u8,
    /// Encoding name as written in `a=rtpmap` (e.g. `"PCMU"`,
    /// `"telephone-event"`), or the RFC 3551 name of a static payload type;
    /// empty if unknown.
    pub name: String,
    /// RTP clock rate in Hz; 0 if unknown.
    pub clock_rate: u32,
    /// Number of channels (the `a=rtpmap` encoding parameter, 1 when not
    /// given); 0 if the codec is unknown.
    pub channels: u8,
}

/// Static payload types of RFC 3551 section 6 (tables 4 and 5):
/// `(payload type, encoding name, clock rate, channels)`.
const STATIC_PAYLOAD_TYPES: &[(u8, &str, u32, u8)] = &[
    (0, "PCMU", 8000, 1),
    (3, "GSM", 8000, 1),
    (4, "G723", 8000, 1),
    (5, "DVI4", 8000, 1),
    (6, "DVI4", 16000, 1),
    (7, "LPC", 8000, 1),
    (8, "PCMA", 8000, 1),
    (9, "G722", 8000, 1),
    (10, "L16", 44100, 2),
    (11, "L16", 44100, 1),
    (12, "QCELP", 8000, 1),
    (13, "CN", 8000, 1),
    (14, "MPA", 90000, 1),
    (15, "G728", 8000, 1),
    (16, "DVI4", 11025, 1),
    (17, "DVI4", 22050, 1),
    (18, "G729", 8000, 1),
    (25, "CelB", 90000, 1),
    (26, "JPEG", 90000, 1),
    (28, "nv", 90000, 1),
    (31, "H261", 90000, 1),
    (32, "MPV", 90000, 1),
    (33, "MP2T", 90000, 1),
    (34, "H263", 90000, 1),
];

/// The RFC 3551 static codec for `payload_type`, if it has one.
pub(crate) fn static_codec(payload_type: u8) -> Option<Codec> {
    STATIC_PAYLOAD_TYPES
        .iter()
        .find(|(pt, ..)| *pt == payload_type)
        .map(|&(payload_type, name, clock_rate, channels)| Codec {
            payload_type,
            name: name.to_owned(),
            clock_rate,
            channels,
        })
}

/// Parses an `a=rtpmap` value: `<payload type> <encoding name>/<clock
/// rate>[/<encoding parameters>]` (RFC 8866 section 6.6). `None` if
/// malformed.
pub(crate) fn parse_rtpmap(value: &str) -> Option<Codec> {
    let (pt, rest) = value.trim().split_once(char::is_whitespace)?;
    let payload_type = parse_payload_type(pt)?;
    let mut parts = rest.trim().split('/');
    let name = parts.next()?.trim();
    if name.is_empty() {
        return None;
    }
    let clock_rate = parts.next()?.trim().parse::<u32>().ok()?;
    let channels = match parts.next() {
        Some(channels) => channels.trim().parse::<u8>().ok()?,
        None => 1,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(Codec {
        payload_type,
        name: name.to_owned(),
        clock_rate,
        channels,
    })
}

/// Parses an RTP payload type (a decimal number 0..=127).
pub(crate) fn parse_payload_type(s: &str) -> Option<u8> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u8>().ok().filter(|pt| *pt <= 127)
}

/// The codec for one format of an `m=` line: from the media's `a=rtpmap`
/// values, else the static table, else unknown (name `""`, rate 0).
/// `None` if the format is not an RTP payload type (e.g. `t38`, `*`).
pub(crate) fn codec_for_format(format: &str, rtpmaps: &[Codec]) -> Option<Codec> {
    let payload_type = parse_payload_type(format)?;
    let codec = rtpmaps
        .iter()
        .find(|c| c.payload_type == payload_type)
        .cloned()
        .or_else(|| static_codec(payload_type))
        .unwrap_or(Codec {
            payload_type,
            name: String::new(),
            clock_rate: 0,
            channels: 0,
        });
    Some(codec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtpmap_forms() {
        assert_eq!(
            parse_rtpmap("101 telephone-event/8000"),
            Some(Codec {
                payload_type: 101,
                name: "telephone-event".into(),
                clock_rate: 8000,
                channels: 1
            })
        );
        assert_eq!(
            parse_rtpmap("111 opus/48000/2").map(|c| c.channels),
            Some(2)
        );
        assert_eq!(parse_rtpmap("111"), None);
        assert_eq!(parse_rtpmap("111 opus"), None);
        assert_eq!(parse_rtpmap("128 x/8000"), None);
        assert_eq!(parse_rtpmap("96 x/8000/1/2"), None);
        assert_eq!(parse_rtpmap("96 /8000"), None);
    }

    #[test]
    fn static_and_unknown() {
        assert_eq!(static_codec(18).map(|c| c.name), Some("G729".into()));
        assert_eq!(static_codec(96), None);
        let unknown = codec_for_format("96", &[]).unwrap();
        assert_eq!((unknown.name.as_str(), unknown.clock_rate), ("", 0));
        assert_eq!(codec_for_format("t38", &[]), None);
        assert_eq!(codec_for_format("+8", &[]), None);
    }
}
