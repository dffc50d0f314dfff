//! RTP and RTCP header views (RFC 3550 §5.1, §6.4; RFC 5761 §4 for telling them apart on a
//! multiplexed port). Parsing borrows the packet and never allocates.

/// The fields of an RTP fixed header that the relay and the recording need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Marker bit.
    pub marker: bool,
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// RTP timestamp in the payload's clock units.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Offset of the payload in the packet (after CSRCs and the header extension).
    pub payload_offset: usize,
    /// Length of the payload (padding removed).
    pub payload_len: usize,
}

/// Why a packet on an RTP port is not a usable RTP or RTCP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// Shorter than the 12-byte fixed header, or than its CSRC list / extension / padding claims.
    #[error("truncated RTP header")]
    Truncated,
    /// The version field is not 2.
    #[error("RTP version is not 2")]
    BadVersion,
}

/// What a datagram on a media port is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// An RTP packet.
    Rtp(RtpHeader),
    /// An RTCP compound packet (packet type 192..=223 per RFC 5761 §4).
    Rtcp,
}

/// Classifies and parses a datagram received on a media port.
pub fn classify(packet: &[u8]) -> Result<PacketKind, RtpError> {
    if packet.len() < 2 {
        return Err(RtpError::Truncated);
    }
    if packet[0] >> 6 != 2 {
        return Err(RtpError::BadVersion);
    }
    // RFC 5761 §4: RTCP packet types 192-223 collide with RTP payload types 64-95 (with the
    // marker bit); those payload types must not be used for RTP on a multiplexed port.
    if (192..=223).contains(&packet[1]) {
        if packet.len() < 8 {
            return Err(RtpError::Truncated);
        }
        return Ok(PacketKind::Rtcp);
    }
    parse_rtp(packet).map(PacketKind::Rtp)
}

/// Parses an RTP header (RFC 3550 §5.1), including CSRCs, extension and padding.
pub fn parse_rtp(packet: &[u8]) -> Result<RtpHeader, RtpError> {
    let fixed: &[u8; 12] = packet
        .get(..12)
        .and_then(|s| s.try_into().ok())
        .ok_or(RtpError::Truncated)?;
    if fixed[0] >> 6 != 2 {
        return Err(RtpError::BadVersion);
    }
    let padding = fixed[0] & 0x20 != 0;
    let extension = fixed[0] & 0x10 != 0;
    let csrc_count = usize::from(fixed[0] & 0x0f);
    let mut offset = 12 + 4 * csrc_count;
    if extension {
        let ext = packet.get(offset..offset + 4).ok_or(RtpError::Truncated)?;
        let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        offset += 4 + 4 * words;
    }
    if offset > packet.len() {
        return Err(RtpError::Truncated);
    }
    let mut end = packet.len();
    if padding {
        let pad = usize::from(packet[end - 1]);
        if pad == 0 || pad > end - offset {
            return Err(RtpError::Truncated);
        }
        end -= pad;
    }
    Ok(RtpHeader {
        marker: fixed[1] & 0x80 != 0,
        payload_type: fixed[1] & 0x7f,
        sequence: u16::from_be_bytes([fixed[2], fixed[3]]),
        timestamp: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
        ssrc: u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]),
        payload_offset: offset,
        payload_len: end - offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(first: u8, second: u8, extra: &[u8]) -> Vec<u8> {
        let mut p = vec![
            first, second, 0x12, 0x34, 0, 0, 0x03, 0x20, 0xde, 0xad, 0xbe, 0xef,
        ];
        p.extend_from_slice(extra);
        p
    }

    #[test]
    fn parses_fixed_header() {
        let p = rtp(0x80, 0x80 | 8, &[1, 2, 3]);
        let h = parse_rtp(&p).unwrap();
        assert!(h.marker);
        assert_eq!(h.payload_type, 8);
        assert_eq!(h.sequence, 0x1234);
        assert_eq!(h.timestamp, 800);
        assert_eq!(h.ssrc, 0xdead_beef);
        assert_eq!((h.payload_offset, h.payload_len), (12, 3));
    }

    #[test]
    fn skips_csrcs_extension_and_padding() {
        // 1 CSRC, extension of 1 word, 2 payload bytes, 2 bytes padding.
        let mut extra = vec![0, 0, 0, 1]; // CSRC
        extra.extend_from_slice(&[0xbe, 0xde, 0, 1, 9, 9, 9, 9]); // extension
        extra.extend_from_slice(&[7, 7, 0, 2]); // payload + padding (last byte = 2)
        let p = rtp(0x80 | 0x20 | 0x10 | 1, 0, &extra);
        let h = parse_rtp(&p).unwrap();
        assert_eq!(h.payload_offset, 12 + 4 + 8);
        assert_eq!(h.payload_len, 2);
    }

    #[test]
    fn rejects_truncated_and_bad_version() {
        assert_eq!(parse_rtp(&[0x80; 11]), Err(RtpError::Truncated));
        assert_eq!(parse_rtp(&rtp(0x40, 0, &[])), Err(RtpError::BadVersion));
        // CSRC count says 15 but none follow.
        assert_eq!(parse_rtp(&rtp(0x8f, 0, &[])), Err(RtpError::Truncated));
        // Extension header missing.
        assert_eq!(parse_rtp(&rtp(0x90, 0, &[])), Err(RtpError::Truncated));
        // Padding larger than the payload.
        assert_eq!(
            parse_rtp(&rtp(0xa0, 0, &[1, 200])),
            Err(RtpError::Truncated)
        );
        assert_eq!(parse_rtp(&rtp(0xa0, 0, &[0])), Err(RtpError::Truncated));
        assert_eq!(classify(&[0x80]), Err(RtpError::Truncated));
    }

    #[test]
    fn tells_rtcp_from_rtp() {
        // RTCP receiver report header: V=2, PT=201, length.
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        assert_eq!(classify(&rr), Ok(PacketKind::Rtcp));
        assert_eq!(classify(&rr[..4]), Err(RtpError::Truncated));
        assert!(matches!(
            classify(&rtp(0x80, 0, &[1])),
            Ok(PacketKind::Rtp(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data: Vec<u8>) {
            let _ = classify(&data);
            if let Ok(h) = parse_rtp(&data) {
                proptest::prop_assert!(h.payload_offset + h.payload_len <= data.len());
            }
        }
    }
}
