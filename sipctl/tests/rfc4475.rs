//! The RFC 4475 torture messages (`tests/rfc4475/*.dat`, byte-exact from the RFC's archive;
//! `tests/rfc4475/README.md` says where each comes from and what it must get) against
//! sipctl: first sans-IO (the parser, the stream framer and the B2BUA core, no sockets, no
//! clock), then against the real binary on loopback over UDP and TCP.
//!
//! One table ([`CASES`]) says, per message, what RFC 4475 classifies it as, whether sipctl's
//! parser accepts it, and what sipctl answers; every test checks against it.

mod loopback;

use std::io::Write;
use std::time::{Duration, Instant};

use loopback::{header, read_final_response, status_of, Sipctl};
use sipctl::b2bua::{B2bua, CoreConfig, Now};
use sipctl::config::Config;
use sipctl::sip::{
    bad_request_response, message, Frame, FramingError, HeaderAccess, Message, ParseError, Peer,
    StreamFramer, TimerConfig,
};

/// What sipctl does with a message sent to it over UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A final response with this status; if `header` is given, that header is present and
    /// its value contains the text.
    Status(u16, Option<(&'static str, &'static str)>),
    /// No answer. `counted`: refused as malformed (the `bad_messages` counter goes up), or
    /// a valid message dropped on purpose (a response matching no transaction).
    Dropped { counted: bool },
}

use Answer::{Dropped, Status};

struct Case {
    /// File name without `.dat`, as the RFC names the message.
    name: &'static str,
    /// RFC 4475 section.
    section: &'static str,
    /// RFC 4475 calls it a valid (well-formed) message.
    rfc_valid: bool,
    /// sipctl's parser accepts it (differs from `rfc_valid` only where the RFC lets the
    /// implementation choose; see the README).
    parses: bool,
    /// What sipctl answers over UDP.
    answer: Answer,
    /// Size of the file in bytes (the archive's; guards against edits).
    len: usize,
}

const fn case(
    name: &'static str,
    section: &'static str,
    rfc_valid: bool,
    parses: bool,
    answer: Answer,
    len: usize,
) -> Case {
    Case {
        name,
        section,
        rfc_valid,
        parses,
        answer,
        len,
    }
}

const ALLOW: Option<(&str, &str)> = Some(("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS"));

/// The DNs of the test configuration: `watson` (RFC 4475 §3.3.12-13) and `j.user`
/// (§3.1.1.8, §3.3.7) can register; no DN has a contact, so no INVITE is ever forwarded.
const DNS: &str = "[[dn]]\nnumber = \"watson\"\n[[dn]]\nnumber = \"j.user\"\n";

