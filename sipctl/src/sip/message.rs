//! SIP messages (RFC 3261 §7, §20, §25): parsing, typed header accessors and builders.
//!
//! # Why our own parser
//! `rsip` 0.4 fails on compact header names (`v:`, `i:`, `f:` …) and `tel:` URIs and has been
//! unmaintained since 2022. `rsipstack` 0.7.14 carries a fixed parser, but only as part of a full
//! async SIP stack: even with `default-features = false` it pulls `async-trait`, `futures`,
//! `md-5`, `sha2`, `base64`, `bytes` and `tracing`, and its parser is lax where a server must be
//! strict (an unparsable `Content-Length` becomes 0, lines without a colon vanish silently). We
//! need strict errors that still leave enough to answer `400`, a size limit, and header values
//! kept byte-exact so a B2BUA can copy them. The grammar we need is small, so it lives here.
//!
//! # Model
//! A [`Message`] is a [`Request`] or a [`Response`]: a start line, an ordered [`Headers`] list
//! that keeps every value as received (names compared case-insensitively and compact forms
//! expanded, RFC 3261 §7.3.1/§7.3.3) and the body bytes. Typed views ([`Via`], [`NameAddr`],
//! [`CSeq`], [`Uri`]) are parsed on demand through the [`HeaderAccess`] trait. Building goes the
//! other way: push header values (typed values implement `Display`) and call `to_bytes()`, which
//! always writes a correct `Content-Length`.
//!
//! Nothing here panics on network input: every fallible step returns [`ParseError`]. Text is
//! cut only at ASCII delimiters (found with `find`/`split_once`, or through `get`), never at a
//! computed byte index, so no input can put a slice inside a UTF-8 character; the size limit
//! ([`MAX_MESSAGE_SIZE`]) and [`MAX_HEADERS`] bound the work and allocation per message.
//!
//! Strictness follows RFC 4475 (the torture tests, `sipctl/tests/rfc4475/`): empty parameters,
//! empty Via list elements, repeated single-value headers, extra whitespace in the request
//! line, headers in a Request-URI and malformed Contacts of requests are refused; unknown
//! methods and schemes, RFC 2543 syntax, and odd but legal characters are accepted.

use std::fmt;

/// Largest message [`Message::parse`] accepts, in bytes (headers and body together).
///
/// 64 KiB is the largest UDP datagram; over TCP the framer applies the same bound.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// Most header lines (after unfolding) a message may carry; bounds per-message work.
pub const MAX_HEADERS: usize = 256;

/// The magic cookie that starts every RFC 3261 branch parameter (RFC 3261 §8.1.1.7).
pub const BRANCH_MAGIC_COOKIE: &str = "z9hG4bK";

/// Why a message could not be parsed or is not a valid SIP message.
///
/// Display texts never contain input bytes, so they are safe in a reason phrase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The message is larger than the configured limit.
    #[error("message of {len} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Size of the input.
        len: usize,
        /// The limit that applied.
        limit: usize,
    },
    /// No empty line ends the header section.
    #[error("no empty line after the headers")]
    MissingHeaderEnd,
    /// The header section is not UTF-8.
    #[error("header section is not UTF-8")]
    NotUtf8,
    /// The request line or status line is malformed.
    #[error("malformed start line")]
    BadStartLine,
    /// A well-formed request line names a SIP version other than 2.0 (answer 505,
    /// RFC 3261 §8.2.2 / RFC 4475 §3.1.2.16).
    #[error("unsupported SIP version")]
    VersionNotSupported,
    /// The Request-URI of the request line cannot be parsed.
    #[error("malformed Request-URI")]
    BadRequestUri,
    /// A header line has no colon or an invalid name (1-based line number).
    #[error("malformed header line {0}")]
    BadHeaderLine(usize),
    /// More than [`MAX_HEADERS`] header lines.
    #[error("too many header lines")]
    TooManyHeaders,
    /// A mandatory header is missing (RFC 3261 §8.1.1).
    #[error("missing mandatory header {0}")]
    MissingHeader(&'static str),
    /// A header is present but its value cannot be parsed.
    #[error("malformed {0} header")]
    BadHeader(&'static str),
    /// A header that takes a single value appears more than once (RFC 3261 §7.3.1,
    /// RFC 4475 §3.3.8).
    #[error("header {0} appears more than once")]
    DuplicateHeader(&'static str),
    /// The CSeq method of a request differs from its method (RFC 3261 §8.1.1.5).
    #[error("CSeq method differs from the request method")]
    CSeqMismatch,
    /// Content-Length is not a number or appears with different values.
    #[error("malformed Content-Length")]
    BadContentLength,
    /// The body is shorter than Content-Length says (RFC 3261 §18.3).
    #[error("body of {available} bytes is shorter than Content-Length {declared}")]
    BodyTruncated {
        /// Content-Length value.
        declared: usize,
        /// Bytes present after the headers.
        available: usize,
    },
    /// A URI is malformed.
    #[error("malformed URI")]
    BadUri,
}

// ---------------------------------------------------------------------------------------------
// Methods

/// A SIP request method (RFC 3261 §7.1; methods are case-sensitive).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE (RFC 3261).
    Invite,
    /// ACK (RFC 3261).
    Ack,
    /// BYE (RFC 3261).
    Bye,
    /// CANCEL (RFC 3261).
    Cancel,
    /// OPTIONS (RFC 3261).
    Options,
    /// REGISTER (RFC 3261).
    Register,
    /// PRACK (RFC 3262).
    Prack,
    /// UPDATE (RFC 3311).
    Update,
    /// INFO (RFC 6086).
    Info,
    /// SUBSCRIBE (RFC 6665).
    Subscribe,
    /// NOTIFY (RFC 6665).
    Notify,
    /// REFER (RFC 3515).
    Refer,
    /// MESSAGE (RFC 3428).
    Message,
    /// PUBLISH (RFC 3903).
    Publish,
    /// Any other extension method token.
    Other(String),
}

impl Method {
    /// Parses a method token; `None` if `s` is not a valid token.
    pub fn parse(s: &str) -> Option<Method> {
        if s.is_empty() || !s.bytes().all(is_token_byte) {
            return None;
        }
        Some(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "PRACK" => Method::Prack,
            "UPDATE" => Method::Update,
            "INFO" => Method::Info,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Other(other.to_string()),
        })
    }

    /// The method token as sent on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Info => "INFO",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Lexical helpers (RFC 3261 §25.1)

/// RFC 3261 §25.1 `token` characters.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// True if `s` is a non-empty RFC 3261 token.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

/// Splits `s` at every `sep` that is outside double quotes and angle brackets.
///
/// `sep`, the quote, the angle brackets and the backslash are ASCII, so every index this cuts
/// at is a char boundary (UTF-8 continuation bytes are never ASCII); a quoted-pair skips one
/// byte, and the remaining bytes of a multi-byte escaped character match none of them.
/// Byte index of the first `needle` (ASCII) in `s` that is not inside a quoted string.
fn find_outside_quotes(s: &str, needle: u8) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut in_quotes = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_quotes {
            if b == b'\\' {
                i += 1; // quoted-pair: skip the escaped byte
            } else if b == b'"' {
                in_quotes = false;
            }
        } else if b == b'"' {
            in_quotes = true;
        } else if b == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn split_outside_quotes(s: &str, sep: u8) -> Vec<&str> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut in_angle = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_quotes {
            if b == b'\\' {
                i += 1; // quoted-pair: skip the escaped byte
            } else if b == b'"' {
                in_quotes = false;
            }
        } else if b == b'"' {
            in_quotes = true;
        } else if b == b'<' {
            in_angle = true;
        } else if b == b'>' {
            in_angle = false;
        } else if b == sep && !in_angle {
            out.push(s.get(start..i).unwrap_or_default());
            start = i + 1;
        }
        i += 1;
    }
    out.push(s.get(start..).unwrap_or_default());
    out
}

/// Splits a header value holding a comma-separated list (RFC 3261 §7.3.1) into trimmed,
/// non-empty elements.
pub fn split_list(value: &str) -> Vec<&str> {
    split_outside_quotes(value, b',')
        .into_iter()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect()
}

/// Expands a compact header name (RFC 3261 §7.3.3 and the extensions that define one).
fn expand_compact(name: &str) -> &str {
    let &[b] = name.as_bytes() else {
        return name;
    };
    match b.to_ascii_lowercase() {
        b'a' => "Accept-Contact",
        b'b' => "Referred-By",
        b'c' => "Content-Type",
        b'd' => "Request-Disposition",
        b'e' => "Content-Encoding",
        b'f' => "From",
        b'i' => "Call-ID",
        b'j' => "Reject-Contact",
        b'k' => "Supported",
        b'l' => "Content-Length",
        b'm' => "Contact",
        b'n' => "Identity-Info",
        b'o' => "Event",
        b'r' => "Refer-To",
        b's' => "Subject",
        b't' => "To",
        b'u' => "Allow-Events",
        b'v' => "Via",
        b'x' => "Session-Expires",
        b'y' => "Identity",
        _ => name,
    }
}

/// Compares two header names: case-insensitive, compact forms equal to their long forms
/// (RFC 3261 §7.3.1, §7.3.3).
pub fn header_name_eq(a: &str, b: &str) -> bool {
    expand_compact(a).eq_ignore_ascii_case(expand_compact(b))
}

// ---------------------------------------------------------------------------------------------
// Parameters

/// A `;name[=value]` parameter of a URI or header (value kept as received, quotes included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Parameter name.
    pub name: String,
    /// Parameter value, `None` for a flag parameter such as `;lr`.
    pub value: Option<String>,
}

impl Param {
    /// A parameter `name=value` or, with `None`, a flag parameter.
    pub fn new(name: impl Into<String>, value: Option<String>) -> Self {
        Param {
            name: name.into(),
            value,
        }
    }
}

/// Parses the segments of `;a=b;c` (each segment is what follows one `;`). An empty
/// segment (`;;`, a trailing `;`) is an error: the grammar has no empty parameters
/// (RFC 3261 §25.1 `*( SEMI generic-param )`, RFC 4475 §3.1.2.1).
fn parse_params<'a>(segments: impl Iterator<Item = &'a str>) -> Option<Vec<Param>> {
    let mut out = Vec::new();
    for seg in segments {
        let seg = seg.trim();
        let (name, value) = match seg.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().to_string())),
            None => (seg, None),
        };
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '"') {
            return None;
        }
        out.push(Param::new(name, value));
    }
    Some(out)
}

/// Looks a parameter up by case-insensitive name (RFC 3261 §7.3.1).
fn find_param<'a>(params: &'a [Param], name: &str) -> Option<&'a Param> {
    params.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// Sets (replaces or appends) a parameter.
fn set_param(params: &mut Vec<Param>, name: &str, value: Option<String>) {
    if let Some(p) = params
        .iter_mut()
        .find(|p| p.name.eq_ignore_ascii_case(name))
    {
        p.value = value;
    } else {
        params.push(Param::new(name, value));
    }
}

