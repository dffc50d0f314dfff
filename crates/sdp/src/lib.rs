//! SDP inspection and rewriting for a media relay.
//!
//! linecord's media server sits in the media path (like sipwise rtpengine):
//! it rewrites the SDP bodies of SIP offers and answers so that each party
//! sends its RTP/RTCP to the relay instead of to the other party. This crate
//! does the SDP part of that job, as a pure library without I/O:
//!
//! 1. **parse** — [`Sdp::parse`] reads a session description (RFC 8866, which
//!    obsoletes RFC 4566) and validates what a relay relies on: at least one
//!    `m=` line, at least one `m=audio`, IP address literals in every `c=`
//!    and `a=rtcp` attribute, at most [`MAX_SDP_SIZE`] bytes.
//! 2. **inspect** — [`Sdp::medias`] describes every `m=` line in order as a
//!    [`MediaInfo`]: port (0 = stream rejected or disabled, RFC 3264
//!    section 6/8.2), transport, effective connection address (media-level
//!    `c=` overriding session-level `c=`), the RTCP port and address of
//!    `a=rtcp` (RFC 3605), RTP/RTCP multiplexing via `a=rtcp-mux`
//!    (RFC 5761), the direction attribute (RFC 3264 section 5.1) and the
//!    codecs (`a=rtpmap`, else the static payload types of RFC 3551).
//! 3. **rewrite** — [`Sdp::rewrite`] applies a [`RewritePlan`]: the relay's
//!    address goes into the `c=` lines (and optionally `o=`), the relay's
//!    ports into the `m=` lines and `a=rtcp` attributes of the relayed
//!    streams, and ICE attributes can be dropped (a relay that rewrites
//!    addresses invalidates the candidates). Streams the plan leaves out —
//!    typically rejected ones with port 0, which RFC 3264 requires to stay
//!    in the answer — keep their `m=` line as it is.
//!
//! # Byte-exact rewriting
//!
//! Everything the plan does not rewrite is passed through byte for byte, in
//! its original order: codecs, `a=rtpmap`/`a=fmtp`/`a=ptime`, direction,
//! `b=`, unknown attributes and even unknown line types. Output lines always
//! end in CRLF as SIP requires (RFC 8866 section 5), also when the input used
//! bare LF. Empty lines, which are not SDP lines, are dropped.
//!
//! The parsing and the inspection are done with the [`sdp_types`] crate; the
//! rewriting is deliberately *not* done by modifying the
//! [`sdp_types::Session`] and serialising it with `Session::write`, but by
//! editing the original lines. `sdp-types` 0.3.1 reads CRLF and LF SDP
//! alike and always writes CRLF, and a canonical CRLF SDP (lines in RFC 8866
//! order, single spaces, upper-case `IN IP4`, `o=`/`s=`/`t=` present, no
//! unknown line types) round-trips exactly — but anything else does not: it
//! re-orders lines into the RFC order (e.g. a media-level `c=` written after
//! the `a=` lines, or a session `c=` after `t=`), drops lines of unknown type
//! and empty lines, collapses runs of spaces in `o=`/`c=`/`t=`, upper-cases
//! nettype and addrtype, re-formats numbers (leading zeros of the `o=`
//! session version, `r=` times as `7d 1h`), and inserts placeholder
//! `o=- 0 0 IN IP4 0.0.0.0`, `s=` and `t=0 0` lines when they are missing.
//! The tests `sdp_types_round_trips_canonical_crlf` and
//! `sdp_types_does_not_round_trip_everything` pin this down.
//!
//! # Example
//!
//! ```
//! use linecord_sdp::{MediaPorts, RewritePlan, Sdp};
//!
//! let offer = "v=0\r\n\
//!     o=- 1 1 IN IP4 192.0.2.10\r\n\
//!     s=-\r\n\
//!     c=IN IP4 192.0.2.10\r\n\
//!     t=0 0\r\n\
//!     m=audio 49170 RTP/AVP 0\r\n";
//! let sdp = Sdp::parse(offer.as_bytes())?;
//! let media = &sdp.medias()[0];
//! assert_eq!(media.rtp_peer(), Some("192.0.2.10:49170".parse().unwrap()));
//!
//! let plan = RewritePlan {
//!     address: "198.18.0.1".parse().unwrap(),
//!     medias: vec![Some(MediaPorts { rtp: 30000, rtcp: 30001 })],
//!     replace_origin: false,
//!     remove_ice: true,
//! };
//! let rewritten = sdp.rewrite(&plan)?;
//! assert_eq!(
//!     String::from_utf8(rewritten).unwrap(),
//!     "v=0\r\n\
//!      o=- 1 1 IN IP4 192.0.2.10\r\n\
//!      s=-\r\n\
//!      c=IN IP4 198.18.0.1\r\n\
//!      t=0 0\r\n\
//!      m=audio 30000 RTP/AVP 0\r\n"
//! );
//! # Ok::<(), linecord_sdp::SdpError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod codec;
mod error;
mod rewrite;