#[rustfmt::skip]
const CASES: &[Case] = &[
    // 3.1.1 Valid messages
    case("wsinv",      "3.1.1.1",  true,  true,  Status(481, None), 1001), // To has a tag: no such dialog
    case("intmeth",    "3.1.1.2",  true,  true,  Status(501, ALLOW), 641),
    case("esc01",      "3.1.1.3",  true,  true,  Status(404, None), 543),  // no DN "sips%3Auser%40example.com"
    case("escnull",    "3.1.1.4",  true,  true,  Status(404, None), 359),  // no DN "null-%00-null"
    case("esc02",      "3.1.1.5",  true,  true,  Status(501, ALLOW), 439),
    case("lwsdisp",    "3.1.1.6",  true,  true,  Status(200, None), 255),
    case("longreq",    "3.1.1.7",  true,  true,  Status(404, None), 3515), // no DN "user"
    case("dblreq",     "3.1.1.8",  true,  true,  Status(200, Some(("Contact", "<sip:j.user@host.example.com>;expires="))), 750),
    case("semiuri",    "3.1.1.9",  true,  true,  Status(200, None), 380),
    case("transports", "3.1.1.10", true,  true,  Status(200, None), 503),
    case("mpart01",    "3.1.1.11", true,  true,  Status(405, ALLOW), 1290), // MESSAGE outside a dialog
    case("unreason",   "3.1.1.12", true,  true,  Dropped { counted: false }, 526), // stray response
    case("noreason",   "3.1.1.13", true,  true,  Dropped { counted: false }, 274), // stray response
    // 3.1.2 Invalid messages
    case("badinv01",   "3.1.2.1",  false, false, Status(400, None), 472),
    case("clerr",      "3.1.2.2",  false, false, Status(400, None), 498),
    case("ncl",        "3.1.2.3",  false, false, Status(400, None), 486),
    case("scalar02",   "3.1.2.4",  false, false, Status(400, None), 476),
    case("scalarlg",   "3.1.2.5",  false, false, Dropped { counted: true }, 385),
    case("quotbal",    "3.1.2.6",  false, false, Status(400, None), 485),
    case("ltgtruri",   "3.1.2.7",  false, false, Status(400, None), 452),
    case("lwsruri",    "3.1.2.8",  false, false, Status(400, None), 541),
    case("lwsstart",   "3.1.2.9",  false, false, Status(400, None), 506),
    case("trws",       "3.1.2.10", false, false, Status(400, None), 327),
    case("escruri",    "3.1.2.11", false, false, Status(400, None), 550),
    // The RFC: reject only if the Date matters to the element; sipctl never reads Date.
    case("baddate",    "3.1.2.12", false, true,  Status(404, None), 532),
    case("regbadct",   "3.1.2.13", false, false, Status(400, None), 307),
    case("badaspec",   "3.1.2.14", false, false, Status(400, None), 346),
    case("baddn",      "3.1.2.15", false, false, Status(400, None), 331),
    case("badvers",    "3.1.2.16", false, false, Status(505, None), 291),
    case("mismatch01", "3.1.2.17", false, false, Status(400, None), 236),
    case("mismatch02", "3.1.2.18", false, false, Status(501, ALLOW), 449),
    case("bigcode",    "3.1.2.19", false, false, Dropped { counted: true }, 332),
    // 3.2 Transaction layer semantics
    case("badbranch",  "3.2.1",    true,  true,  Status(200, None), 262), // RFC 2543 matching
    // 3.3 Application-layer semantics
    case("insuf",      "3.3.1",    false, false, Status(400, None), 304),
    case("unkscm",     "3.3.2",    true,  true,  Status(416, None), 291),
    case("novelsc",    "3.3.3",    true,  true,  Status(416, None), 277),
    case("unksm2",     "3.3.4",    true,  true,  Status(400, None), 282), // registrar: AOR not SIP
    case("bext01",     "3.3.5",    true,  true,  Status(420, Some(("Unsupported", "nothingSupportsThis, nothingSupportsThisEither"))), 381),
    case("invut",      "3.3.6",    true,  true,  Status(415, Some(("Accept", "application/sdp"))), 391),
    case("regaut01",   "3.3.7",    true,  true,  Status(200, None), 304), // Authorization ignored
    case("multi01",    "3.3.8",    false, false, Status(400, None), 643),
    case("mcl01",      "3.3.9",    false, false, Status(400, None), 382),
    case("bcast",      "3.3.10",   true,  true,  Dropped { counted: false }, 516), // stray response
    case("zeromf",     "3.3.11",   true,  true,  Status(200, None), 272), // sipctl is the endpoint
    case("cparam01",   "3.3.12",   true,  true,  Status(200, Some(("Contact", "<sip:+19725552222@gw1.example.net>;expires="))), 321),
    case("cparam02",   "3.3.13",   true,  true,  Status(200, Some(("Contact", "<sip:+19725552222@gw1.example.net;unknownparam>;expires="))), 311),
    case("regescrt",   "3.3.14",   true,  true,  Status(404, None), 302), // no DN "user"; see the sans-IO test
    case("sdp01",      "3.3.15",   true,  true,  Status(406, None), 494),
    // 3.4 Backward compatibility
    case("inv2543",    "3.4.1",    true,  true,  Status(404, None), 445), // no From tag accepted; no DN "UserB"
];

/// The server transaction key (RFC 3261 §17.2.3: top Via branch and sent-by, CSeq method)
/// of a request that parses. RFC 4475's messages are meant to be sent one at a time and some
/// reuse a branch (unkscm and novelsc, escnull and regescrt, cparam01 and cparam02): sent to
/// the same sipctl within a transaction lifetime, the second is a retransmission of the first
/// and gets the first one's answer. So a message whose key was seen goes to a fresh sipctl.
fn transaction_key(data: &[u8]) -> Option<(String, String, String)> {
    let Ok(Message::Request(r)) = message::parse(data) else {
        return None;
    };
    let via = r.top_via()?;
    Some((
        via.branch().unwrap_or_default().to_owned(),
        via.sent_by(),
        r.cseq()?.method.to_string(),
    ))
}

/// Hands out a sipctl (a core or a process) per message: the current one, or a new one when
/// the message's transaction key was used on the current one.
struct Fresh<T> {
    make: Box<dyn Fn() -> T>,
    current: Option<T>,
    keys: Vec<(String, String, String)>,
    made: usize,
}

