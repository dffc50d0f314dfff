//! The real sipctl binary against hostile input on loopback: a packet that used to kill the
//! daemon, a flood of malformed input that must neither stop it nor flood its log, and floods
//! of requests and connections that must stay within the configured bounds.

mod loopback;

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use loopback::{read_final_response, status_of, Sipctl};

/// A request line with a two-byte UTF-8 character across byte 4: `parse_start_line` sliced
/// `line[..4]` off a char boundary, panicked, and the daemon exited with every call.
const UTF8_PACKET: &[u8] = b"abc\xc3\xa9 sip:x SIP/2.0\r\n\r\n";

/// Waits (bounded) until the `bad_messages` counter reaches `n`.
fn wait_bad_messages(s: &Sipctl, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = s.bad_messages();
        if got >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_utf8_packet_does_not_kill_sipctl() {
    let mut s = Sipctl::start("");
    assert_eq!(s.options_status(), Some(200), "OPTIONS before");
    // over UDP: refused (no start line to answer), counted
    assert_eq!(
        s.udp_exchange(UTF8_PACKET, Duration::from_millis(500)),
        None
    );
    assert_eq!(wait_bad_messages(&s, 1), 1);
    assert!(
        s.running(),
        "sipctl exited after the UDP packet:\n{}",
        s.log()
    );
    assert_eq!(
        s.options_status(),
        Some(200),
        "OPTIONS after the UDP packet"
    );
    // over TCP: framed (it has an empty line), refused, the connection stays usable
    let mut t = s.tcp();
    t.write_all(UTF8_PACKET).expect("write");
    assert_eq!(wait_bad_messages(&s, 2), 2);
    assert!(
        s.running(),
        "sipctl exited after the TCP packet:\n{}",
        s.log()
    );
    let opt =
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-tcp1\r\n\
               From: <sip:probe@127.0.0.1>;tag=t1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: tcp1@test\r\n\
               CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    t.write_all(opt.as_bytes()).expect("write");
    let resp = read_final_response(&mut t).expect("OPTIONS answered on the same connection");
    assert_eq!(status_of(&resp), Some(200));
    assert_eq!(
        s.options_status(),
        Some(200),
        "OPTIONS over UDP after the TCP packet"
    );
    assert!(s.running());
}

/// Deterministic junk (xorshift), so a failure can be replayed.
fn junk(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn a_flood_of_malformed_input_keeps_sipctl_up_and_its_log_bounded() {
    let mut s = Sipctl::start("");
    let log_at_start = s.log_len();
    let bad_invite = |i: usize| {
        format!(
            "INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-f{i}\r\n\
             From: <sip:a@h>;tag={i}\r\nTo: <sip:x@h>\r\nCall-ID: flood{i}@test\r\nCSeq: 1 INVITE\r\n\
             Content-Length: 9999\r\n\r\n\x1b[2Jv=0\r\n"
        )
        .into_bytes()
    };
    let sock = UdpSocket::bind("127.0.0.1:0").expect("socket");
    const UDP_PACKETS: usize = 300;
    for i in 0..UDP_PACKETS {
        let pkt = match i % 5 {
            0 => UTF8_PACKET.to_vec(),
            1 => junk(i as u64, 200 + i),
            2 => bad_invite(i),          // answered 400 (truncated body), logged
            3 => junk(i as u64, 20_000), // long: only an excerpt may reach the log
            _ => [b"OPTIONS sip:x SIP/2.0\r\n".as_slice(), &junk(i as u64, 64)].concat(),
        };
        sock.send_to(&pkt, ("127.0.0.1", s.sip_udp)).expect("send");
        if i % 10 == 9 {
            // Let the daemon drain its socket buffer (UDP on loopback drops what does not
            // fit, ~200 KB): wait until it has counted this burst of 10.
            wait_bad_messages(&s, i as u64 + 1);
        }
    }
    // and stream errors: each connection gets a 400 and is closed
    const TCP_CONNECTIONS: usize = 30;
    for i in 0..TCP_CONNECTIONS {
        let mut t = s.tcp();
        let msg = String::from_utf8(bad_invite(i))
            .expect("ascii")
            .replace("Content-Length: 9999", "Content-Length: -5");
        t.write_all(msg.as_bytes()).expect("write");
        let resp = read_final_response(&mut t).expect("400 before the close");
        assert_eq!(status_of(&resp), Some(400));
    }
    let expected = (UDP_PACKETS + TCP_CONNECTIONS) as u64;
    assert_eq!(
        wait_bad_messages(&s, expected),
        expected,
        "every refusal counted"
    );
    assert!(s.running(), "sipctl exited:\n{}", s.log());
    assert_eq!(s.options_status(), Some(200), "OPTIONS after the flood");

    // After the window, the next refusal is logged with the number suppressed meanwhile.
    std::thread::sleep(Duration::from_millis(1100));
    let _ = sock.send_to(UTF8_PACKET, ("127.0.0.1", s.sip_udp));
    assert_eq!(wait_bad_messages(&s, expected + 1), expected + 1);
    std::thread::sleep(Duration::from_millis(200));

    let log = s.log();
    let grown = s.log_len() - log_at_start;
    assert!(grown < 64 * 1024, "the log grew by {grown} bytes:\n{log}");
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused SIP input"))
        .collect();
    assert!(!refused.is_empty(), "refusals are logged:\n{log}");
    // 5 lines per second per kind at most; the flood took a few seconds at worst
    assert!(refused.len() <= 60, "{} refusal lines", refused.len());
    assert!(
        refused
            .iter()
            .any(|l| l.contains("suppressed=") && !l.contains("suppressed=0")),
        "a line reports the suppressed count:\n{log}"
    );
    for l in log.lines() {
        assert!(l.len() < 2000, "a log line of {} bytes: {l:.300}", l.len());
        assert!(
            !l.contains('\x1b'),
            "raw peer bytes reached the log: {l:.300}"
        );
    }
}

#[test]
fn request_and_connection_floods_stay_within_their_bounds() {
    let mut s = Sipctl::start_with("max-transactions = 64\nmax-tcp-connections = 4", "");
    // 200 OPTIONS with distinct branches, one after the other: each answered transaction
    // lives on for 32 s (timer J), so the first 64 get 200 and the rest a stateless 503.
    let sock = UdpSocket::bind("127.0.0.1:0").expect("udp");
    sock.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let (mut ok, mut busy) = (0, 0);
    let mut buf = vec![0u8; 65_536];
    for i in 0..200 {
        let opt = format!(
            "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5998;branch=z9hG4bK-flood{i}\r\n\
             From: <sip:probe@127.0.0.1>;tag=f{i}\r\nTo: <sip:127.0.0.1>\r\nCall-ID: flood{i}@test\r\n\
             CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        sock.send_to(opt.as_bytes(), ("127.0.0.1", s.sip_udp))
            .expect("send");
        let (n, _) = sock.recv_from(&mut buf).expect("every request is answered");
        match status_of(&buf[..n]) {
            Some(200) => ok += 1,
            Some(503) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(text.contains("Retry-After: 5"), "{text}");
                busy += 1
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((ok, busy), (64, 136), "200s and 503s of the request flood");
    assert!(s.running(), "sipctl exited:\n{}", s.log());

    // Four connections are taken; a fifth is closed at once, without a byte.
    let held: Vec<_> = (0..4).map(|_| s.tcp()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut fifth = s.tcp();
    let mut byte = [0u8; 1];
    let started = Instant::now();
    let n = fifth.read(&mut byte).unwrap_or(0);
    assert_eq!(n, 0, "the fifth connection is closed");
    assert!(started.elapsed() < Duration::from_secs(3), "closed at once");
    // One held connection ends: a new one is served again.
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let mut t = s.tcp();
    let opt = "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-tcp-after\r\n\
               From: <sip:probe@127.0.0.1>;tag=t2\r\nTo: <sip:127.0.0.1>\r\nCall-ID: tcp-after@test\r\n\
               CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    t.write_all(opt.as_bytes()).expect("write");
    let resp = read_final_response(&mut t).expect("answered once connections are free");
    // The transaction table may still be full from the flood (timer J): 200 or 503.
    assert!(
        matches!(status_of(&resp), Some(200) | Some(503)),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    assert!(
        s.log().contains("max-tcp-connections reached"),
        "{}",
        s.log()
    );
    assert!(s.running());
}