use std::fmt;
use std::net::{IpAddr, SocketAddr};

pub use codec::Codec;
pub use error::SdpError;
pub use rewrite::{MediaPorts, RewritePlan};

/// Largest SDP body [`Sdp::parse`] accepts, in bytes (64 KiB). Real SDP
/// bodies are a few hundred bytes to a few KiB.
pub const MAX_SDP_SIZE: usize = 64 * 1024;

/// A parsed and validated SDP session description.
///
/// Built by [`Sdp::parse`]; inspected with [`Sdp::medias`] and
/// [`Sdp::session_address`]; turned into the relay's version with
/// [`Sdp::rewrite`].
#[derive(Debug, Clone)]
pub struct Sdp {
    /// The structured form, used for inspection.
    session: sdp_types::Session,
    /// The original non-empty lines without their line terminators, used
    /// for byte-exact rewriting.
    lines: Vec<String>,
    /// Address of the session-level `c=` line, if any.
    session_address: Option<IpAddr>,
    /// One entry per `m=` line, computed (and validated) at parse time.
    medias: Vec<MediaInfo>,
}

/// What one `m=` line (media description) says, as far as a relay cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaInfo {
    /// Position of the `m=` line among the media descriptions, from 0.
    pub index: usize,
    /// Media type: `"audio"`, `"video"`, `"image"`, `"application"`, ...
    pub kind: String,
    /// Transport port of the `m=` line; 0 means the stream is rejected or
    /// disabled (RFC 3264).
    pub port: u16,
    /// Transport protocol: `"RTP/AVP"`, `"RTP/SAVP"`, `"udptl"`, ...
    pub proto: String,
    /// The media formats of the `m=` line, in order (RTP payload types as
    /// decimal strings, or e.g. `"t38"`).
    pub formats: Vec<String>,
    /// The media-level `c=` address if present, else the session-level one;
    /// `None` if neither exists. An unspecified address (`0.0.0.0`, `::`) is
    /// returned as is — the caller treats it as "on hold, peer unknown".
    pub address: Option<IpAddr>,
    /// RTCP port from `a=rtcp:PORT` (RFC 3605).
    pub rtcp_port: Option<u16>,
    /// RTCP address from `a=rtcp:PORT IN IP4|IP6 ADDRESS` (RFC 3605).
    pub rtcp_address: Option<IpAddr>,
    /// Whether `a=rtcp-mux` (RFC 5761) is present.
    pub rtcp_mux: bool,
    /// The media-level direction attribute, else the session-level one,
    /// else [`Direction::SendRecv`].
    pub direction: Direction,
    /// One codec per format that is an RTP payload type (0..=127), in order:
    /// from `a=rtpmap`, else the RFC 3551 static payload type, else unknown
    /// (name `""`, clock rate 0). Other formats (`t38`, `*`) have none.
    pub codecs: Vec<Codec>,
    /// Whether the transport is UDP-based: `proto` starts with `RTP/` or
    /// `UDP/` or is `udptl` (all case-insensitive). TCP-based transports
    /// such as `TCP/MSRP` or `TCP/TLS/RTP/SAVP` are not.
    pub is_udp: bool,
}

impl MediaInfo {
    /// RTP clock rate of the first codec; 8000 if there is none or it is
    /// unknown.
    pub fn clock_rate(&self) -> u32 {
        match self.codecs.first() {
            Some(codec) if codec.clock_rate != 0 => codec.clock_rate,
            _ => 8000,
        }
    }

    /// Where this party wants to receive RTP: the connection address with
    /// the `m=` port. `None` if there is no address or the port is 0.
    pub fn rtp_peer(&self) -> Option<SocketAddr> {
        let address = self.address?;
        (self.port != 0).then(|| SocketAddr::new(address, self.port))
    }