fn write_params(f: &mut fmt::Formatter<'_>, params: &[Param]) -> fmt::Result {
    for p in params {
        match &p.value {
            Some(v) => write!(f, ";{}={}", p.name, v)?,
            None => write!(f, ";{}", p.name)?,
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// URIs

/// A SIP, SIPS or tel URI (RFC 3261 §19.1, RFC 3966); other schemes are kept opaque.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    /// Scheme in lower case: `sip`, `sips`, `tel` or another absolute-URI scheme.
    pub scheme: String,
    /// User part for sip/sips; the telephone number for tel (e.g. `+1-201-555-0123`).
    pub user: Option<String>,
    /// Password after `user:` (deprecated, RFC 3261 §19.1.1), if any.
    pub password: Option<String>,
    /// Host (IPv6 references keep their brackets); empty for tel; the opaque rest for other
    /// schemes.
    pub host: String,
    /// Port, if present.
    pub port: Option<u16>,
    /// URI parameters (`;transport=tcp`, `;lr`, `;phone-context=…`).
    pub params: Vec<Param>,
    /// The raw header part after `?`, if any.
    pub headers: Option<String>,
}

impl Uri {
    /// Parses a URI (surrounding whitespace is trimmed). Whitespace, control characters,
    /// `<`, `>` and `"` inside are rejected; `sip`/`sips` URIs are split into their parts
    /// (RFC 3261 §19.1.1, §25.1), `tel` into number and parameters (RFC 3966), anything else
    /// is kept opaque after the scheme.
    pub fn parse(s: &str) -> Result<Uri, ParseError> {
        let s = s.trim();
        if s.is_empty()
            || s.contains(|c: char| c.is_whitespace() || c.is_control() || "<>\"".contains(c))
        {
            return Err(ParseError::BadUri);
        }
        let (scheme, rest) = s.split_once(':').ok_or(ParseError::BadUri)?;
        let scheme = scheme.to_ascii_lowercase();
        if !scheme
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphabetic)
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return Err(ParseError::BadUri);
        }
        match scheme.as_str() {
            "sip" | "sips" => Self::parse_sip(scheme, rest),
            "tel" => {
                // RFC 3966: telephone-subscriber *( ";" par )
                let mut parts = rest.split(';');
                let number = parts.next().unwrap_or_default();
                if number.is_empty() {
                    return Err(ParseError::BadUri);
                }
                let params = parse_params(parts).ok_or(ParseError::BadUri)?;
                Ok(Uri {
                    scheme,
                    user: Some(number.to_string()),
                    password: None,
                    host: String::new(),
                    port: None,
                    params,
                    headers: None,
                })
            }
            _ => {
                if rest.is_empty() {
                    return Err(ParseError::BadUri);
                }
                Ok(Uri {
                    scheme,
                    user: None,
                    password: None,
                    host: rest.to_string(),
                    port: None,
                    params: Vec::new(),
                    headers: None,
                })
            }
        }
    }

    /// RFC 3261 §25.1 SIP-URI after the scheme: `[userinfo "@"] hostport uri-parameters
    /// [headers]`.
    fn parse_sip(scheme: String, rest: &str) -> Result<Uri, ParseError> {
        // `@` cannot appear unescaped in the user, password, host, parameters or headers, so
        // the first one ends the userinfo. The user part may contain `;`, `?`, `/`, `,`
        // (user-unreserved, e.g. `+1234;npdi@host`, RFC 4475 §3.1.1.2), so the userinfo is cut
        // off before `;` and `?` are looked for.
        let (userinfo, after) = match rest.split_once('@') {
            Some((ui, after)) => (Some(ui), after),
            None => (None, rest),
        };
        let (main, headers) = match after.split_once('?') {
            Some((m, h)) => (m, Some(h.to_string())),
            None => (after, None),
        };
        let (user, password) = match userinfo {
            Some("") => return Err(ParseError::BadUri),
            Some(ui) => match ui.split_once(':') {
                Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
                None => (Some(ui.to_string()), None),
            },
            None => (None, None),
        };
        let mut segs = main.split(';');
        let hostport = segs.next().unwrap_or_default();
        let (host, port) = parse_hostport(hostport).ok_or(ParseError::BadUri)?;
        let params = parse_params(segs).ok_or(ParseError::BadUri)?;
        Ok(Uri {
            scheme,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    /// A `sip:` URI with the given user (optional) and host.
    pub fn sip(user: Option<&str>, host: &str, port: Option<u16>) -> Uri {
        Uri {
            scheme: "sip".into(),
            user: user.map(str::to_string),
            password: None,
            host: host.to_string(),
            port,
            params: Vec::new(),
            headers: None,
        }
    }

    /// True for `tel:` URIs.
    pub fn is_tel(&self) -> bool {
        self.scheme == "tel"
    }

    /// True for `sips:` URIs.
    pub fn is_sips(&self) -> bool {
        self.scheme == "sips"
    }

    /// A URI parameter by case-insensitive name.
    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    /// True if the URI carries the `lr` parameter (loose router, RFC 3261 §19.1.1).
    pub fn is_loose_router(&self) -> bool {
        self.param("lr").is_some()
    }

    /// Sets or replaces a URI parameter.
    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        set_param(&mut self.params, name, value);
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.scheme)?;
        match self.scheme.as_str() {
            "sip" | "sips" => {
                if let Some(u) = &self.user {
                    f.write_str(u)?;
                    if let Some(p) = &self.password {
                        write!(f, ":{p}")?;
                    }
                    f.write_str("@")?;
                }
                f.write_str(&self.host)?;
                if let Some(p) = self.port {
                    write!(f, ":{p}")?;
                }
                write_params(f, &self.params)?;
                if let Some(h) = &self.headers {
                    write!(f, "?{h}")?;
                }
                Ok(())
            }
            "tel" => {
                f.write_str(self.user.as_deref().unwrap_or_default())?;
                write_params(f, &self.params)
            }
            _ => f.write_str(&self.host),
        }
    }
}

/// Parses `host[:port]`, where host may be an `[IPv6]` reference. Host is lower-cased
/// (RFC 3261 §19.1.4: host comparison is case-insensitive).
fn parse_hostport(s: &str) -> Option<(String, Option<u16>)> {
    let s = s.trim();
    let (host, port_str) = if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if inside.is_empty()
            || !inside
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b":.".contains(&b))
        {
            return None;
        }
        let host = s.get(..inside.len() + 2)?;
        if after.is_empty() {
            (host, None)
        } else {
            (host, Some(after.strip_prefix(':')?))
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b))
    {
        return None;
    }
    let port = match port_str {
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(p.parse::<u16>().ok()?)
        }
        None => None,
    };
    Some((host.to_ascii_lowercase(), port))
}

// ---------------------------------------------------------------------------------------------
// name-addr (From, To, Contact, Route, Record-Route)

/// A `name-addr` or `addr-spec` with header parameters (RFC 3261 §20.10, §25.1): the value of
/// From, To, Contact, Route and Record-Route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name without quotes (escapes resolved), if any.
    pub display: Option<String>,
    /// The URI.
    pub uri: Uri,
    /// Header parameters after the URI (`;tag=…`, `;expires=…`).
    pub params: Vec<Param>,
}

impl NameAddr {
    /// A name-addr for `uri` with no display name and no parameters.
    pub fn new(uri: Uri) -> Self {
        NameAddr {
            display: None,
            uri,
            params: Vec::new(),
        }
    }

    /// Parses one name-addr / addr-spec with parameters (RFC 3261 §20.10, §25.1).
    ///
    /// * A quoted display name may contain any quoted-pair. An unquoted one must not contain
    ///   the separators that change the structure of the value (comma, semicolon, quote,
    ///   angle brackets, backslash; RFC 4475 §3.1.2.15) nor control characters; other
    ///   non-token bytes (`@`, non-ASCII) are let through, as deployed UAs send them.
    /// * The URI inside `<>` must not have whitespace around it (`< sip:a@b >` is refused,
    ///   RFC 4475 §3.1.2.14).
    /// * Without `<>`, everything after the first `;` is a header parameter, and a URI
    ///   carrying `?` headers or a `,` is refused: those need `<>` (RFC 3261 §20.10,
    ///   RFC 4475 §3.1.2.13).
    pub fn parse(s: &str) -> Result<NameAddr, ParseError> {
        let s = s.trim();
        let (display, rest) = if let Some(after) = s.strip_prefix('"') {
            // quoted-string display name (RFC 3261 §25.1) with quoted-pair escapes
            let mut name = String::new();
            let mut chars = after.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        let (_, esc) = chars.next().ok_or(ParseError::BadUri)?;
                        name.push(esc);
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => name.push(c),
                }
            }
            let end = end.ok_or(ParseError::BadUri)?;
            // `end` is the index of the closing quote, one byte long.
            let rest = after.get(end + 1..).unwrap_or_default().trim_start();
            if !rest.starts_with('<') {
                return Err(ParseError::BadUri);
            }
            (Some(name), rest)
        } else if let Some(lt) = find_outside_quotes(s, b'<') {
            // `<` is ASCII: `lt` is a char boundary.
            let name = s.get(..lt).unwrap_or_default().trim();
            if name
                .bytes()
                .any(|b| (b.is_ascii_control() && b != b'\t') || b",;\"<>\\".contains(&b))
            {
                return Err(ParseError::BadUri);
            }
            let rest = s.get(lt..).unwrap_or_default();
            ((!name.is_empty()).then(|| name.to_string()), rest)
        } else {
            // addr-spec: everything after the first ';' is a header parameter (RFC 3261 §20.10)
            let mut segs = split_outside_quotes(s, b';').into_iter();
            let uri_text = segs.next().unwrap_or_default();
            if uri_text.contains(['?', ',']) {
                return Err(ParseError::BadUri);
            }
            let uri = Uri::parse(uri_text)?;
            let params = parse_params(segs).ok_or(ParseError::BadUri)?;
            return Ok(NameAddr {
                display: None,
                uri,
                params,
            });
        };
        // rest starts with '<'
        let inner_and_tail = rest.strip_prefix('<').ok_or(ParseError::BadUri)?;
        let (inner, tail) = inner_and_tail.split_once('>').ok_or(ParseError::BadUri)?;
        if inner.is_empty() || inner.trim() != inner {
            return Err(ParseError::BadUri);
        }
        let uri = Uri::parse(inner)?;
        let tail = tail.trim();
        let params = if tail.is_empty() {
            Vec::new()
        } else {
            let after = tail.strip_prefix(';').ok_or(ParseError::BadUri)?;
            parse_params(split_outside_quotes(after, b';').into_iter()).ok_or(ParseError::BadUri)?
        };
        Ok(NameAddr {
            display,
            uri,
            params,
        })
    }

    /// A header parameter by case-insensitive name.
    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    /// The `tag` parameter (RFC 3261 §19.3), if present.
    pub fn tag(&self) -> Option<&str> {
        self.param("tag").and_then(|p| p.value.as_deref())
    }

    /// Sets or replaces the `tag` parameter.
    pub fn set_tag(&mut self, tag: &str) {
        set_param(&mut self.params, "tag", Some(tag.to_string()));
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            f.write_str("\"")?;
            for c in d.chars() {
                if c == '"' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            f.write_str("\" ")?;
        }
        write!(f, "<{}>", self.uri)?;
        write_params(f, &self.params)
    }
}

// ---------------------------------------------------------------------------------------------
// Via

/// One Via value (RFC 3261 §20.42): `SIP/2.0/UDP host:port;branch=…;received=…;rport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Transport token, upper case (`UDP`, `TCP`, `TLS`, …).
    pub transport: String,
    /// sent-by host (lower case; IPv6 with brackets).
    pub host: String,
    /// sent-by port, if present.
    pub port: Option<u16>,
    /// Via parameters in order.
    pub params: Vec<Param>,
}

