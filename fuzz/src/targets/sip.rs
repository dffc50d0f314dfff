//! sipctl's SIP layer: what a UDP datagram or a TCP stream from anyone on the SIP port can be.

use sipctl::sip::{bad_request_response, Frame, HeaderAccess, Message, StreamFramer};

/// Largest TCP message the framer of the daemon accepts (as configured there).
const FRAMER_LIMIT: usize = sipctl::sip::MAX_MESSAGE_SIZE;

/// Parses a datagram as the UDP listener does, reads every header view the B2BUA uses, and
/// builds the stateless 400 for a message that does not parse. A message that parses must
/// parse again from its own serialisation.
pub fn message(data: &[u8]) {
    match Message::parse(data) {
        Ok(msg) => {
            views(&msg);
            let again = msg.to_bytes();
            if let Err(e) = Message::parse(&again) {
                panic!("a parsed message does not parse from its own bytes: {e}");
            }
        }
        Err(e) => {
            if let Some(r) = bad_request_response(data, &e) {
                let _ = r.to_bytes();
            }
        }
    }
}

fn views(msg: &Message) {
    let h: &dyn HeaderAccess = match msg {
        Message::Request(r) => r,
        Message::Response(r) => r,
    };
    let _ = h.vias();
    let _ = h.top_via();
    let _ = h.from_addr();
    let _ = h.to_addr();
    let _ = h.from_tag();
    let _ = h.to_tag();
    let _ = h.call_id();
    let _ = h.cseq();
    let _ = h.contacts();
    let _ = h.contact();
}

