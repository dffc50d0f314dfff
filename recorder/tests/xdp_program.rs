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

#[test]
fn program_steers_media_ports_and_leaves_other_traffic_alone() {
    let topo = Topology::up(2);
    let rec_ns = topo.ns("rec");
    let mut prog = in_netns(&rec_ns, || {
        XdpProgram::attach("rec0", Some("198.18.0.1".parse().unwrap()))
    })
    .unwrap_or_else(|e| panic!("attach: {e}"));
    assert_eq!(prog.mode(), AttachMode::Native, "veth supports native XDP");
    assert!(xdp_attached(&rec_ns, "rec0"), "program attached");

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

    // The same port on another address of the host is not the recorder's: passed.
    let added = Command::new("ip")
        .args(["-n", &rec_ns, "addr", "add", "198.18.0.2/24", "dev", "rec0"])
        .status()
        .unwrap();
    assert!(added.success());
    let other_addr = udp_in_netns(&rec_ns, "198.18.0.2:30000");
    other_addr
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let before = prog.counters();
    a.send_to(&[5; 30], "198.18.0.2:30000").unwrap();
    let (n, _) = other_addr
        .recv_from(&mut buf)
        .expect("other address gets its packet");
    assert_eq!(&buf[..n], &[5; 30][..]);
    assert_eq!(prog.counters().redirected, before.redirected, "not steered");

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
    assert!(!xdp_attached(&rec_ns, "rec0"), "program detached on drop");
}

#[test]
fn af_xdp_sockets_on_every_queue_receive_media_and_transmit_rewritten_frames() {
    use recorder::backend::xsk::{Verdict, XskQueue, DEFAULT_FRAMES};
    use recorder::media::frame::{parse, rewrite, Rewrite};

    // 16 source ports: the chance that RSS puts all of them on one queue is 2^-15.
    const SENDERS: usize = 16;
    const FRAMES: usize = SENDERS * 10;
    let topo = Topology::up(2);
    let rec_ns = topo.ns("rec");
    // A kernel socket on the media port must see nothing: the frames go to AF_XDP.
    let kernel = udp_in_netns(&rec_ns, "198.18.0.1:30000");
    kernel.set_nonblocking(true).unwrap();

    // The queues belong to one thread inside the recorder's namespace, as in a worker.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let worker = {
        let ns = rec_ns.clone();
        std::thread::spawn(move || {
            let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
            // SAFETY: setns on this thread only, with a valid namespace fd.
            assert_eq!(
                unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            let mut prog = XdpProgram::attach("rec0", Some("198.18.0.1".parse().unwrap())).unwrap();
            let dev = std::ffi::CString::new("rec0").unwrap();
            // SAFETY: a valid C string.
            let index = unsafe { libc::if_nametoindex(dev.as_ptr()) };
            let mut queues: Vec<XskQueue> = (0..2)
                .map(|q| {
                    XskQueue::open(index, q, DEFAULT_FRAMES)
                        .unwrap_or_else(|e| panic!("queue {q}: {e}"))
                })
                .collect();
            for q in &queues {
                prog.set_socket(q.queue(), q).unwrap();
                // veth has no zero-copy support: the kernel must report copy mode.
                assert!(!q.zero_copy().unwrap(), "veth runs AF_XDP in copy mode");
            }
            prog.set_media_port(30_000, true).unwrap();
            ready_tx.send(()).unwrap();
            // Reflect every media frame back to its sender, from the media port.
            let mut per_queue = [0usize; 2];
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            while per_queue.iter().sum::<usize>() < FRAMES && std::time::Instant::now() < deadline {
                for (qi, q) in queues.iter_mut().enumerate() {
                    let c = q.step(|pkt| {
                        let frame: &mut [u8] = pkt;
                        let Ok(f) = parse(frame) else {
                            return Verdict::Drop;
                        };
                        let mut dst_mac = [0u8; 6];
                        let mut src_mac = [0u8; 6];
                        dst_mac.copy_from_slice(&frame[6..12]);
                        src_mac.copy_from_slice(&frame[0..6]);
                        let r = Rewrite {
                            src_mac,
                            dst_mac,
                            source: f.destination,
                            destination: f.source,
                        };
                        match rewrite(frame, &f, &r) {
                            Ok(()) => Verdict::Transmit,
                            Err(_) => Verdict::Drop,
                        }
                    });
                    per_queue[qi] += c.received;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            // Let the last transmissions complete before the sockets close.
            std::thread::sleep(Duration::from_millis(100));
            for q in &mut queues {
                q.step(|_| Verdict::Drop);
            }
            (per_queue, prog.counters())
        })
    };
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("AF_XDP worker ready");

    // Party A sends from several source ports so RSS can spread them over both queues.
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| udp_in_netns(&topo.ns("a"), "198.18.0.10:0"))
        .collect();
    for s in &senders {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
    }
    for (i, s) in senders.iter().enumerate() {
        for j in 0..10u8 {
            s.send_to(&[i as u8, j, 0xab, 0xcd], "198.18.0.1:30000")
                .unwrap();
        }
    }
    let (per_queue, c) = worker.join().expect("AF_XDP worker");
    let received: usize = per_queue.iter().sum();
    assert_eq!(
        received, FRAMES,
        "frames seen on AF_XDP sockets (per queue {per_queue:?})"
    );
    assert!(
        per_queue.iter().all(|n| *n > 0),
        "both queues served frames: {per_queue:?}"
    );
    let mut buf = [0u8; 64];
    assert!(
        kernel.recv_from(&mut buf).is_err(),
        "the kernel socket got a media packet"
    );
    assert!(c.redirected >= FRAMES as u64, "{c:?}");

    // Every sender gets its 10 datagrams back, intact, from the media port (the kernel
    // verified the rewritten IP and UDP checksums before delivering them).
    for (i, s) in senders.iter().enumerate() {
        let mut got = 0;
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            assert_eq!(from.to_string(), "198.18.0.1:30000");
            assert_eq!(&buf[..n][..1], &[i as u8]);
            assert_eq!(&buf[2..4], &[0xab, 0xcd]);
            got += 1;
        }
        assert_eq!(
            got, 10,
            "sender {i} got {got} of its 10 reflected datagrams"
        );
    }
    eprintln!("AF_XDP frames per queue: {per_queue:?}");
}

