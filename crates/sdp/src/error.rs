//! Typed errors of SDP parsing, validation and rewriting.

use thiserror::Error;

use crate::MAX_SDP_SIZE;

/// Why an SDP body was refused by [`Sdp::parse`](crate::Sdp::parse) or a
/// plan by [`Sdp::rewrite`](crate::Sdp::rewrite).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SdpError {
    /// The body is not a syntactically valid SDP: not UTF-8, a line the SDP
    /// grammar does not allow, or a malformed `a=rtcp` attribute; the text
    /// says what and where.
    #[error("malformed SDP: {0}")]
    Parse(String),
    /// The SDP has no media description (`m=` line) at all.
    #[error("SDP has no media description (m= line)")]
    NoMedia,
    /// The SDP has media descriptions, but none of them is `m=audio`.
    #[error("SDP has no audio media description")]
    NoAudio,
    /// A `c=` line or an `a=rtcp` attribute carries something that is not an
    /// `IN IP4`/`IN IP6` IP address literal (host names are refused too); the
    /// text is the offending value.
    #[error("bad connection address: {0}")]
    BadAddress(String),
    /// The body is larger than [`MAX_SDP_SIZE`] bytes.
    #[error("SDP larger than {MAX_SDP_SIZE} bytes")]
    TooLarge,
    /// The rewrite plan does not fit this SDP (more entries than `m=` lines,
    /// or port 0 for a relayed stream); the text says which.
    #[error("rewrite plan does not fit the SDP: {0}")]
    InvalidPlan(String),
}