/// Feeds a TCP stream to the framer in pieces whose sizes come from the input itself (the
/// first byte picks the piece size, 1 to 256 bytes, so byte-by-byte arrival is covered), and
/// parses every message it cuts.
pub fn framer(data: &[u8]) {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(first) + 1;
    let mut framer = StreamFramer::new(FRAMER_LIMIT);
    for chunk in stream.chunks(piece) {
        framer.push(chunk);
        loop {
            match framer.poll_frame() {
                Ok(Some(Frame::Message(bytes))) => {
                    assert!(
                        bytes.len() <= FRAMER_LIMIT,
                        "framer returned {} bytes over its {FRAMER_LIMIT}-byte limit",
                        bytes.len()
                    );
                    if let Ok(msg) = Message::parse(&bytes) {
                        views(&msg);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                // The daemon closes the connection on a framing error.
                Err(_) => return,
            }
        }
        assert!(
            framer.buffered() <= FRAMER_LIMIT + piece,
            "framer buffers {} bytes, over its limit",
            framer.buffered()
        );
    }
}

/// The whole sans-IO SIP server on a message sequence, with a fake recorder answering every
/// NG request (`ok` and an SDP pointing at it) and the called phones answering what sipctl
/// sends them with the status the input picks, so recorded calls get set up, changed and torn
/// down. Input: records of `op hi lo [message]` (see the match below).
pub fn b2bua(data: &[u8]) {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use linecord_ng::client::ClientConfig;
    use sipctl::b2bua::{B2bua, CoreConfig, Now, RecordingAction};
    use sipctl::config::Config;
    use sipctl::sip::{reason_phrase, Peer, Response, TimerConfig, Transport};

    const CONFIG: &str = "[sip]\nlisten = [\"udp:198.18.0.1:5060\"]\n\
        [[dn]]\nnumber = \"1001\"\ncontact = \"198.18.0.20:5060\"\nrecord = true\n\
        [[dn]]\nnumber = \"1002\"\ncontact = \"198.18.0.21:5060\"\n";
    const RECORDER_SDP: &str = "v=0\r\no=- 1 1 IN IP4 198.18.0.1\r\ns=-\r\nc=IN IP4 198.18.0.1\r\n\
        t=0 0\r\nm=audio 30000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    const PHONE_SDP: &str = "v=0\r\no=- 2 2 IN IP4 198.18.0.20\r\ns=-\r\nc=IN IP4 198.18.0.20\r\n\
        t=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

    let cfg = Config::from_toml(CONFIG).expect("the fuzz target's configuration");
    let mut core = B2bua::new(
        CoreConfig {
            host: "198.18.0.1".into(),
            port: 5060,
            switch: "fuzz".into(),
            trusted_peers: Vec::new(),
            ng: ClientConfig::default(),
            timers: TimerConfig::default(),
            max_transactions: sipctl::sip::DEFAULT_MAX_TRANSACTIONS,
            session_timer: Some(sipctl::sip::SessionTimerConfig {
                expires: 1800,
                min_se: 90,
            }),
            version: "fuzz".into(),
            seed: 7,
        },
        cfg.router,
        cfg.directory,
    );
    let t0 = Instant::now();
    let mut ms = 0u64;
    let now = |ms: u64| Now {
        mono: t0 + Duration::from_millis(ms),
        unix_ms: 1_796_000_000_000 + ms,
    };
    let caller = SocketAddr::from(([198, 18, 0, 10], 5060));
    let other = SocketAddr::from(([198, 18, 0, 21], 5060));
    // The last request sipctl sent to a phone (either DN's), for that phone to answer.
    let mut to_phone: Option<(SocketAddr, sipctl::sip::Request)> = None;
    let mut rest = data;
    while let [op, hi, lo, tail @ ..] = rest {
        // Ops that carry a message take `hi lo` as its length; the others use them as values.
        let carries = !matches!(op % 8, 1 | 3 | 4);
        let n = if carries {
            usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len())
        } else {
            0
        };
        let (bytes, next) = tail.split_at(n);
        rest = next;
        ms += 1;
        match op % 8 {
            0 | 6 => core.handle_sip(now(ms), bytes, Peer::udp(caller)),
            1 => {
                // The phone answers the last request it got with the status `hi` picks (a
                // provisional, then a final answer: as often as the input says).
                if let Some((phone, req)) = &to_phone {
                    let status = (100 + u32::from(*hi) * 600 / 256) as u16;
                    let mut r = Response::for_request(req, status, reason_phrase(status));
                    r.set_to_tag("phone-tag");
                    r.headers.set("Contact", "<sip:1001@198.18.0.20:5060>");
                    if (200..300).contains(&status) && *lo & 1 == 0 {
                        r.set_body("application/sdp", PHONE_SDP.as_bytes().to_vec());
                    }
                    core.handle_sip(now(ms), &r.to_bytes(), Peer::udp(*phone));
                }
            }
            2 => core.handle_sip(now(ms), bytes, Peer::udp(other)),
            3 => {
                ms += u64::from(u16::from_be_bytes([*hi, *lo]));
                core.handle_timeout(now(ms));
            }
            4 => {
                let action = match hi % 4 {
                    0 => RecordingAction::Start,
                    1 => RecordingAction::Stop,
                    2 => RecordingAction::Pause,
                    _ => RecordingAction::Resume,
                };
                if let Some(call) = core.calls().into_iter().nth(usize::from(*lo % 2)) {
                    let _ = core.api_command(now(ms), &call.id, action);
                }
            }
            5 => core.handle_sip(
                now(ms),
                bytes,
                Peer {
                    addr: caller,
                    transport: Transport::Tcp,
                },
            ),
            _ => core.handle_sip(now(ms), bytes, Peer::udp(caller)),
        }
        // Everything the core wants done: the fake recorder answers each NG request at
        // once (unless the op's top bit says it is down), the phone keeps its last request.
        let mut ng = Vec::new();
        while let Some(req) = core.poll_ng_transmit() {
            ng.push(req);
        }
        if op & 0x80 == 0 {
            for req in ng {
                if let Some(space) = req.iter().position(|b| *b == b' ') {
                    let mut reply = req[..=space].to_vec();
                    reply.extend_from_slice(
                        format!("d6:result2:ok3:sdp{}:{}e", RECORDER_SDP.len(), RECORDER_SDP)
                            .as_bytes(),
                    );
                    core.handle_ng(now(ms), &reply);
                }
            }
        }
        while let Some(t) = core.poll_transmit() {
            if t.dest.addr.ip() != caller.ip() {
                if let Ok(Message::Request(r)) = Message::parse(&t.bytes) {
                    to_phone = Some((t.dest.addr, r));
                }
            }
        }
        while core.poll_event().is_some() {}
        while core.poll_api_result().is_some() {}
        let _ = core.poll_timeout();
    }
    let _ = core.counters();
}
