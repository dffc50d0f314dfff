//! Line-based rewriting of a parsed SDP according to a [`RewritePlan`].
//!
//! The original lines are edited in place (see the crate documentation for
//! why `sdp_types::Session::write` is not used): only the lines the plan
//! targets are regenerated, all other lines are copied verbatim.

use std::net::IpAddr;

use crate::{Sdp, SdpError};

/// ICE attributes (RFC 8839, RFC 8840) dropped by
/// [`RewritePlan::remove_ice`].
const ICE_ATTRIBUTES: &[&str] = &[
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "ice-mismatch",
    "ice-pacing",
    "candidate",
    "remote-candidates",
    "end-of-candidates",
];

/// How [`Sdp::rewrite`] should turn an SDP into the relay's version.
///
/// What is changed:
/// - the session-level `c=` line (if present) gets `IN IP4|IP6 <address>`;
/// - for each relayed stream (`Some` in [`medias`](Self::medias)): the `m=`
///   port becomes [`MediaPorts::rtp`] (a `/<number of ports>` suffix is
///   kept); its media-level `c=` line gets the relay address (further `c=`
///   lines of layered multicast are dropped), and if it has none and there is no session-level `c=` either, one media-level `c=` is
///   added after the `m=` (and `i=`) line; each `a=rtcp` becomes
///   `a=rtcp:<rtcp>`, followed by `IN IP4|IP6 <address>` if the original
///   carried an address. `a=rtcp` is never added, `a=rtcp-mux` is kept;
/// - for a stream left as is (`None`) that is active (port ≠ 0) and relied
///   on the session-level `c=`, a media-level `c=` with the *original*
///   session-level address is added, so that it still points where it did
///   before the session-level `c=` was replaced;
/// - `o=` and ICE attributes as the flags below say.
///
/// Everything else stays byte for byte and in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewritePlan {
    /// The relay's media address to advertise.
    pub address: IpAddr,
    /// Per `m=` line, by index: `Some` relays that stream through these
    /// ports, `None` leaves it as it is (e.g. a rejected stream with port
    /// 0). Entries missing at the end count as `None`; more entries than
    /// `m=` lines are an error.
    pub medias: Vec<Option<MediaPorts>>,
    /// Replace the unicast address and addrtype of the `o=` line by
    /// `address` (username, session id and version are kept).
    pub replace_origin: bool,
    /// Drop the ICE attributes at session and media level: `ice-ufrag`,
    /// `ice-pwd`, `ice-options`, `ice-lite`, `ice-mismatch`, `ice-pacing`,
    /// `candidate`, `remote-candidates`, `end-of-candidates`.
    pub remove_ice: bool,
}

/// The relay ports one stream is relayed through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MediaPorts {
    /// Port written into the `m=` line; must not be 0.
    pub rtp: u16,
    /// Port written into an existing `a=rtcp` attribute; must not be 0 if
    /// the stream has one.
    pub rtcp: u16,
}