impl<T> Fresh<T> {
    fn new(make: impl Fn() -> T + 'static) -> Self {
        Fresh {
            make: Box::new(make),
            current: None,
            keys: Vec::new(),
            made: 0,
        }
    }

    fn for_message(&mut self, data: &[u8]) -> &mut T {
        let key = transaction_key(data);
        let seen = key.as_ref().is_some_and(|k| self.keys.contains(k));
        if seen || self.current.is_none() {
            self.current = Some((self.make)());
            self.keys.clear();
            self.made += 1;
        }
        self.keys.extend(key);
        self.current.get_or_insert_with(|| (self.make)())
    }
}

fn bytes(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/rfc4475/{name}.dat", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn corpus_is_the_rfc_archive() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/rfc4475");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("tests/rfc4475")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".dat"))
                .map(str::to_owned)
        })
        .collect();
    files.sort();
    let mut names: Vec<String> = CASES.iter().map(|c| c.name.to_owned()).collect();
    names.sort();
    assert_eq!(files, names, "every RFC 4475 message has a file and a row");
    assert_eq!(
        CASES.len(),
        49,
        "RFC 4475 sections 3.1-3.4 name 49 messages"
    );
    assert_eq!(CASES.iter().filter(|c| c.rfc_valid).count(), 27);
    for c in CASES {
        let b = bytes(c.name);
        assert_eq!(b.len(), c.len, "{} changed size", c.name);
        assert!(b.windows(2).any(|w| w == b"\r\n"), "{}: CRLF lost", c.name);
    }
}

#[test]
fn sans_io_parser_accepts_valid_and_refuses_invalid() {
    let mut wrong = Vec::new();
    for c in CASES {
        let data = bytes(c.name);
        let parsed = message::parse(&data);
        if parsed.is_ok() != c.parses {
            wrong.push(format!(
                "{} ({}): {:?}",
                c.name,
                c.section,
                parsed.as_ref().err()
            ));
        }
        // Only baddate differs from the RFC's classification (a choice the RFC leaves).
        assert!(c.parses == c.rfc_valid || c.name == "baddate", "{}", c.name);
        match parsed {
            Ok(m) => {
                // what parses also parses again from its own bytes
                assert!(message::parse(&m.to_bytes()).is_ok(), "{}", c.name);
            }
            Err(e) => {
                // the stateless answer the core sends for a refused message
                let status = bad_request_response(&data, &e).map(|r| r.status);
                let expected = match c.answer {
                    Status(s, _) => Some(s),
                    Dropped { .. } => None,
                };
                assert_eq!(status, expected, "{} ({e})", c.name);
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "parser disagrees with the table: {wrong:#?}"
    );
    // the counts the README states
    let valid = CASES.iter().filter(|c| c.rfc_valid);
    assert_eq!(valid.clone().filter(|c| c.parses).count(), 27);
    let invalid = CASES.iter().filter(|c| !c.rfc_valid);
    assert_eq!(invalid.filter(|c| !c.parses).count(), 21);
}

fn core(dns: &str) -> B2bua {
    let cfg = Config::from_toml(&format!(
        "[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\nadvertise = \"127.0.0.1\"\n[events]\nenabled = false\n{dns}"
    ))
    .expect("config");
    B2bua::new(
        CoreConfig {
            host: "127.0.0.1".into(),
            port: 5060,
            switch: "rfc4475".into(),
            trusted_peers: Vec::new(),
            ng: Default::default(),
            timers: TimerConfig::default(),
            max_transactions: sipctl::sip::DEFAULT_MAX_TRANSACTIONS,
            session_timer: Some(sipctl::sip::SessionTimerConfig {
                expires: 1800,
                min_se: 90,
            }),
            version: "test".into(),
            seed: 7,
        },
        cfg.router,
        cfg.directory,
    )
}

/// Final responses the core sent (1xx skipped), as raw bytes.
fn finals(core: &mut B2bua) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| core.poll_transmit())
        .map(|t| t.bytes)
        .filter(|b| status_of(b).is_some_and(|s| s >= 200))
        .collect()
}