impl Via {
    /// A Via with the given transport and sent-by, and no parameters.
    pub fn new(transport: &str, host: &str, port: Option<u16>) -> Self {
        Via {
            transport: transport.to_ascii_uppercase(),
            host: host.to_ascii_lowercase(),
            port,
            params: Vec::new(),
        }
    }

    /// Parses one Via value (one element of a Via list): `SIP/2.0/transport sent-by *(;param)`.
    pub fn parse(s: &str) -> Result<Via, ParseError> {
        let bad = ParseError::BadHeader("Via");
        let (name, version, transport, rest) = split_sent_protocol(s).ok_or(bad.clone())?;
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" {
            return Err(bad);
        }
        let mut segs = split_outside_quotes(rest, b';').into_iter();
        let (host, port) = parse_hostport(segs.next().unwrap_or_default()).ok_or(bad.clone())?;
        let params = parse_params(segs).ok_or(bad)?;
        Ok(Via {
            transport: transport.to_ascii_uppercase(),
            host,
            port,
            params,
        })
    }

    /// A Via parameter by case-insensitive name.
    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    /// Sets or replaces a Via parameter.
    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        set_param(&mut self.params, name, value);
    }

    /// The branch parameter (RFC 3261 §8.1.1.7).
    pub fn branch(&self) -> Option<&str> {
        self.param("branch").and_then(|p| p.value.as_deref())
    }

    /// True if the branch starts with the RFC 3261 magic cookie `z9hG4bK`.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.starts_with(BRANCH_MAGIC_COOKIE))
    }

    /// sent-by as `host` or `host:port` (used in transaction matching, RFC 3261 §17.2.3).
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }

    /// The `received` parameter (RFC 3261 §18.2.1).
    pub fn received(&self) -> Option<&str> {
        self.param("received").and_then(|p| p.value.as_deref())
    }

    /// The `rport` parameter (RFC 3581): `None` if absent, `Some(None)` if present without a
    /// value (a request asking for it), `Some(Some(port))` once filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.param("rport")
            .map(|p| p.value.as_deref().and_then(|v| v.parse().ok()))
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.sent_by())?;
        write_params(f, &self.params)
    }
}

/// Splits `sent-protocol` (protocol-name SLASH protocol-version SLASH transport, with optional
/// whitespace around the slashes: SLASH = SWS "/" SWS, RFC 3261 §25.1) off a Via value:
/// `(name, version, transport, rest)`, each a token.
fn split_sent_protocol(s: &str) -> Option<(&str, &str, &str, &str)> {
    let mut rest = s.trim();
    let mut tokens = [""; 3];
    for (i, slot) in tokens.iter_mut().enumerate() {
        // '/' and whitespace: the end is a char boundary (`find` returns one).
        let end = rest
            .find(|c: char| c == '/' || c.is_whitespace())
            .unwrap_or(rest.len());
        let (tok, after) = rest.split_at_checked(end)?;
        if !is_token(tok) {
            return None;
        }
        *slot = tok;
        rest = after.trim_start();
        if i < 2 {
            rest = rest.strip_prefix('/')?.trim_start();
        }
    }
    let [name, version, transport] = tokens;
    Some((name, version, transport, rest))
}

// ---------------------------------------------------------------------------------------------
// CSeq

/// The CSeq header (RFC 3261 §20.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number (less than 2^31, RFC 3261 §8.1.1.5).
    pub seq: u32,
    /// Method.
    pub method: Method,
}

impl CSeq {
    /// Parses `4711 INVITE`.
    pub fn parse(s: &str) -> Result<CSeq, ParseError> {
        let bad = ParseError::BadHeader("CSeq");
        let mut it = s.split_whitespace();
        let num = it.next().ok_or(bad.clone())?;
        let method = it.next().ok_or(bad.clone())?;
        if it.next().is_some() || !num.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad);
        }
        let seq: u32 = num.parse().map_err(|_| bad.clone())?;
        if seq >= 1 << 31 {
            return Err(bad);
        }
        Ok(CSeq {
            seq,
            method: Method::parse(method).ok_or(bad)?,
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

// ---------------------------------------------------------------------------------------------
// Headers

/// One header line: name as received (or as built) and the unfolded, trimmed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name (may be a compact form such as `v`).
    pub name: String,
    /// Header value.
    pub value: String,
}

/// The ordered header list of a message. Lookups compare names case-insensitively and treat
/// compact forms as their long forms (RFC 3261 §7.3.1, §7.3.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    list: Vec<Header>,
}

impl Headers {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// All header lines in order.
    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.list.iter()
    }

    /// Number of header lines.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True if there are no headers.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The value of the first line with this name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.list
            .iter()
            .find(|h| header_name_eq(&h.name, name))
            .map(|h| h.value.as_str())
    }

    /// The values of every line with this name, in order (comma lists not split).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.list
            .iter()
            .filter(move |h| header_name_eq(&h.name, name))
            .map(|h| h.value.as_str())
    }

    /// Every element of a list header (Via, Route, Record-Route, Contact, …) across all its
    /// lines, comma lists split (RFC 3261 §7.3.1).
    pub fn values<'a>(&'a self, name: &'a str) -> Vec<&'a str> {
        self.get_all(name).flat_map(split_list).collect()
    }

    /// True if at least one line has this name.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Appends a header line.
    pub fn push(&mut self, name: impl Into<String>, value: impl fmt::Display) {
        self.list.push(Header {
            name: name.into(),
            value: value.to_string(),
        });
    }

    /// Inserts a header line before all others (e.g. a new top Via).
    pub fn push_front(&mut self, name: impl Into<String>, value: impl fmt::Display) {
        self.list.insert(
            0,
            Header {
                name: name.into(),
                value: value.to_string(),
            },
        );
    }

    /// Inserts a header line before the first line with name `before`, or appends.
    pub fn insert_before(
        &mut self,
        before: &str,
        name: impl Into<String>,
        value: impl fmt::Display,
    ) {
        let h = Header {
            name: name.into(),
            value: value.to_string(),
        };
        match self
            .list
            .iter()
            .position(|x| header_name_eq(&x.name, before))
        {
            Some(i) => self.list.insert(i, h),
            None => self.list.push(h),
        }
    }

    /// Removes every line with this name; returns how many were removed.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.list.len();
        self.list.retain(|h| !header_name_eq(&h.name, name));
        before - self.list.len()
    }

    /// Replaces the first line with this name (keeping its position) and removes the others;
    /// appends if there is none.
    pub fn set(&mut self, name: &str, value: impl fmt::Display) {
        let value = value.to_string();
        match self.list.iter().position(|h| header_name_eq(&h.name, name)) {
            Some(i) => {
                self.list[i].value = value;
                let mut idx = 0;
                self.list.retain(|h| {
                    let keep = idx <= i || !header_name_eq(&h.name, name);
                    idx += 1;
                    keep
                });
            }
            None => self.push(name.to_string(), value),
        }
    }

    /// Removes the first element of a list header (e.g. the top Via, which may share a line
    /// with others) and returns it.
    pub fn pop_first_value(&mut self, name: &str) -> Option<String> {
        let i = self
            .list
            .iter()
            .position(|h| header_name_eq(&h.name, name))?;
        let parts = split_list(&self.list[i].value);
        let first = parts.first().map(|s| s.to_string());
        if parts.len() <= 1 {
            self.list.remove(i);
        } else {
            self.list[i].value = parts[1..].join(", ");
        }
        first
    }

    /// Replaces the first element of a list header (e.g. rewrites the top Via).
    pub fn replace_first_value(&mut self, name: &str, value: impl fmt::Display) -> bool {
        let Some(i) = self.list.iter().position(|h| header_name_eq(&h.name, name)) else {
            return false;
        };
        let parts = split_list(&self.list[i].value);
        let mut out = value.to_string();
        for p in parts.iter().skip(1) {
            out.push_str(", ");
            out.push_str(p);
        }
        self.list[i].value = out;
        true
    }
}

/// Typed access to the headers of a [`Request`], [`Response`] or [`Message`].
///
/// Accessors return `None` when a header is absent or does not parse. A message returned by
/// [`Message::parse`] is guaranteed to have a parsable top Via, From, To, Call-ID and CSeq.
pub trait HeaderAccess {
    /// The header list.
    fn headers(&self) -> &Headers;

    /// All Via values, top first; `Err` if any of them does not parse.
    fn vias(&self) -> Result<Vec<Via>, ParseError> {
        self.headers()
            .values("Via")
            .into_iter()
            .map(Via::parse)
            .collect()
    }

    /// The top Via (RFC 3261 §8.1.1.7).
    fn top_via(&self) -> Option<Via> {
        let v = self.headers().values("Via");
        Via::parse(v.first()?).ok()
    }

    /// The From header.
    #[allow(clippy::wrong_self_convention)] // named after the From header, not a conversion
    fn from_addr(&self) -> Option<NameAddr> {
        NameAddr::parse(self.headers().get("From")?).ok()
    }

    /// The To header.
    fn to_addr(&self) -> Option<NameAddr> {
        NameAddr::parse(self.headers().get("To")?).ok()
    }

    /// The From tag.
    #[allow(clippy::wrong_self_convention)] // named after the From header, not a conversion
    fn from_tag(&self) -> Option<String> {
        self.from_addr()?.tag().map(str::to_string)
    }

    /// The To tag.
    fn to_tag(&self) -> Option<String> {
        self.to_addr()?.tag().map(str::to_string)
    }

    /// The Call-ID.
    fn call_id(&self) -> Option<&str> {
        self.headers().get("Call-ID").filter(|v| !v.is_empty())
    }

    /// The CSeq header.
    fn cseq(&self) -> Option<CSeq> {
        CSeq::parse(self.headers().get("CSeq")?).ok()
    }

    /// Contact values (unparsable ones and `*` are skipped).
    fn contacts(&self) -> Vec<NameAddr> {
        parse_addr_list(self.headers(), "Contact")
    }

    /// The first Contact value.
    fn contact(&self) -> Option<NameAddr> {
        self.contacts().into_iter().next()
    }

    /// Record-Route values in message order (RFC 3261 §20.30).
    fn record_routes(&self) -> Vec<NameAddr> {
        parse_addr_list(self.headers(), "Record-Route")
    }

    /// Route values in message order (RFC 3261 §20.34).
    fn routes(&self) -> Vec<NameAddr> {
        parse_addr_list(self.headers(), "Route")
    }

    /// Max-Forwards (RFC 3261 §20.22).
    fn max_forwards(&self) -> Option<u32> {
        let v = self.headers().get("Max-Forwards")?.trim();
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        v.parse().ok()
    }

    /// Content-Type, as received.
    fn content_type(&self) -> Option<&str> {
        self.headers().get("Content-Type")
    }

    /// Content-Length as a number.
    fn content_length(&self) -> Option<usize> {
        parse_content_length(self.headers().get("Content-Length")?)
    }
}

fn parse_addr_list(headers: &Headers, name: &str) -> Vec<NameAddr> {
    headers
        .values(name)
        .into_iter()
        .filter_map(|v| NameAddr::parse(v).ok())
        .collect()
}

fn parse_content_length(v: &str) -> Option<usize> {
    let v = v.trim();
    if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Request / Response / Message

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method from the request line.
    pub method: Method,
    /// Request-URI.
    pub uri: Uri,
    /// Headers in order.
    pub headers: Headers,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code, 100..=699.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Headers in order.
    pub headers: Headers,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// A parsed SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

impl HeaderAccess for Request {
    fn headers(&self) -> &Headers {
        &self.headers
    }
}

impl HeaderAccess for Response {
    fn headers(&self) -> &Headers {
        &self.headers
    }
}

impl HeaderAccess for Message {
    fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }
}