/// `"IP4"` or `"IP6"` for an address.
fn addrtype(address: IpAddr) -> &'static str {
    match address {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

/// The value of a `<key>=<value>` line if its key is `key`.
fn value_of(line: &str, key: char) -> Option<&str> {
    line.strip_prefix(key)?.strip_prefix('=')
}

/// Name and (optional) value of an `a=` line, split at the first `:` as
/// sdp-types does.
fn attribute_of(line: &str) -> Option<(&str, Option<&str>)> {
    let value = value_of(line, 'a')?;
    Some(match value.split_once(':') {
        Some((name, value)) => (name, Some(value)),
        None => (value, None),
    })
}

/// Whether `line` is an ICE attribute.
fn is_ice_attribute(line: &str) -> bool {
    attribute_of(line).is_some_and(|(name, _)| {
        ICE_ATTRIBUTES
            .iter()
            .any(|ice| ice.eq_ignore_ascii_case(name))
    })
}

/// `o=` with a new unicast address; `None` if the line is not a well-formed
/// `o=` line (cannot happen after a successful parse).
fn rewrite_origin(line: &str, address: IpAddr) -> Option<String> {
    let fields: Vec<&str> = value_of(line, 'o')?
        .split(' ')
        .filter(|f| !f.is_empty())
        .collect();
    let [username, sess_id, sess_version, nettype, _, _] = fields.as_slice() else {
        return None;
    };
    Some(format!(
        "o={username} {sess_id} {sess_version} {nettype} {} {address}",
        addrtype(address)
    ))
}

/// `m=` with a new port, keeping `/<number of ports>`, proto and formats
/// verbatim; `None` if the line is not a well-formed `m=` line.
fn rewrite_media_line(line: &str, rtp: u16) -> Option<String> {
    let mut fields = value_of(line, 'm')?.splitn(4, ' ');
    let (kind, port, proto, fmt) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let num_ports = port.find('/').map_or("", |slash| &port[slash..]);
    Some(format!("m={kind} {rtp}{num_ports} {proto} {fmt}"))
}

/// `a=rtcp` with the relay's port, and its address if the original had one.
fn rewrite_rtcp(name: &str, value: Option<&str>, rtcp: u16, address: IpAddr) -> String {
    let has_address = value.is_some_and(|v| v.split_whitespace().count() > 1);
    if has_address {
        format!("a={name}:{rtcp} IN {} {address}", addrtype(address))
    } else {
        format!("a={name}:{rtcp}")
    }
}

/// Implementation of [`Sdp::rewrite`].
pub(crate) fn rewrite(sdp: &Sdp, plan: &RewritePlan) -> Result<Vec<u8>, SdpError> {
    if plan.medias.len() > sdp.medias.len() {
        return Err(SdpError::InvalidPlan(format!(
            "{} entries for {} m= lines",
            plan.medias.len(),
            sdp.medias.len()
        )));
    }
    for (index, (ports, media)) in plan.medias.iter().zip(&sdp.medias).enumerate() {
        let Some(ports) = ports else { continue };
        if ports.rtp == 0 {
            return Err(SdpError::InvalidPlan(format!(
                "RTP port 0 for relayed m= line {index}"
            )));
        }
        if ports.rtcp == 0 && media.rtcp_port.is_some() {
            return Err(SdpError::InvalidPlan(format!(
                "RTCP port 0 for m= line {index}, which has a=rtcp"
            )));
        }
    }

    let address = plan.address;
    let relay_connection = format!("c=IN {} {address}", addrtype(address));
    let first_media = sdp
        .lines
        .iter()
        .position(|l| value_of(l, 'm').is_some())
        .unwrap_or(sdp.lines.len());
    let (session_lines, media_lines) = sdp.lines.split_at(first_media);
    let original_session_connection = if sdp.session.connection.is_some() {
        session_lines.iter().find(|l| value_of(l, 'c').is_some())
    } else {
        None
    };

    let mut out: Vec<String> = Vec::with_capacity(sdp.lines.len() + sdp.medias.len());

    for line in session_lines {
        if value_of(line, 'c').is_some() {
            out.push(relay_connection.clone());
        } else if plan.replace_origin && value_of(line, 'o').is_some() {
            out.push(rewrite_origin(line, address).unwrap_or_else(|| line.clone()));
        } else if !(plan.remove_ice && is_ice_attribute(line)) {
            out.push(line.clone());
        }
    }

    // Split the media part into sections, each starting with its m= line.
    let mut sections: Vec<&[String]> = Vec::with_capacity(sdp.medias.len());
    let mut rest = media_lines;
    while let Some((_, tail)) = rest.split_first() {
        let len = 1 + tail
            .iter()
            .position(|l| value_of(l, 'm').is_some())
            .unwrap_or(tail.len());
        let (section, tail) = rest.split_at(len);
        sections.push(section);
        rest = tail;
    }

    for (index, section) in sections.into_iter().enumerate() {
        let ports = plan.medias.get(index).copied().flatten();
        let port = sdp.medias.get(index).map_or(0, |m| m.port);
        let has_connection = section.iter().any(|l| value_of(l, 'c').is_some());
        let mut pending_connection = match (has_connection, ports) {
            (true, _) => None,
            (false, Some(_)) if original_session_connection.is_none() => {
                Some(relay_connection.clone())
            }
            (false, Some(_)) => None,
            (false, None) if port != 0 => original_session_connection.cloned(),
            (false, None) => None,
        };

        let Some((media_line, attributes)) = section.split_first() else {
            continue;
        };
        out.push(match ports {
            Some(ports) => {
                rewrite_media_line(media_line, ports.rtp).unwrap_or_else(|| media_line.clone())
            }
            None => media_line.clone(),
        });

        let mut connection_written = false;
        for line in attributes {
            if value_of(line, 'i').is_none() {
                if let Some(connection) = pending_connection.take() {
                    out.push(connection);
                }
            }
            if plan.remove_ice && is_ice_attribute(line) {
                continue;
            }
            let Some(ports) = ports else {
                out.push(line.clone());
                continue;
            };
            if value_of(line, 'c').is_some() {
                // Several c= lines (layered multicast) collapse into one.
                if !connection_written {
                    out.push(relay_connection.clone());
                    connection_written = true;
                }
                continue;
            }
            match attribute_of(line) {
                Some((name, value)) if name.eq_ignore_ascii_case("rtcp") => {
                    out.push(rewrite_rtcp(name, value, ports.rtcp, address));
                }
                _ => out.push(line.clone()),
            }
        }
        if let Some(connection) = pending_connection.take() {
            out.push(connection);
        }
    }

    let mut bytes = Vec::with_capacity(out.iter().map(|l| l.len() + 2).sum());
    for line in &out {
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
    }
    Ok(bytes)
}