fn check_answer(c: &Case, got: Option<&[u8]>, how: &str) -> Result<(), String> {
    match (c.answer, got) {
        (Status(s, hdr), Some(resp)) => {
            if status_of(resp) != Some(s) {
                return Err(format!(
                    "{} ({}) {how}: expected {s}, got {:?}",
                    c.name,
                    c.section,
                    String::from_utf8_lossy(resp).lines().next()
                ));
            }
            if let Some((name, text)) = hdr {
                let v = header(resp, name).unwrap_or_default();
                if !v.contains(text) {
                    return Err(format!("{} {how}: {name} {v:?} lacks {text:?}", c.name));
                }
            }
            Ok(())
        }
        (Status(s, _), None) => Err(format!(
            "{} ({}) {how}: expected {s}, got nothing",
            c.name, c.section
        )),
        (Dropped { .. }, None) => Ok(()),
        (Dropped { .. }, Some(resp)) => Err(format!(
            "{} {how}: expected no answer, got {:?}",
            c.name,
            String::from_utf8_lossy(resp).lines().next()
        )),
    }
}

#[test]
fn sans_io_core_answers_as_rfc4475_says() {
    let mut cores = Fresh::new(|| core(DNS));
    let t0 = Instant::now();
    let source = Peer::udp("192.0.2.99:5060".parse().expect("addr"));
    let mut wrong = Vec::new();
    for (i, c) in CASES.iter().enumerate() {
        let now = Now {
            mono: t0 + Duration::from_millis(i as u64),
            unix_ms: 1_800_000_000_000 + i as u64,
        };
        let data = bytes(c.name);
        let core = cores.for_message(&data);
        let before = core.counters().bad_messages;
        core.handle_sip(now, &data, source);
        let out = finals(core);
        if let Err(e) = check_answer(c, out.first().map(Vec::as_slice), "sans-IO") {
            wrong.push(e);
        }
        if out.len() > 1 {
            wrong.push(format!("{}: {} final responses", c.name, out.len()));
        }
        let counted = core.counters().bad_messages - before;
        if counted != u64::from(!c.parses) {
            wrong.push(format!("{}: bad_messages +{counted}", c.name));
        }
        if let Dropped { counted: expect } = c.answer {
            assert_eq!(counted == 1, expect, "{}", c.name);
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // novelsc and cparam02 needed fresh ones; regescrt's twin escnull went to the first
    assert_eq!(cores.made, 3, "branch collisions in the corpus");
}

#[test]
fn sans_io_registrations_keep_uri_parameters_and_headers() {
    // RFC 4475 §3.3.12-14: a header parameter is not part of the binding, a URI parameter
    // and an escaped URI header are. The e2e configuration has no DN "user"; this one does.
    // (cparam01 and cparam02 share a branch: each gets its own core)
    let register = |name: &str| {
        let mut core = core("[[dn]]\nnumber = \"watson\"\n[[dn]]\nnumber = \"user\"\n");
        let now = Now {
            mono: Instant::now(),
            unix_ms: 1_800_000_000_000,
        };
        core.handle_sip(
            now,
            &bytes(name),
            Peer::udp("192.0.2.99:5060".parse().expect("addr")),
        );
        let out = finals(&mut core);
        assert_eq!(out.len(), 1, "{name}");
        assert_eq!(status_of(&out[0]), Some(200), "{name}");
        (core, header(&out[0], "Contact").unwrap_or_default())
    };
    let (_, c) = register("cparam01");
    assert!(c.starts_with("<sip:+19725552222@gw1.example.net>;"), "{c}");
    let (_, c) = register("cparam02");
    assert!(
        c.starts_with("<sip:+19725552222@gw1.example.net;unknownparam>;"),
        "{c}"
    );
    let (core, c) = register("regescrt");
    assert!(
        c.starts_with("<sip:user@example.com?Route=%3Csip:sip.example.com%3E>;"),
        "{c}"
    );
    assert_eq!(
        core.directory()
            .registration("user", 1_800_000_000)
            .map(|r| r.contact.as_str()),
        Some("sip:user@example.com?Route=%3Csip:sip.example.com%3E")
    );
}

#[test]
fn sans_io_stream_framing_errors_are_answered() {
    // RFC 4475 §3.1.2.3, §3.3.9: over TCP the framing error cannot be recovered from; the
    // connection gets a 400 built from the header section and is closed.
    for name in ["ncl", "mcl01"] {
        let mut f = StreamFramer::default();
        f.push(&bytes(name));
        assert_eq!(
            f.poll_frame(),
            Err(FramingError::BadContentLength),
            "{name}"
        );
        let head = f.rejected_head().expect("header section kept");
        let resp = bad_request_response(head, &ParseError::from(&FramingError::BadContentLength))
            .expect("a 400");
        assert_eq!(resp.status, 400, "{name}");
        assert!(resp.to_tag().is_some());
    }
    // §3.1.2.2 clerr: on a stream a short body means "wait for more"
    let mut f = StreamFramer::default();
    f.push(&bytes("clerr"));
    assert_eq!(f.poll_frame(), Ok(None));
    // every valid request frames to itself when fed byte by byte (except dblreq, whose
    // trailing INVITE is a second message on a stream, and inv2543, which has no
    // Content-Length and so an empty body on a stream)
    for c in CASES
        .iter()
        .filter(|c| c.parses && !matches!(c.name, "dblreq" | "inv2543"))
    {
        let data = bytes(c.name);
        let mut f = StreamFramer::default();
        let mut got = Vec::new();
        for b in &data {
            f.push(std::slice::from_ref(b));
            while let Ok(Some(fr)) = f.poll_frame() {
                got.push(fr);
            }
        }
        let Some(Frame::Message(m)) = got.first() else {
            panic!("{}: no frame from {got:?}", c.name)
        };
        assert!(Message::parse(m).is_ok(), "{}", c.name);
        assert!(f.scanned() <= 2 * data.len() as u64, "{}", c.name);
    }
}

#[test]
fn e2e_udp_answers_as_rfc4475_says() {
    let mut procs = Fresh::new(|| Sipctl::start(DNS));
    let mut wrong = Vec::new();
    for c in CASES {
        let data = bytes(c.name);
        let s = procs.for_message(&data);
        let before = s.bad_messages();
        let wait = match c.answer {
            Status(..) => Duration::from_secs(3),
            Dropped { .. } => Duration::from_millis(500),
        };
        if c.name == "dblreq" {
            // the INVITE after the REGISTER's empty body is noise: exactly one answer
            let all = s.udp_all(&data, Duration::from_millis(800));
            let finals: Vec<&Vec<u8>> = all
                .iter()
                .filter(|r| status_of(r).is_some_and(|st| st >= 200))
                .collect();
            if finals.len() != 1 {
                wrong.push(format!("dblreq: {} answers", finals.len()));
            }
            if let Err(e) = check_answer(c, finals.first().map(|r| r.as_slice()), "UDP") {
                wrong.push(e);
            }
        } else {
            let got = s.udp_exchange(&data, wait);
            if let Err(e) = check_answer(c, got.as_deref(), "UDP") {
                wrong.push(e);
            }
        }
        let counted = s.bad_messages() - before;
        if counted != u64::from(!c.parses) {
            wrong.push(format!("{} UDP: bad_messages +{counted}", c.name));
        }
    }
    if let Some(s) = procs.current.as_mut() {
        assert!(s.running(), "sipctl exited");
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(procs.made, 3, "branch collisions in the corpus");
}

#[test]
fn e2e_tcp_framing_errors_get_400_then_close() {
    let mut s = Sipctl::start(DNS);
    for name in ["ncl", "mcl01"] {
        let mut t = s.tcp();
        t.write_all(&bytes(name)).expect("write");
        let resp = read_final_response(&mut t).unwrap_or_else(|| panic!("{name}: no answer"));
        assert_eq!(status_of(&resp), Some(400), "{name}");
        // then the connection is closed (EOF, not a timeout)
        let mut rest = [0u8; 64];
        let n = std::io::Read::read(&mut t, &mut rest);
        assert!(matches!(n, Ok(0)), "{name}: connection not closed: {n:?}");
    }
    // §3.1.2.2 clerr: a body shorter than Content-Length waits for more; no answer yet, and
    // the connection stays usable for nothing else but stays open
    let mut t = s.tcp();
    t.write_all(&bytes("clerr")).expect("write");
    t.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let r = std::io::Read::read(&mut t, &mut buf);
    assert!(
        matches!(&r, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "clerr over TCP: {r:?}"
    );
    // framed messages over TCP get the same answers as over UDP, on the same connection
    let mut t = s.tcp();
    for (name, status) in [
        ("lwsdisp", 200),
        ("badvers", 505),
        ("unkscm", 416),
        ("bext01", 420),
    ] {
        t.write_all(&bytes(name)).expect("write");
        let resp = read_final_response(&mut t).unwrap_or_else(|| panic!("{name}: no answer"));
        assert_eq!(status_of(&resp), Some(status), "{name} over TCP");
    }
    assert!(s.running(), "sipctl exited");
}
