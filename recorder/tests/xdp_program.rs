//! The XDP program on the netns topology: it attaches natively to the recorder's veth, counts
//! media packets as redirected (with no AF_XDP socket on the queue they fall back to the
//! kernel, so they still arrive), leaves everything else alone (ping, TCP, other UDP), and is
//! gone from the interface when dropped. Needs root, as CI runs.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

use recorder::backend::xdp_prog::{AttachMode, XdpProgram};
use support::*;

/// Runs `f` on a thread inside network namespace `ns` and returns its result.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on this thread only, with a valid namespace fd.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        f()
    })
    .join()
    .expect("netns thread")
}

fn xdp_on(ns: &str, dev: &str) -> bool {
    let o = Command::new("ip")
        .args(["-n", ns, "-d", "link", "show", dev])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    text.contains("prog/xdp") || text.contains(" xdp")
}

#[test]
fn program_steers_media_ports_and_leaves_other_traffic_alone() {
    let topo = Topology::up(2);
    let rec_ns = topo.ns("rec");
    let mut prog =
        in_netns(&rec_ns, || XdpProgram::attach("rec0")).unwrap_or_else(|e| panic!("attach: {e}"));
    assert_eq!(prog.mode(), AttachMode::Native, "veth supports native XDP");
    assert!(xdp_on(&rec_ns, "rec0"), "program attached");

    prog.set_media_port(30_000, true).unwrap();
    let media = udp_in_netns(&rec_ns, "198.18.0.1:30000");
    let other = udp_in_netns(&rec_ns, "198.18.0.1:40000");
    for s in [&media, &other] {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    }
    let a = udp_in_netns(&topo.ns("a"), "198.18.0.10:0");
    for i in 0..20u8 {
        a.send_to(&[i; 172], "198.18.0.1:30000").unwrap();
        a.send_to(&[i; 50], "198.18.0.1:40000").unwrap();
    }
    let mut buf = [0u8; 2048];
    for i in 0..20u8 {
        let (n, _) = media
            .recv_from(&mut buf)
            .expect("media packet falls back to the kernel");
        assert_eq!(&buf[..n], &[i; 172][..]);
        let (n, _) = other.recv_from(&mut buf).expect("non-media UDP passes");
        assert_eq!(&buf[..n], &[i; 50][..]);
    }
    let c = prog.counters();
    assert!(c.redirected >= 20, "{c:?}");
    assert!(c.passed >= 20, "{c:?}");

    // A port no longer active is passed, not redirected.
    prog.set_media_port(30_000, false).unwrap();
    let before = prog.counters().redirected;
    a.send_to(&[9; 172], "198.18.0.1:30000").unwrap();
    media.recv_from(&mut buf).unwrap();
    assert_eq!(prog.counters().redirected, before);

    // Ping and TCP still work while attached.
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.ns("a"),
            "ping",
            "-c",
            "2",
            "-W",
            "1",
            "198.18.0.1",
        ])
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let listener = in_netns(&rec_ns, || TcpListener::bind("198.18.0.1:5060").unwrap());
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut b = [0u8; 5];
        s.read_exact(&mut b).unwrap();
        s.write_all(&b).unwrap();
    });
    let mut client = in_netns(&topo.ns("a"), || {
        TcpStream::connect_timeout(&"198.18.0.1:5060".parse().unwrap(), Duration::from_secs(2))
            .unwrap()
    });
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    client.write_all(b"hello").unwrap();
    let mut echo = [0u8; 5];
    client.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"hello");
    server.join().unwrap();

    drop(prog);
    assert!(!xdp_on(&rec_ns, "rec0"), "program detached on drop");
}