/// Writes headers (without any Content-Length), a computed Content-Length and the body.
fn write_common(out: &mut Vec<u8>, headers: &Headers, body: &[u8]) {
    for h in headers.iter() {
        if header_name_eq(&h.name, "Content-Length") {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // RFC 3261 §20.14: Content-Length is the body size in octets; always written (§18.3).
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
}

impl Request {
    /// A request with no headers and no body.
    pub fn new(method: Method, uri: Uri) -> Self {
        Request {
            method,
            uri,
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// Sets the body and its Content-Type.
    pub fn set_body(&mut self, content_type: &str, body: Vec<u8>) {
        self.headers.set("Content-Type", content_type);
        self.body = body;
    }

    /// Serializes the request; Content-Length is always computed from the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        out.extend_from_slice(format!("{} {} SIP/2.0\r\n", self.method, self.uri).as_bytes());
        write_common(&mut out, &self.headers, &self.body);
        out
    }

    /// Builds the CANCEL for this (INVITE) request (RFC 3261 §9.1): same Request-URI,
    /// Call-ID, From, To, CSeq number and a single Via equal to the top Via (so it matches
    /// the same server transaction branch); Route headers copied; CSeq method CANCEL.
    pub fn cancel(&self) -> Request {
        let mut c = Request::new(Method::Cancel, self.uri.clone());
        if let Some(v) = self.headers.values("Via").first() {
            c.headers.push("Via", v);
        }
        c.headers.push("Max-Forwards", 70);
        for name in ["From", "To", "Call-ID"] {
            if let Some(v) = self.headers.get(name) {
                c.headers.push(name, v);
            }
        }
        if let Some(cs) = self.cseq() {
            c.headers.push(
                "CSeq",
                CSeq {
                    seq: cs.seq,
                    method: Method::Cancel,
                },
            );
        }
        for r in self.headers.get_all("Route") {
            c.headers.push("Route", r);
        }
        c
    }
}

impl Response {
    /// A response with no headers and no body.
    pub fn new(status: u16, reason: &str) -> Self {
        Response {
            status,
            reason: reason.to_string(),
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// Builds a response to `req` (RFC 3261 §8.2.6.2): Via lines (all, in order), From,
    /// To, Call-ID and CSeq copied verbatim; for 100 also Timestamp (§8.2.6.1). The To tag is
    /// not added: call [`Response::set_to_tag`] for responses that create a dialog.
    pub fn for_request(req: &Request, status: u16, reason: &str) -> Response {
        response_from_headers(&req.headers, status, reason)
    }

    /// Adds `;tag=` to the To header if it has none (RFC 3261 §8.2.6.2); keeps the rest of
    /// the value byte-exact.
    pub fn set_to_tag(&mut self, tag: &str) {
        if self.to_tag().is_some() {
            return;
        }
        if let Some(v) = self.headers.get("To") {
            let v = format!("{v};tag={tag}");
            self.headers.set("To", v);
        }
    }

    /// Sets the body and its Content-Type.
    pub fn set_body(&mut self, content_type: &str, body: Vec<u8>) {
        self.headers.set("Content-Type", content_type);
        self.body = body;
    }

    /// 1xx.
    pub fn is_provisional(&self) -> bool {
        self.status < 200
    }

    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// 200..=699.
    pub fn is_final(&self) -> bool {
        self.status >= 200
    }

    /// Serializes the response; Content-Length is always computed from the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        out.extend_from_slice(format!("SIP/2.0 {} {}\r\n", self.status, self.reason).as_bytes());
        write_common(&mut out, &self.headers, &self.body);
        out
    }
}

fn response_from_headers(headers: &Headers, status: u16, reason: &str) -> Response {
    let mut r = Response::new(status, reason);
    for h in headers.iter() {
        let copy = ["Via", "From", "To", "Call-ID", "CSeq"]
            .iter()
            .any(|n| header_name_eq(&h.name, n))
            || (status == 100 && header_name_eq(&h.name, "Timestamp"));
        if copy {
            r.headers
                .push(expand_compact(&h.name).to_string(), &h.value);
        }
    }
    r
}

impl Message {
    /// Parses a whole message (one UDP datagram or one framed TCP message) with the default
    /// [`MAX_MESSAGE_SIZE`] limit, and checks the mandatory headers.
    pub fn parse(data: &[u8]) -> Result<Message, ParseError> {
        Self::parse_with_limit(data, MAX_MESSAGE_SIZE)
    }

    /// Like [`Message::parse`] with an explicit size limit.
    pub fn parse_with_limit(data: &[u8], limit: usize) -> Result<Message, ParseError> {
        if data.len() > limit {
            return Err(ParseError::TooLarge {
                len: data.len(),
                limit,
            });
        }
        let raw = parse_raw(data)?;
        let (start, headers, body) = raw.into_parts(true)?;
        validate(&start, &headers)?;
        Ok(match start {
            StartLine::Request { method, uri } => Message::Request(Request {
                method,
                uri,
                headers,
                body,
            }),
            StartLine::Response { status, reason } => Message::Response(Response {
                status,
                reason,
                headers,
                body,
            }),
        })
    }

    /// Serializes the message.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }

    /// The request, if this is one.
    pub fn as_request(&self) -> Option<&Request> {
        match self {
            Message::Request(r) => Some(r),
            Message::Response(_) => None,
        }
    }

    /// The response, if this is one.
    pub fn as_response(&self) -> Option<&Response> {
        match self {
            Message::Response(r) => Some(r),
            Message::Request(_) => None,
        }
    }
}

/// Parses one UDP datagram or one framed TCP message into a [`Request`] or [`Response`] with
/// the default [`MAX_MESSAGE_SIZE`] limit, checking the mandatory headers; the same as
/// [`Message::parse`]. Total on every input: it returns an error, never panics, and its work
/// and allocations are bounded by the input size.
pub fn parse(data: &[u8]) -> Result<Message, ParseError> {
    Message::parse(data)
}

/// When [`Message::parse`] rejected `data` with `err`, builds the error response to send back
/// statelessly to the packet's source, if one is possible and allowed:
///
/// * `505 Version Not Supported` for a well-formed request line of another SIP version
///   (RFC 3261 §8.2.2, RFC 4475 §3.1.2.16);
/// * `501 Not Implemented` for an unknown method whose CSeq names another method (RFC 4475
///   §3.1.2.18 prefers it to 400; the caller adds `Allow`);
/// * `513 Message Too Large` for a stream message whose header section was read but whose
///   declared size exceeds the limit ([`StreamFramer::rejected_head`](super::StreamFramer::rejected_head));
/// * `400 Bad Request` (the reason phrase says why) for everything else.
///
/// The input must be a request other than ACK (RFC 3261 §17.1.1.3: ACK is never answered)
/// with a top Via that has a `SIP/version/transport sent-by` shape and a CSeq; From, To and Call-ID are
/// copied when present (RFC 4475 §3.3.1 wants a 400 even without them). RFC 3261 §8.2.2,
/// §16.3, §18.3.
///
/// Returns `None` for responses (RFC 3261 §18.3: malformed responses are discarded),
/// input over [`MAX_MESSAGE_SIZE`] (a truncated datagram) and anything too broken to address
/// a reply to. Total on every input.
pub fn bad_request_response(data: &[u8], err: &ParseError) -> Option<Response> {
    if data.len() > MAX_MESSAGE_SIZE {
        return None;
    }
    // Parse only the start line's method and the header section; the rest may be broken.
    let raw = parse_raw_lenient(data)?;
    let method = raw.start_line.split(' ').next()?;
    if method
        .as_bytes()
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
        || method == "ACK"
        || !is_token(method)
    {
        return None;
    }
    let h = &raw.headers;
    // The reply goes to the packet's source; the top Via only has to look like one (its
    // parameters may be what is wrong, RFC 4475 §3.1.2.1, and a SIP/7.0 request's Via says
    // SIP/7.0, §3.1.2.16).
    let top = *h.values("Via").first()?;
    let (protocol, _, _, sent_by) = split_sent_protocol(top)?;
    if !protocol.eq_ignore_ascii_case("SIP") || sent_by.is_empty() {
        return None;
    }
    if !h.contains("CSeq") {
        return None;
    }
    let (status, reason) = match err {
        ParseError::VersionNotSupported => (505, reason_phrase(505).to_owned()),
        ParseError::CSeqMismatch if matches!(Method::parse(method), Some(Method::Other(_))) => {
            (501, reason_phrase(501).to_owned())
        }
        ParseError::TooLarge { .. } => (513, reason_phrase(513).to_owned()),
        e => (400, format!("Bad Request ({e})")),
    };
    let mut resp = response_from_headers(h, status, &reason);
    if resp
        .headers
        .get("To")
        .is_some_and(|to| NameAddr::parse(to).is_ok())
    {
        let tag = stateless_tag(&resp);
        resp.set_to_tag(&tag);
    }
    Some(resp)
}

// ---------------------------------------------------------------------------------------------
// Parsing internals

enum StartLine {
    Request { method: Method, uri: Uri },
    Response { status: u16, reason: String },
}

struct RawMessage<'a> {
    start_line: &'a str,
    headers: Headers,
    body: &'a [u8],
}

impl RawMessage<'_> {
    /// Parses the start line and applies Content-Length to the body.
    fn into_parts(self, strict_body: bool) -> Result<(StartLine, Headers, Vec<u8>), ParseError> {
        let start = parse_start_line(self.start_line)?;
        // RFC 3261 §18.3: Content-Length gives the body size; extra bytes after it in a
        // datagram are discarded; a shorter body is an error.
        let mut declared: Option<usize> = None;
        for v in self.headers.get_all("Content-Length") {
            let n = parse_content_length(v).ok_or(ParseError::BadContentLength)?;
            if declared.is_some_and(|d| d != n) {
                return Err(ParseError::BadContentLength);
            }
            declared = Some(n);
        }
        let body = match declared {
            None => self.body,
            Some(n) => match self.body.get(..n) {
                Some(b) => b,
                None if strict_body => {
                    return Err(ParseError::BodyTruncated {
                        declared: n,
                        available: self.body.len(),
                    })
                }
                None => self.body,
            },
        };
        Ok((start, self.headers, body.to_vec()))
    }
}

/// Finds the end of the header section: returns (header_end, body_start). Accepts CRLF and,
/// leniently, bare LF line ends.
pub(crate) fn find_header_end(data: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(&b) = data.get(i) {
        if b == b'\n' {
            match (data.get(i + 1), data.get(i + 2)) {
                (Some(b'\n'), _) => return Some((i, i + 2)),
                (Some(b'\r'), Some(b'\n')) => return Some((i, i + 3)),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

/// Number of leading CR/LF bytes (RFC 3261 §7.5: ignore empty lines before the start line).
pub(crate) fn leading_crlf(data: &[u8]) -> usize {
    data.iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count()
}

/// Splits a header section (start line first) into the start line and the headers.
/// Strict: a malformed line is an error. Lenient (to address an error response): malformed
/// lines and lines past [`MAX_HEADERS`] are skipped.
fn parse_section(section: &str, lenient: bool) -> Result<(&str, Headers), ParseError> {
    let mut lines = section
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start_line = lines.next().ok_or(ParseError::BadStartLine)?;
    let mut headers = Headers::new();
    let mut skipping = false;
    for (idx, line) in lines.enumerate() {
        let lineno = idx + 2;
        if line.starts_with([' ', '\t']) {
            // RFC 3261 §7.3.1: a line starting with whitespace continues the previous value;
            // the fold is replaced by a single SP.
            if skipping {
                continue;
            }
            let Some(last) = headers.list.last_mut() else {
                if lenient {
                    continue;
                }
                return Err(ParseError::BadHeaderLine(lineno));
            };
            let cont = line.trim();
            if !cont.is_empty() {
                if !last.value.is_empty() {
                    last.value.push(' ');
                }
                last.value.push_str(cont);
            }
            continue;
        }
        // RFC 3261 §7.3.1: whitespace is allowed on either side of the colon.
        let parsed = line
            .split_once(':')
            .map(|(name, value)| (name.trim(), value.trim()))
            .filter(|(name, _)| is_token(name));
        let Some((name, value)) = parsed else {
            if lenient {
                skipping = true;
                continue;
            }
            return Err(ParseError::BadHeaderLine(lineno));
        };
        if headers.len() >= MAX_HEADERS {
            if lenient {
                break;
            }
            return Err(ParseError::TooManyHeaders);
        }
        skipping = false;
        headers.push(name.to_string(), value);
    }
    Ok((start_line, headers))
}

fn parse_raw(data: &[u8]) -> Result<RawMessage<'_>, ParseError> {
    let data = data.get(leading_crlf(data)..).unwrap_or_default();
    let (hend, bstart) = find_header_end(data).ok_or(ParseError::MissingHeaderEnd)?;
    let section = data.get(..hend).unwrap_or_default();
    let section = std::str::from_utf8(section).map_err(|_| ParseError::NotUtf8)?;
    let (start_line, headers) = parse_section(section, false)?;
    Ok(RawMessage {
        start_line,
        headers,
        body: data.get(bstart..).unwrap_or_default(),
    })
}

/// Start line and header section only, for addressing an error response: tolerates a missing
/// empty line (the whole input is headers then) and skips malformed header lines. The body
/// is left empty.
fn parse_raw_lenient(data: &[u8]) -> Option<RawMessage<'_>> {
    let data = data.get(leading_crlf(data)..).unwrap_or_default();
    let section = match find_header_end(data) {
        Some((hend, _)) => data.get(..hend).unwrap_or_default(),
        None => {
            // A bare trailing line end is not part of the last header.
            let end = data.len()
                - data
                    .iter()
                    .rev()
                    .take_while(|b| **b == b'\r' || **b == b'\n')
                    .count();
            data.get(..end).unwrap_or_default()
        }
    };
    let section = std::str::from_utf8(section).ok()?;
    let (start_line, headers) = parse_section(section, true).ok()?;
    Some(RawMessage {
        start_line,
        headers,
        body: &[],
    })
}

/// Parses a request line or status line (RFC 3261 §7.1, §7.2). Works on bytes for every
/// comparison, so no input can put a slice off a char boundary.
fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    if line
        .as_bytes()
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase (RFC 3261 §7.2); a
        // missing SP before an empty reason is tolerated.
        let mut it = line.splitn(3, ' ');
        let version = it.next().unwrap_or_default();
        let code = it.next().ok_or(ParseError::BadStartLine)?;
        let reason = it.next().unwrap_or_default();
        if !version.eq_ignore_ascii_case("SIP/2.0")
            || code.len() != 3
            || !code.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(ParseError::BadStartLine);
        }
        let status: u16 = code.parse().map_err(|_| ParseError::BadStartLine)?;
        if !(100..=699).contains(&status) {
            return Err(ParseError::BadStartLine);
        }
        Ok(StartLine::Response {
            status,
            reason: reason.trim().to_string(),
        })
    } else {
        // Request-Line = Method SP Request-URI SP SIP-Version CRLF (RFC 3261 §7.1): exactly
        // one SP between the elements and none at the end (RFC 4475 §3.1.2.8-10 allow
        // refusing extra whitespace; we do, with 400).
        let mut parts = line.split(' ');
        let (Some(method), Some(uri), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ParseError::BadStartLine);
        };
        if !version.eq_ignore_ascii_case("SIP/2.0") {
            return Err(if is_sip_version(version) {
                ParseError::VersionNotSupported
            } else {
                ParseError::BadStartLine
            });
        }
        let method = Method::parse(method).ok_or(ParseError::BadStartLine)?;
        let uri = Uri::parse(uri).map_err(|_| ParseError::BadRequestUri)?;
        // RFC 3261 §19.1.1 (table): headers are not allowed in a Request-URI; RFC 4475
        // §3.1.2.11 allows refusing them with 400.
        if uri.headers.is_some() {
            return Err(ParseError::BadRequestUri);
        }
        Ok(StartLine::Request { method, uri })
    }
}