/// `recorder xdp-sink` (the shared worker core around its drop-everything I/O) counts every
/// steered media frame once, on whichever queue RSS put it, and none of the other UDP.
#[test]
fn xdp_sink_counts_every_steered_frame_and_nothing_else() {
    const SENDERS: u16 = 16;
    const PER_SENDER: usize = 25;
    let topo = Topology::up(2);
    let rec_ns = topo.ns("rec");
    let dir = temp_dir("xdp-sink");
    let stats = dir.join("sink.json");
    let mut sink = Command::new("ip")
        .args(["netns", "exec", &rec_ns])
        .arg(recorder_bin())
        .args([
            "xdp-sink",
            "--interface-name",
            "rec0",
            "--address",
            "198.18.0.1",
            "--port-min",
            "30000",
            "--port-max",
            "30001",
            "--queues",
            "2",
            "--seconds",
            "4",
            "--stats-file",
            &stats.display().to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start recorder xdp-sink");
    // The stats file appears once every queue's socket is in the program's map.
    let start = std::time::Instant::now();
    while !stats.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "xdp-sink did not start"
        );
        if let Ok(Some(status)) = sink.try_wait() {
            panic!("xdp-sink exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| udp_in_netns(&topo.ns("a"), "198.18.0.10:0"))
        .collect();
    for s in &senders {
        for i in 0..PER_SENDER {
            s.send_to(&[i as u8; 172], "198.18.0.1:30000").unwrap();
            // Not a steered port: the kernel gets it, the sink does not count it.
            s.send_to(&[i as u8; 60], "198.18.0.1:40000").unwrap();
        }
    }
    let mut status = None;
    for _ in 0..200 {
        if let Some(s) = sink.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(status) = status else {
        let _ = sink.kill();
        let _ = sink.wait();
        panic!("xdp-sink did not stop after --seconds");
    };
    let mut out = String::new();
    sink.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success(), "xdp-sink failed: {status}: {out}");
    let totals: serde_json::Value = serde_json::from_str(out.trim()).expect("totals JSON");
    let want = u64::from(SENDERS) * PER_SENDER as u64;
    assert_eq!(totals["received"], want, "{totals}");
    let per_queue: Vec<u64> = totals["per_queue"]
        .as_array()
        .expect("per_queue")
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(per_queue.len(), 2, "{totals}");
    assert_eq!(per_queue.iter().sum::<u64>(), want, "{totals}");
}