    /// Where this party wants to receive RTCP: the RTP address and port if
    /// `a=rtcp-mux` is present (RFC 5761), else the `a=rtcp` port with the
    /// `a=rtcp` address or the connection address (RFC 3605), else the RTP
    /// port + 1 (RFC 3550 section 11). `None` if the stream has no address,
    /// is rejected (port 0), or the computed port is 0 or out of range.
    pub fn rtcp_peer(&self) -> Option<SocketAddr> {
        if self.rtcp_mux {
            return self.rtp_peer();
        }
        let rtp = self.rtp_peer()?;
        let (address, port) = match self.rtcp_port {
            Some(port) => (self.rtcp_address.unwrap_or(rtp.ip()), port),
            None => (rtp.ip(), rtp.port().checked_add(1)?),
        };
        (port != 0).then(|| SocketAddr::new(address, port))
    }
}

/// Media direction attribute (RFC 3264 section 5.1, RFC 8866 section 6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// `a=sendrecv`, also the default when no direction attribute is given.
    #[default]
    SendRecv,
    /// `a=sendonly`: the party only sends.
    SendOnly,
    /// `a=recvonly`: the party only receives.
    RecvOnly,
    /// `a=inactive`: neither sends nor receives.
    Inactive,
}

impl Direction {
    /// The attribute name: `"sendrecv"`, `"sendonly"`, `"recvonly"` or
    /// `"inactive"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an attribute name denotes (case-insensitive), if any.
    fn from_attribute(name: &str) -> Option<Direction> {
        [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ]
        .into_iter()
        .find(|d| d.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Sdp {
    /// Parses and validates an SDP body (CRLF or LF line ends).
    ///
    /// Errors: [`SdpError::TooLarge`] above [`MAX_SDP_SIZE`] bytes,
    /// [`SdpError::Parse`] for non-UTF-8 or syntactically invalid input and
    /// malformed `a=rtcp` attributes, [`SdpError::NoMedia`] without `m=`
    /// lines, [`SdpError::NoAudio`] without an `m=audio` line,
    /// [`SdpError::BadAddress`] for a `c=` or `a=rtcp` address that is not an
    /// `IN IP4`/`IN IP6` IP literal. The addrtype is not checked against
    /// the address family (`IN IP4 2001:db8::1` is taken as the IPv6
    /// address). An optional `/ttl` or `/count` suffix of a `c=` address
    /// (multicast, RFC 8866 section 5.7) is ignored.
    pub fn parse(bytes: &[u8]) -> Result<Sdp, SdpError> {
        if bytes.len() > MAX_SDP_SIZE {
            return Err(SdpError::TooLarge);
        }
        let text =
            std::str::from_utf8(bytes).map_err(|e| SdpError::Parse(format!("not UTF-8: {e}")))?;
        let session =
            sdp_types::Session::parse(bytes).map_err(|e| SdpError::Parse(e.to_string()))?;
        if session.medias.is_empty() {
            return Err(SdpError::NoMedia);
        }
        if !session
            .medias
            .iter()
            .any(|m| m.media.eq_ignore_ascii_case("audio"))
        {
            return Err(SdpError::NoAudio);
        }

        let session_address = session
            .connection
            .as_ref()
            .map(connection_address)
            .transpose()?;
        let session_direction = direction_of(&session.attributes);
        let medias = session
            .medias
            .iter()
            .enumerate()
            .map(|(index, media)| media_info(index, media, session_address, session_direction))
            .collect::<Result<Vec<_>, _>>()?;

        // The same line split as sdp-types (bstr `lines()`): LF-terminated,
        // one CR before the LF stripped, empty lines ignored. sdp-types has
        // rejected any other CR, so every kept line is "<key>=<value>".
        let lines = text
            .split('\n')
            .map(|line| line.strip_suffix('\r').unwrap_or(line))
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect();

        Ok(Sdp {
            session,
            lines,
            session_address,
            medias,
        })
    }

    /// Describes every `m=` line, in order (never empty).
    pub fn medias(&self) -> Vec<MediaInfo> {
        self.medias.clone()
    }

    /// Address of the session-level `c=` line, if there is one.
    pub fn session_address(&self) -> Option<IpAddr> {
        self.session_address
    }

    /// Produces the relay's version of this SDP according to `plan`, as
    /// CRLF-terminated bytes. See [`RewritePlan`] for what is changed;
    /// everything else is kept byte for byte and in order.
    ///
    /// Errors: [`SdpError::InvalidPlan`] if the plan has more entries than
    /// there are `m=` lines or gives port 0 for a relayed stream.
    pub fn rewrite(&self, plan: &RewritePlan) -> Result<Vec<u8>, SdpError> {
        rewrite::rewrite(self, plan)
    }
}

/// Whether an attribute name is `name`, ignoring ASCII case.
fn is_attribute(attribute: &sdp_types::Attribute, name: &str) -> bool {
    attribute.attribute.eq_ignore_ascii_case(name)
}

/// The first direction attribute among `attributes`, if any.
fn direction_of(attributes: &[sdp_types::Attribute]) -> Option<Direction> {
    attributes
        .iter()
        .find_map(|a| Direction::from_attribute(&a.attribute))
}

/// Parses an IP address literal, ignoring a `/ttl` or `/count` suffix.
fn parse_ip(address: &str) -> Option<IpAddr> {
    let ip = address.split_once('/').map_or(address, |(ip, _)| ip);
    ip.parse().ok()
}

/// The IP address of a `c=` line, or [`SdpError::BadAddress`].
fn connection_address(connection: &sdp_types::Connection) -> Result<IpAddr, SdpError> {
    let bad = || {
        SdpError::BadAddress(format!(
            "c={} {} {}",
            connection.nettype.as_str(),
            connection.addrtype.as_str(),
            connection.connection_address
        ))
    };
    if connection.nettype != sdp_types::NetType::In
        || matches!(connection.addrtype, sdp_types::AddrType::Other(_))
    {
        return Err(bad());
    }
    parse_ip(&connection.connection_address).ok_or_else(bad)
}

/// Parses an `a=rtcp` value (RFC 3605): `PORT [IN IP4|IP6 ADDRESS]`.
pub(crate) fn parse_rtcp(value: Option<&str>) -> Result<(u16, Option<IpAddr>), SdpError> {
    let value = value.unwrap_or("");
    let malformed = || SdpError::Parse(format!("malformed a=rtcp:{value}"));
    let tokens: Vec<&str> = value.split_whitespace().collect();
    let (port, address) = match tokens.as_slice() {
        [port] => (*port, None),
        [port, nettype, addrtype, address] => (*port, Some((*nettype, *addrtype, *address))),
        _ => return Err(malformed()),
    };
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    let port = port.parse::<u16>().map_err(|_| malformed())?;
    let address = match address {
        None => None,
        Some((nettype, addrtype, address)) => {
            let bad = || SdpError::BadAddress(format!("a=rtcp:{value}"));
            if !nettype.eq_ignore_ascii_case("IN")
                || !(addrtype.eq_ignore_ascii_case("IP4") || addrtype.eq_ignore_ascii_case("IP6"))
            {
                return Err(bad());
            }
            Some(parse_ip(address).ok_or_else(bad)?)
        }
    };
    Ok((port, address))
}

/// Builds (and validates) the [`MediaInfo`] of one media description.
fn media_info(
    index: usize,
    media: &sdp_types::Media,
    session_address: Option<IpAddr>,
    session_direction: Option<Direction>,
) -> Result<MediaInfo, SdpError> {
    let mut media_address = None;
    for connection in &media.connections {
        let address = connection_address(connection)?;
        media_address.get_or_insert(address);
    }

    let mut rtcp = None;
    for attribute in media.attributes.iter().filter(|a| is_attribute(a, "rtcp")) {
        let parsed = parse_rtcp(attribute.value.as_deref())?;
        rtcp.get_or_insert(parsed);
    }

    let rtpmaps: Vec<Codec> = media
        .attributes
        .iter()
        .filter(|a| is_attribute(a, "rtpmap"))
        .filter_map(|a| a.value.as_deref().and_then(codec::parse_rtpmap))
        .collect();
    let formats: Vec<String> = media.fmt.split_whitespace().map(str::to_owned).collect();
    let codecs = formats
        .iter()
        .filter_map(|f| codec::codec_for_format(f, &rtpmaps))
        .collect();

    let proto = media.proto.clone();
    let is_udp = {
        let upper = proto.to_ascii_uppercase();
        upper.starts_with("RTP/") || upper.starts_with("UDP/") || upper == "UDPTL"
    };

    Ok(MediaInfo {
        index,
        kind: media.media.clone(),
        port: media.port,
        proto,
        formats,
        address: media_address.or(session_address),
        rtcp_port: rtcp.map(|(port, _)| port),
        rtcp_address: rtcp.and_then(|(_, address)| address),
        rtcp_mux: media.attributes.iter().any(|a| is_attribute(a, "rtcp-mux")),
        direction: direction_of(&media.attributes)
            .or(session_direction)
            .unwrap_or_default(),
        codecs,
        is_udp,
    })
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