/// `SIP/` 1*DIGIT `.` 1*DIGIT (RFC 3261 §25.1 SIP-Version), case-insensitive.
fn is_sip_version(v: &str) -> bool {
    let Some(rest) = v
        .as_bytes()
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case(b"SIP/"))
        .and_then(|_| v.get(4..))
    else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit());
    rest.split_once('.')
        .is_some_and(|(major, minor)| digits(major) && digits(minor))
}

/// Single-value headers (RFC 3261 §7.3.1, §20): more than one line of these is an error
/// (RFC 4475 §3.3.8).
const SINGLE_VALUE_HEADERS: [&str; 5] = ["From", "To", "Call-ID", "CSeq", "Max-Forwards"];

/// RFC 3261 §8.1.1 / §8.2.2: Via, From, To, Call-ID and CSeq are mandatory in every message
/// and must parse (every Via element, not only the top one); single-value headers appear once;
/// a request's CSeq method must equal its method (§8.1.1.5) and its Contact values must parse.
fn validate(start: &StartLine, headers: &Headers) -> Result<(), ParseError> {
    let mut any_via = false;
    for line in headers.get_all("Via") {
        // An empty list element (`a,,b`, a trailing `,`) is not a Via (RFC 4475 §3.1.2.1).
        for v in split_outside_quotes(line, b',') {
            Via::parse(v)?;
            any_via = true;
        }
    }
    if !any_via {
        return Err(ParseError::MissingHeader("Via"));
    }
    for name in SINGLE_VALUE_HEADERS {
        if headers.get_all(name).nth(1).is_some() {
            return Err(ParseError::DuplicateHeader(name));
        }
    }
    for (name, label) in [("From", "From"), ("To", "To")] {
        let v = headers.get(name).ok_or(ParseError::MissingHeader(label))?;
        NameAddr::parse(v).map_err(|_| ParseError::BadHeader(label))?;
    }
    match headers.get("Call-ID") {
        None => return Err(ParseError::MissingHeader("Call-ID")),
        Some("") => return Err(ParseError::BadHeader("Call-ID")),
        Some(_) => {}
    }
    let cseq = CSeq::parse(
        headers
            .get("CSeq")
            .ok_or(ParseError::MissingHeader("CSeq"))?,
    )?;
    if let Some(mf) = headers.get("Max-Forwards") {
        let mf = mf.trim();
        if mf.is_empty() || mf.len() > 10 || !mf.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::BadHeader("Max-Forwards"));
        }
    }
    if let StartLine::Request { method, .. } = start {
        if &cseq.method != method {
            return Err(ParseError::CSeqMismatch);
        }
        // RFC 4475 §3.1.2.13: a Contact URI with headers outside `<>` is reasonably refused.
        for c in headers.values("Contact") {
            if c != "*" {
                NameAddr::parse(c).map_err(|_| ParseError::BadHeader("Contact"))?;
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Identifiers

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

fn random_alnum(rng: &mut fastrand::Rng, n: usize) -> String {
    (0..n)
        .map(|_| ALPHABET[rng.usize(..ALPHABET.len())] as char)
        .collect()
}

// Identifiers come from a caller's RNG (seeded by the daemon from the OS, by tests and fuzz
// targets from a fixed seed) so that a run of the sans-IO core can be replayed exactly.

/// A new branch parameter: the magic cookie plus 16 random characters (RFC 3261 §8.1.1.7:
/// unique across space and time for all requests sent by this UA).
pub fn generate_branch(rng: &mut fastrand::Rng) -> String {
    format!("{BRANCH_MAGIC_COOKIE}{}", random_alnum(rng, 16))
}

/// A new From/To tag with about 60 bits of randomness (RFC 3261 §19.3 asks for at least 32).
pub fn generate_tag(rng: &mut fastrand::Rng) -> String {
    random_alnum(rng, 10)
}

/// A new Call-ID (`random@host`, RFC 3261 §8.1.1.4).
pub fn generate_call_id(rng: &mut fastrand::Rng, host: &str) -> String {
    format!("{}@{host}", random_alnum(rng, 20))
}

/// The To tag of a response sent without state (an error answered by the parser, an overload
/// 503): a hash of what identifies the request (Call-ID, From tag, top Via branch), so a
/// retransmission gets the same tag (RFC 3261 §8.2.6.2) without anything kept.
pub fn stateless_tag(msg: &impl HeaderAccess) -> String {
    // FNV-1a: tiny, and the tag needs uniqueness per request, not secrecy.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let parts = [
        msg.headers().get("Call-ID").unwrap_or_default().to_owned(),
        msg.from_tag().unwrap_or_default(),
        msg.top_via()
            .and_then(|v| v.branch().map(str::to_owned))
            .unwrap_or_default(),
    ];
    for part in &parts {
        for b in part.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    (0..10)
        .map(|i| ALPHABET[((h >> (i * 6)) % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

/// The standard reason phrase for a status code (RFC 3261 §21), or `""`.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n\
        Max-Forwards: 70\r\n\
        To: Bob <sip:bob@biloxi.example.com>\r\n\
        From: \"Alice A.\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
        Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
        CSeq: 314159 INVITE\r\n\
        Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
        Content-Type: application/sdp\r\n\
        Content-Length: 4\r\n\
        \r\n\
        v=0\n";

    fn req(s: &str) -> Request {
        match Message::parse(s.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("expected request, got {other:?}"),
        }
    }

    #[test]
    fn parses_rfc3665_invite() {
        let r = req(INVITE);
        assert_eq!(r.method, Method::Invite);
        assert_eq!(r.uri.user.as_deref(), Some("bob"));
        assert_eq!(r.uri.host, "biloxi.example.com");
        let via = r.top_via().expect("via");
        assert_eq!(via.transport, "UDP");
        assert_eq!(via.branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(via.sent_by(), "pc33.atlanta.example.com");
        let from = r.from_addr().expect("from");
        assert_eq!(from.display.as_deref(), Some("Alice A."));
        assert_eq!(from.tag(), Some("1928301774"));
        let to = r.to_addr().expect("to");
        assert_eq!(to.display.as_deref(), Some("Bob"));
        assert_eq!(to.tag(), None);
        assert_eq!(r.call_id(), Some("a84b4c76e66710@pc33.atlanta.example.com"));
        assert_eq!(
            r.cseq(),
            Some(CSeq {
                seq: 314159,
                method: Method::Invite
            })
        );
        assert_eq!(r.max_forwards(), Some(70));
        assert_eq!(r.content_type(), Some("application/sdp"));
        assert_eq!(r.content_length(), Some(4));
        assert_eq!(r.body, b"v=0\n");
        assert_eq!(
            r.contact().map(|c| c.uri.to_string()),
            Some("sip:alice@pc33.atlanta.example.com".into())
        );
    }

    #[test]
    fn compact_headers_and_tel_uri() {
        let m = "INVITE tel:+1-201-555-0123;phone-context=example.com SIP/2.0\r\n\
            v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport\r\n\
            f: <tel:+15551234>;tag=x1\r\n\
            t: <sip:+12015550123@example.com;user=phone>\r\n\
            i: compact-call\r\n\
            CSeq: 1 INVITE\r\n\
            m: <sip:a@192.0.2.1:5060>;expires=60\r\n\
            k: timer, 100rel\r\n\
            c: application/sdp\r\n\
            l: 3\r\n\r\nabc";
        let r = req(m);
        assert!(r.uri.is_tel());
        assert_eq!(r.uri.user.as_deref(), Some("+1-201-555-0123"));
        assert_eq!(
            r.uri
                .param("phone-context")
                .and_then(|p| p.value.as_deref()),
            Some("example.com")
        );
        assert_eq!(
            r.uri.to_string(),
            "tel:+1-201-555-0123;phone-context=example.com"
        );
        assert_eq!(r.top_via().and_then(|v| v.rport()), Some(None));
        assert_eq!(r.from_addr().map(|f| f.uri.is_tel()), Some(true));
        assert_eq!(r.from_tag().as_deref(), Some("x1"));
        assert_eq!(
            r.to_addr().and_then(|t| t.uri.user),
            Some("+12015550123".to_string())
        );
        assert_eq!(r.call_id(), Some("compact-call"));
        assert_eq!(r.headers.get("Supported"), Some("timer, 100rel"));
        assert_eq!(r.content_type(), Some("application/sdp"));
        assert_eq!(r.content_length(), Some(3));
        assert_eq!(
            r.contact().and_then(|c| c.param("expires").cloned()),
            Some(Param::new("expires", Some("60".into())))
        );
        assert_eq!(r.body, b"abc");
    }

    #[test]
    fn multi_value_via_and_routes() {
        let m = "SIP/2.0 200 OK\r\n\
            Via: SIP/2.0/UDP proxy.example.com:5070;branch=z9hG4bK1;received=192.0.2.9, SIP / 2.0 / TCP [2001:db8::1]:5060 ;branch=z9hG4bK2\r\n\
            VIA: SIP/2.0/UDP c.example.com;branch=z9hG4bK3;rport=5099\r\n\
            Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
            Record-Route: <sip:p3.example.com;lr>\r\n\
            From: <sip:a@example.com>;tag=1\r\n\
            To: sip:b@example.com;tag=2\r\n\
            Call-ID: x\r\n\
            CSeq: 2 INVITE\r\n\r\n";
        let Ok(Message::Response(r)) = Message::parse(m.as_bytes()) else {
            panic!("parse")
        };
        assert_eq!(r.status, 200);
        assert_eq!(r.reason, "OK");
        let vias = r.vias().expect("vias");
        assert_eq!(vias.len(), 3);
        assert_eq!(vias[0].received(), Some("192.0.2.9"));
        assert_eq!(vias[0].port, Some(5070));
        assert_eq!(vias[1].transport, "TCP");
        assert_eq!(vias[1].host, "[2001:db8::1]");
        assert_eq!(vias[1].sent_by(), "[2001:db8::1]:5060");
        assert_eq!(vias[2].rport(), Some(Some(5099)));
        let rr: Vec<String> = r
            .record_routes()
            .iter()
            .map(|n| n.uri.host.clone())
            .collect();
        assert_eq!(rr, ["p1.example.com", "p2.example.com", "p3.example.com"]);
        assert!(r.record_routes()[0].uri.is_loose_router());
        assert_eq!(r.to_tag().as_deref(), Some("2"));
        // pop the top Via out of a shared line
        let mut h = r.headers.clone();
        assert!(h
            .pop_first_value("Via")
            .is_some_and(|v| v.contains("z9hG4bK1")));
        assert_eq!(h.values("Via").len(), 2);
    }

    #[test]
    fn folding_whitespace_and_bare_lf() {
        let m = "\r\n\r\nOPTIONS sip:x@example.com SIP/2.0\n\
            Via  :   SIP/2.0/UDP h.example.com\n ;branch=z9hG4bKf\n\
            From: <sip:a@example.com>\n\t;tag=9\n\
            To: <sip:x@example.com>\n\
            Subject: one\n   two\n\
            Call-ID:c\n\
            CSeq:  7   OPTIONS\n\n";
        let r = req(m);
        assert_eq!(
            r.top_via()
                .and_then(|v| v.branch().map(str::to_string))
                .as_deref(),
            Some("z9hG4bKf")
        );
        assert_eq!(r.from_tag().as_deref(), Some("9"));
        assert_eq!(r.headers.get("subject"), Some("one two"));
        assert_eq!(r.cseq().map(|c| c.seq), Some(7));
        assert!(r.body.is_empty());
    }

    #[test]
    fn missing_and_bad_headers() {
        for (name, err) in [
            ("Via", ParseError::MissingHeader("Via")),
            ("From", ParseError::MissingHeader("From")),
            ("To", ParseError::MissingHeader("To")),
            ("Call-ID", ParseError::MissingHeader("Call-ID")),
            ("CSeq", ParseError::MissingHeader("CSeq")),
        ] {
            let m: String = INVITE
                .split("\r\n")
                .filter(|l| !l.starts_with(&format!("{name}:")))
                .collect::<Vec<_>>()
                .join("\r\n");
            assert_eq!(Message::parse(m.as_bytes()), Err(err.clone()), "{name}");
            // still enough to answer 400? Via and CSeq are needed to address it; From, To and
            // Call-ID are copied when present (RFC 4475 §3.3.1)
            let resp = bad_request_response(m.as_bytes(), &err);
            if matches!(name, "Via" | "CSeq") {
                assert!(resp.is_none(), "{name}");
            } else {
                let resp = resp.expect(name);
                assert_eq!(resp.status, 400);
                assert!(resp.headers.get(name).is_none());
                assert!(
                    Message::parse(&resp.to_bytes()).is_err(),
                    "the 400 lacks {name}"
                );
            }
        }
        // Max-Forwards is optional
        let m = INVITE.replace("Max-Forwards: 70\r\n", "");
        assert!(Message::parse(m.as_bytes()).is_ok());
        let m = INVITE.replace("Max-Forwards: 70", "Max-Forwards: lots");
        assert_eq!(
            Message::parse(m.as_bytes()),
            Err(ParseError::BadHeader("Max-Forwards"))
        );
        let m = INVITE.replace("CSeq: 314159 INVITE", "CSeq: 314159 BYE");
        assert_eq!(Message::parse(m.as_bytes()), Err(ParseError::CSeqMismatch));
        let resp = bad_request_response(m.as_bytes(), &ParseError::CSeqMismatch).expect("400");
        assert_eq!(resp.status, 400, "a known method: 400");
        let m = m.replace("INVITE sip:", "NEWMETHOD sip:");
        assert_eq!(Message::parse(m.as_bytes()), Err(ParseError::CSeqMismatch));
        let resp = bad_request_response(m.as_bytes(), &ParseError::CSeqMismatch).expect("501");
        assert_eq!(
            resp.status, 501,
            "an unknown method: 501 (RFC 4475 §3.1.2.18)"
        );
        let m = INVITE.replace("CSeq: 314159 INVITE", "CSeq: 4294967296 INVITE");
        assert_eq!(
            Message::parse(m.as_bytes()),
            Err(ParseError::BadHeader("CSeq"))
        );
        let m = INVITE.replace("Via: SIP/2.0/UDP", "Via: SIP/3.0/UDP");
        assert_eq!(
            Message::parse(m.as_bytes()),
            Err(ParseError::BadHeader("Via"))
        );
        let m = INVITE.replace(
            "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
            "Call-ID:",
        );
        assert_eq!(
            Message::parse(m.as_bytes()),
            Err(ParseError::BadHeader("Call-ID"))
        );
        let m = INVITE.replace("Max-Forwards: 70", "Max-Forwards 70");
        assert_eq!(
            Message::parse(m.as_bytes()),
            Err(ParseError::BadHeaderLine(3))
        );
    }

    #[test]
    fn body_and_content_length() {
        let m = INVITE.replace("Content-Length: 4", "Content-Length: 10");
        let err = Message::parse(m.as_bytes()).expect_err("truncated");
        assert_eq!(
            err,
            ParseError::BodyTruncated {
                declared: 10,
                available: 4
            }
        );
        // a request: enough to build the 400 (RFC 3261 §18.3)
        let resp = bad_request_response(m.as_bytes(), &err).expect("400");
        assert_eq!(resp.status, 400);
        assert_eq!(
            resp.call_id(),
            Some("a84b4c76e66710@pc33.atlanta.example.com")
        );
        assert!(resp.to_tag().is_some());
        assert_eq!(
            resp.top_via()
                .and_then(|v| v.branch().map(str::to_string))
                .as_deref(),
            Some("z9hG4bK776asdhds")
        );
        assert!(Message::parse(&resp.to_bytes()).is_ok());
        // extra datagram bytes beyond Content-Length are discarded
        let m = INVITE.replace("Content-Length: 4", "Content-Length: 2");
        assert_eq!(req(&m).body, b"v=");
        let m = INVITE.replace("Content-Length: 4", "Content-Length: -1");
        assert_eq!(
            Message::parse(m.as_bytes()),
            Err(ParseError::BadContentLength)
        );
        let m = INVITE.replace("Content-Length: 4", "Content-Length: 4\r\nl: 5");
        assert_eq!(
            Message::parse(m.as_bytes()),
            Err(ParseError::BadContentLength)
        );
        // no Content-Length on a datagram: the rest is the body
        let m = INVITE.replace("Content-Length: 4\r\n", "");
        assert_eq!(req(&m).body, b"v=0\n");
    }

    #[test]
    fn no_400_for_responses_ack_or_garbage() {
        // an ACK whose CSeq says INVITE: invalid, but ACK is never answered
        let ack = INVITE.replace("INVITE sip:", "ACK sip:");
        let err = Message::parse(ack.as_bytes()).expect_err("cseq mismatch");
        assert!(bad_request_response(ack.as_bytes(), &err).is_none());
        let resp = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 BYE\r\nContent-Length: 9\r\n\r\n";
        let err = Message::parse(resp.as_bytes()).expect_err("truncated");
        assert!(bad_request_response(resp.as_bytes(), &err).is_none());
        assert!(bad_request_response(b"\x00\xff garbage", &ParseError::BadStartLine).is_none());
    }

    #[test]
    fn garbage_and_huge_inputs() {
        assert_eq!(Message::parse(b""), Err(ParseError::MissingHeaderEnd));
        assert_eq!(
            Message::parse(b"hello\r\n\r\n"),
            Err(ParseError::BadStartLine)
        );
        assert_eq!(
            Message::parse(b"SIP/2.0 99 Low\r\n\r\n"),
            Err(ParseError::BadStartLine)
        );
        assert_eq!(
            Message::parse(b"SIP/2.0 2000 OK\r\n\r\n"),
            Err(ParseError::BadStartLine)
        );
        assert_eq!(
            Message::parse(b"INVITE sip:a@b SIP/3.0\r\n\r\n"),
            Err(ParseError::VersionNotSupported)
        );
        assert_eq!(
            Message::parse(b"INVITE sip:a@b SIP/2.0x\r\n\r\n"),
            Err(ParseError::BadStartLine)
        );
        assert_eq!(
            Message::parse(b"INVITE sip:a@b HTTP/1.1\r\n\r\n"),
            Err(ParseError::BadStartLine)
        );
        assert_eq!(
            Message::parse(b"INV(TE sip:a@b SIP/2.0\r\n\r\n"),
            Err(ParseError::BadStartLine)
        );
        assert_eq!(
            Message::parse(b"INVITE nocolon SIP/2.0\r\n\r\n"),
            Err(ParseError::BadRequestUri)
        );
        assert_eq!(
            Message::parse(b"INVITE sip:@ SIP/2.0\r\n\r\n"),
            Err(ParseError::BadRequestUri)
        );
        assert_eq!(
            Message::parse(b"OPTIONS sip:a@b SIP/2.0\r\nX: \xff\r\n\r\n"),
            Err(ParseError::NotUtf8)
        );
        let mut huge = INVITE.as_bytes().to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_MESSAGE_SIZE));
        assert!(matches!(
            Message::parse(&huge),
            Err(ParseError::TooLarge { .. })
        ));
        let many: String = INVITE.replace(
            "Max-Forwards: 70\r\n",
            &"X-A: 1\r\n".repeat(MAX_HEADERS + 1),
        );
        assert_eq!(
            Message::parse(many.as_bytes()),
            Err(ParseError::TooManyHeaders)
        );
        assert_eq!(
            Message::parse(b" folded: first\r\n\r\n"),
            Err(ParseError::BadStartLine)
        );
        assert_eq!(
            Message::parse(b"OPTIONS sip:a@b SIP/2.0\r\n folded\r\n\r\n"),
            Err(ParseError::BadHeaderLine(2))
        );
    }

    /// The packet that used to panic (`line[..4]` off a char boundary) and every shape like
    /// it: multi-byte characters at each byte offset of the start line, in header names, in
    /// values and in the typed headers. Nothing may panic; everything must be refused or
    /// parsed.
    #[test]
    fn multibyte_utf8_anywhere_never_panics() {
        let pkt = b"abc\xc3\xa9 sip:x SIP/2.0\r\n\r\n";
        assert_eq!(Message::parse(pkt), Err(ParseError::BadStartLine));
        assert!(bad_request_response(pkt, &ParseError::BadStartLine).is_none());
        let base = "SIP/2.0 200 OK";
        for ch in ["é", "€", "😀", "\u{85}", "\u{3000}"] {
            for line in [base, "OPTIONS sip:a@b SIP/2.0", "abc sip:x SIP/2.0"] {
                for at in 0..=line.len() {
                    let Some((head, tail)) = line.split_at_checked(at) else {
                        continue;
                    };
                    let start = format!("{head}{ch}{tail}");
                    let msg =
                        INVITE.replacen("INVITE sip:bob@biloxi.example.com SIP/2.0", &start, 1);
                    if let Err(e) = Message::parse(msg.as_bytes()) {
                        let _ = bad_request_response(msg.as_bytes(), &e);
                    }
                    // and the bare start line
                    let bare = format!("{start}\r\n\r\n");
                    if let Err(e) = Message::parse(bare.as_bytes()) {
                        let _ = bad_request_response(bare.as_bytes(), &e);
                    }
                }
            }
            for (from, to) in [
                ("Via: SIP/2.0/UDP", &format!("Via: SIP{ch}/2.0/UDP") as &str),
                ("SIP/2.0/UDP pc33", &format!("SIP/2.0/U{ch}DP pc33")),
                ("pc33.atlanta", &format!("pc33{ch}.atlanta")),
                ("Max-Forwards: 70", &format!("Max-Forwards: 7{ch}")),
                ("To: Bob", &format!("To: B{ch}ob")),
                ("To: Bob", &format!("T{ch}o: Bob")),
                ("<sip:bob@", &format!("<{ch}sip:bob@")),
                ("tag=1928301774", &format!("tag{ch}=1928301774")),
                ("CSeq: 314159", &format!("CSeq: 3{ch}14159")),
                ("314159 INVITE", &format!("314159 INV{ch}ITE")),
                ("Content-Length: 4", &format!("Content-Length: {ch}4")),
            ] {
                let msg = INVITE.replacen(from, to, 1);
                if let Err(e) = Message::parse(msg.as_bytes()) {
                    let _ = bad_request_response(msg.as_bytes(), &e);
                }
            }
            for typed in [
                format!("sip:{ch}@h"),
                format!("sip:a@{ch}"),
                format!("sip:a@[{ch}]"),
                format!("sip:a@h:5{ch}"),
                format!("{ch}:x"),
                format!("tel:{ch};a={ch}"),
            ] {
                let _ = Uri::parse(&typed);
                let _ = NameAddr::parse(&typed);
                let _ = NameAddr::parse(&format!("\"{ch}\\{ch}\" <{typed}>;{ch}={ch}"));
                let _ = Via::parse(&format!("SIP/2.0/UDP {typed}"));
                let _ = CSeq::parse(&typed);
            }
        }
    }

    #[test]
    fn request_line_whitespace_is_strict() {
        for (line, err) in [
            // RFC 4475 §3.1.2.9 lwsstart, §3.1.2.10 trws, §3.1.2.8 lwsruri
            ("INVITE  sip:a@b  SIP/2.0", ParseError::BadStartLine),
            ("OPTIONS sip:a@b SIP/2.0  ", ParseError::BadStartLine),
            ("INVITE sip:a@b; lr SIP/2.0", ParseError::BadStartLine),
            ("INVITE\tsip:a@b\tSIP/2.0", ParseError::BadStartLine),
            (" INVITE sip:a@b SIP/2.0", ParseError::BadStartLine),
            // RFC 4475 §3.1.2.11 escruri, §3.1.2.7 ltgtruri
            (
                "INVITE sip:a@b?Route=%3Csip:c%3E SIP/2.0",
                ParseError::BadRequestUri,
            ),
            ("INVITE <sip:a@b> SIP/2.0", ParseError::BadRequestUri),
            // RFC 4475 §3.1.2.16 badvers
            ("OPTIONS sip:a@b SIP/7.0", ParseError::VersionNotSupported),
        ] {
            let msg = INVITE.replacen("INVITE sip:bob@biloxi.example.com SIP/2.0", line, 1);
            assert_eq!(Message::parse(msg.as_bytes()), Err(err), "{line:?}");
        }
        // the 505 is addressed even though the Via says SIP/7.0 too
        let msg = INVITE
            .replacen(
                "INVITE sip:bob@biloxi.example.com SIP/2.0",
                "INVITE sip:a@b SIP/7.0",
                1,
            )
            .replace("Via: SIP/2.0/UDP", "Via: SIP/7.0/UDP");
        let resp =
            bad_request_response(msg.as_bytes(), &ParseError::VersionNotSupported).expect("505");
        assert_eq!(resp.status, 505);
        assert_eq!(
            resp.headers.get("Via"),
            Some("SIP/7.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds")
        );
        // an unknown method with a matching CSeq is a valid request (the TU answers 501)
        let msg = INVITE
            .replacen("INVITE sip:", "RE%47ISTER sip:", 1)
            .replace("CSeq: 314159 INVITE", "CSeq: 314159 RE%47ISTER");
        assert!(matches!(
            Message::parse(msg.as_bytes()),
            Ok(Message::Request(Request { method: Method::Other(m), .. })) if m == "RE%47ISTER"
        ));
    }

    #[test]
    fn vias_and_params_are_strict() {
        // RFC 4475 §3.1.2.1 badinv01: empty parameters and list elements
        for via in [
            "Via: SIP/2.0/UDP 192.0.2.15;;,;,,",
            "Via: SIP/2.0/UDP 192.0.2.15;;branch=z9hG4bKa",
            "Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKa;",
            "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds,,SIP/2.0/UDP h",
            "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds, junk",
        ] {
            let msg = INVITE.replace(
                "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
                via,
            );
            assert_eq!(
                Message::parse(msg.as_bytes()),
                Err(ParseError::BadHeader("Via")),
                "{via}"
            );
        }
        // a bad lower Via in its own line too
        let msg = INVITE.replace("Max-Forwards: 70", "Via: SIP/2.0/UDP\r\nMax-Forwards: 70");
        assert_eq!(
            Message::parse(msg.as_bytes()),
            Err(ParseError::BadHeader("Via"))
        );
        // ... and a good one is fine, with whitespace around the slashes and `=`
        let msg = INVITE.replace(
            "Max-Forwards: 70",
            "v: SIP / 2.0 / TCP spindle.example.com ; branch = z9hG4bK9ikj8\r\nMax-Forwards: 70",
        );
        let r = req(&msg);
        assert_eq!(r.vias().map(|v| v.len()), Ok(2));
        assert_eq!(
            r.vias()
                .ok()
                .and_then(|v| v.get(1).and_then(|v| v.branch().map(str::to_owned))),
            Some("z9hG4bK9ikj8".into())
        );
        // Contact of a request must parse
        for contact in [
            "\"Joe\" <sip:joe@example.org>;;;;",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "<sip:a@b",
        ] {
            let msg = INVITE.replace("<sip:alice@pc33.atlanta.example.com>", contact);
            assert_eq!(
                Message::parse(msg.as_bytes()),
                Err(ParseError::BadHeader("Contact")),
                "{contact}"
            );
        }
        let msg = INVITE.replace("<sip:alice@pc33.atlanta.example.com>", "*");
        assert!(Message::parse(msg.as_bytes()).is_ok());
    }

    #[test]
    fn single_value_headers_appear_once() {
        // RFC 4475 §3.3.8 multi01
        for (name, line) in [
            ("CSeq", "CSeq: 59 INVITE"),
            ("Call-ID", "i: other@h"),
            ("To", "t: <sip:other@h>"),
            ("From", "From: <sip:x@h>;tag=2"),
            ("Max-Forwards", "Max-Forwards: 5"),
        ] {
            let msg = INVITE.replace("Content-Type:", &format!("{line}\r\nContent-Type:"));
            assert_eq!(
                Message::parse(msg.as_bytes()),
                Err(ParseError::DuplicateHeader(name)),
                "{line}"
            );
            let resp = bad_request_response(msg.as_bytes(), &ParseError::DuplicateHeader(name));
            assert_eq!(resp.map(|r| r.status), Some(400));
        }
    }

    #[test]
    fn a_quoted_angle_bracket_in_a_parameter_is_not_the_uri() {
        // RFC 5626: an addr-spec Contact with a quoted +sip.instance holding `<urn:…>`.
        let c = NameAddr::parse("sip:ue@192.0.2.1;+sip.instance=\"<urn:uuid:1234>\"")
            .expect("a valid Contact");
        assert_eq!(c.uri.host, "192.0.2.1");
        let c = NameAddr::parse("<sip:ue@192.0.2.1>;+sip.instance=\"<urn:uuid:1234>\"")
            .expect("the bracketed form too");
        assert_eq!(c.uri.host, "192.0.2.1");
    }

    #[test]
    fn name_addr_strictness() {
        for bad in [
            // RFC 4475 §3.1.2.14 badaspec, §3.1.2.15 baddn, §3.1.2.13 regbadct
            "\"Watson, Thomas\" < sip:t.watson@example.org >",
            "<sip:t.watson@example.org >",
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "sip:a@b,sip:c@d",
            "<sip:a@b>;tag=1;",
            "<>",
            "<sip:a@b>;",
        ] {
            assert!(NameAddr::parse(bad).is_err(), "{bad}");
        }
        for good in [
            "caller<sip:caller@example.com>;tag=323",
            "A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe",
            "token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"\u{440}\u{430}\";tag=_token~1'+`*%!-.",
            "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>",
            "sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n",
            "alice@example.com <sip:a@b>",
        ] {
            let n = NameAddr::parse(good).unwrap_or_else(|e| panic!("{good}: {e}"));
            assert_eq!(NameAddr::parse(&n.to_string()), Ok(n), "{good}");
        }
    }

    #[test]
    fn uri_user_may_hold_question_marks_and_commas() {
        // RFC 4475 §3.1.1.2 intmeth: user-unreserved includes `?`, `,`, `;`, `/`
        let s = "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com";
        let u = Uri::parse(s).expect("uri");
        assert_eq!(
            u.user.as_deref(),
            Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        );
        assert_eq!(
            u.password.as_deref(),
            Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        );
        assert_eq!(u.host, "example.com");
        assert!(u.headers.is_none() && u.params.is_empty());
        assert_eq!(u.to_string(), s);
        // `?` after the host starts the headers
        let u = Uri::parse("sip:a@b;lr?subject=x").expect("uri");
        assert_eq!(u.headers.as_deref(), Some("subject=x"));
        assert!(u.is_loose_router());
        for bad in [
            "sip:a@h;;lr",
            "sip:a@h;",
            "sip:a@[zz]",
            "sip:a@[]",
            "sip:a@h\u{0}",
            "sip:a@h:050600",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn garbage_header_lines_still_get_a_400_when_addressable() {
        let m = INVITE.replace("Max-Forwards: 70", "Max-Forwards 70");
        let err = Message::parse(m.as_bytes()).expect_err("bad line");
        let resp = bad_request_response(m.as_bytes(), &err).expect("400");
        assert_eq!(resp.status, 400);
        assert_eq!(
            resp.call_id(),
            Some("a84b4c76e66710@pc33.atlanta.example.com")
        );
        // no blank line at the end of a datagram (RFC 4475 §3.1.2.15 baddn's file)
        let m = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n";
        let err = Message::parse(m.as_bytes()).expect_err("no end");
        assert_eq!(err, ParseError::MissingHeaderEnd);
        let resp = bad_request_response(m.as_bytes(), &err).expect("400");
        assert_eq!(resp.headers.get("CSeq"), Some("1 OPTIONS"));
        // a stream message too large: 513
        let resp = bad_request_response(
            m.as_bytes(),
            &ParseError::TooLarge {
                len: 1 << 20,
                limit: MAX_MESSAGE_SIZE,
            },
        );
        assert_eq!(resp.map(|r| r.status), Some(513));
    }

    #[test]
    fn uris() {
        for s in [
            "sip:alice@atlanta.example.com",
            "sip:alice:secret@atlanta.example.com:5061;transport=tcp;lr?subject=x",
            "sips:[2001:db8::10]:5061",
            "sip:+1234;npdi@gw.example.com;user=phone",
            "tel:+358-555-1234567;postd=pp22",
            "tel:7042;phone-context=example.com",
            "urn:service:sos",
        ] {
            let u = Uri::parse(s).expect(s);
            assert_eq!(u.to_string(), s);
        }
        let u = Uri::parse("SIP:Alice@AtLanta.Example.COM").expect("uri");
        assert_eq!(u.scheme, "sip");
        assert_eq!(u.host, "atlanta.example.com");
        assert_eq!(u.user.as_deref(), Some("Alice"));
        let u = Uri::parse("sip:+1234;npdi@gw.example.com;user=phone").expect("uri");
        assert_eq!(u.user.as_deref(), Some("+1234;npdi"));
        for bad in [
            "",
            "sip:",
            "sip:a@",
            "sip:h:99999",
            "sip:h:x",
            "tel:",
            "sip:a b@c",
            "1sip:x",
            "sip:h;=x",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn name_addrs() {
        let n =
            NameAddr::parse(r#""Bob \"B\" \\" <sip:bob@h;transport=udp>;tag=88;x"#).expect("na");
        assert_eq!(n.display.as_deref(), Some(r#"Bob "B" \"#));
        assert_eq!(
            n.uri.param("transport").and_then(|p| p.value.as_deref()),
            Some("udp")
        );
        assert_eq!(n.tag(), Some("88"));
        assert_eq!(NameAddr::parse(&n.to_string()), Ok(n));
        let n = NameAddr::parse("sip:bob@h;tag=5").expect("addr-spec");
        assert_eq!(n.tag(), Some("5"));
        assert!(n.uri.params.is_empty());
        let n = NameAddr::parse("Bob Smith <tel:+15551234>").expect("tel");
        assert_eq!(n.display.as_deref(), Some("Bob Smith"));
        for bad in [
            "\"open <sip:a@b>",
            "<sip:a@b",
            "<sip:a@b> junk",
            "\"x\" sip:a@b",
        ] {
            assert!(NameAddr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_list_edits() {
        let mut h = Headers::new();
        h.push("Via", "SIP/2.0/UDP a;branch=z9hG4bK1");
        h.push("v", "SIP/2.0/UDP b;branch=z9hG4bK2");
        h.push("Route", "<sip:r1;lr>");
        h.push_front("Via", Via::new("udp", "Top.Example", Some(5060)));
        assert_eq!(h.values("VIA").len(), 3);
        assert_eq!(h.get("via"), Some("SIP/2.0/UDP top.example:5060"));
        h.set("Max-Forwards", 69);
        h.set("v", "SIP/2.0/UDP only;branch=z9hG4bK9");
        assert_eq!(h.values("Via"), ["SIP/2.0/UDP only;branch=z9hG4bK9"]);
        assert_eq!(h.iter().next().map(|x| x.name.as_str()), Some("Via"));
        assert_eq!(h.remove("Route"), 1);
        h.insert_before("Max-Forwards", "Route", "<sip:r2;lr>");
        let names: Vec<&str> = h.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["Via", "Route", "Max-Forwards"]);
        assert!(h.replace_first_value("Via", "SIP/2.0/TCP new;branch=z9hG4bKn"));
        assert_eq!(h.get("Via"), Some("SIP/2.0/TCP new;branch=z9hG4bKn"));
    }

    #[test]
    fn response_for_request_and_round_trip() {
        let r = req(INVITE);
        let mut resp = Response::for_request(&r, 180, "Ringing");
        resp.set_to_tag("totag");
        resp.headers.push("Contact", "<sip:bob@192.0.2.4>");
        let bytes = resp.to_bytes();
        let Ok(Message::Response(p)) = Message::parse(&bytes) else {
            panic!("reparse")
        };
        assert_eq!(p.status, 180);
        assert_eq!(p.reason, "Ringing");
        assert_eq!(p.to_tag().as_deref(), Some("totag"));
        assert_eq!(p.from_tag().as_deref(), Some("1928301774"));
        assert_eq!(p.headers.get("Via"), r.headers.get("Via"));
        assert_eq!(p.cseq(), r.cseq());
        assert_eq!(p.content_length(), Some(0));
        assert!(p.headers.get("Max-Forwards").is_none());
        // set_to_tag never adds a second tag
        let mut again = p.clone();
        again.set_to_tag("other");
        assert_eq!(again.to_tag().as_deref(), Some("totag"));

        // request round trip keeps headers and recomputes Content-Length
        let mut r2 = r.clone();
        r2.set_body(
            "application/sdp",
            b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n".to_vec(),
        );
        let p2 = req(std::str::from_utf8(&r2.to_bytes()).expect("utf8"));
        assert_eq!(p2.body, r2.body);
        assert_eq!(p2.content_length(), Some(r2.body.len()));
        assert_eq!(p2.uri, r2.uri);
        assert_eq!(p2.method, r2.method);

        let cancel = r.cancel();
        assert_eq!(cancel.method, Method::Cancel);
        assert_eq!(
            cancel.cseq().map(|c| (c.seq, c.method)),
            Some((314159, Method::Cancel))
        );
        assert_eq!(cancel.top_via(), r.top_via());
        assert!(Message::parse(&cancel.to_bytes()).is_ok());
    }

    #[test]
    fn identifiers() {
        let rng = &mut fastrand::Rng::with_seed(7);
        let b = generate_branch(rng);
        assert!(b.starts_with(BRANCH_MAGIC_COOKIE) && b.len() == 23);
        assert_ne!(generate_branch(rng), b);
        assert_ne!(generate_tag(rng), generate_tag(rng));
        assert!(generate_call_id(rng, "h.example").ends_with("@h.example"));
        assert_eq!(
            generate_tag(&mut fastrand::Rng::with_seed(1)),
            generate_tag(&mut fastrand::Rng::with_seed(1)),
            "a seeded RNG replays"
        );
        assert_eq!(reason_phrase(487), "Request Terminated");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..1024)) {
            if let Err(e) = Message::parse(&data) {
                let _ = bad_request_response(&data, &e);
            }
        }

        #[test]
        fn unicode_in_any_line_never_panics(text in "\\PC{0,12}", line in 0usize..11, at in 0usize..40) {
            // Arbitrary characters (multi-byte ones included) spliced into one line of a valid
            // message at any char position.
            let mut lines: Vec<String> = INVITE.split("\r\n").map(str::to_owned).collect();
            let l = &mut lines[line % 10];
            let cut = l.char_indices().map(|(i, _)| i).chain([l.len()]).nth(at).unwrap_or(l.len());
            l.insert_str(cut, &text);
            let data = lines.join("\r\n");
            match Message::parse(data.as_bytes()) {
                Ok(m) => {
                    let again = Message::parse(&m.to_bytes());
                    proptest::prop_assert!(again.is_ok(), "{again:?}");
                }
                Err(e) => {
                    let _ = bad_request_response(data.as_bytes(), &e);
                }
            }
        }

        #[test]
        fn mutated_invite_never_panics(pos in 0usize..INVITE.len(), byte in proptest::num::u8::ANY, cut in 0usize..INVITE.len()) {
            let mut data = INVITE.as_bytes().to_vec();
            data[pos] = byte;
            data.truncate(cut.max(pos + 1));
            if let Err(e) = Message::parse(&data) {
                let _ = bad_request_response(&data, &e);
            }
        }

        #[test]
        fn request_round_trip(user in "[a-z0-9+]{1,12}", host in "[a-z]{1,10}\\.example", port in proptest::option::of(1u16..),
                              seq in 0u32..(1 << 31), tag in "[A-Za-z0-9]{1,12}",
                              body in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let mut r = Request::new(Method::Info, Uri::sip(Some(&user), &host, port));
            let mut via = Via::new("UDP", &host, port);
            via.set_param("branch", Some(generate_branch(&mut fastrand::Rng::new())));
            r.headers.push("Via", &via);
            let mut from = NameAddr::new(Uri::sip(Some("a"), &host, None));
            from.set_tag(&tag);
            r.headers.push("From", &from);
            r.headers.push("To", NameAddr::new(Uri::sip(Some(&user), &host, port)));
            r.headers.push("Call-ID", generate_call_id(&mut fastrand::Rng::new(), &host));
            r.headers.push("CSeq", CSeq { seq, method: Method::Info });
            r.set_body("application/octet-stream", body);
            let parsed = Message::parse(&r.to_bytes());
            let mut expected = r.clone();
            expected.headers.push("Content-Length", r.body.len());
            proptest::prop_assert_eq!(parsed, Ok(Message::Request(expected)));
        }
    }
}
