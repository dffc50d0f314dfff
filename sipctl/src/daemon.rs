//! The I/O shell around [`B2bua`]: SIP over UDP, TCP and TLS, NG over UDP, the agent-desktop
//! HTTP API, the event spool and the clock. One tokio task owns the core; sockets and
//! connections feed it through channels; the spool is written by its own thread so an
//! fsync never holds up signalling.
//!
//! TCP and TLS connections run the same code ([`connection`], generic over the stream):
//! TLS only adds the handshake before it (RFC 3261 §26.2; rustls through tokio-rustls, the
//! configurations from [`crate::tls`]). Connections are kept per peer (address and
//! transport) and reused for every message to it, in both directions (RFC 3261 §18).
//!
//! Trunks given by name are located (RFC 3263) by a
//! background task ([`crate::dns::keep_located`]) that refreshes them as their records
//! expire; its results go to the core ([`B2bua::handle_located`]), whose
//! [`TargetTable`](crate::sip::locate::TargetTable) routes calls by them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use linecord_ratelimit::RateLimiter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::api::{self, ApiMsg};
use crate::b2bua::{B2bua, CoreConfig, Now, Ticket};
use crate::config::{Config, Transport as ConfigTransport};
use crate::dns;
use crate::sip::locate::{Destination, Host, Located};
use crate::sip::{
    bad_request_response, Frame, FramingError, ParseError, Peer, StreamFramer, TimerConfig,
    Transport, MAX_MESSAGE_SIZE,
};

/// A TLS handshake (accepted or initiated) that takes longer than this fails the
/// connection; the accepted connection's slot is freed.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an outbound TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A TCP (or TLS) connection with part of a message buffered is closed when no byte arrives for this
/// long (64*T1; RFC 4475 §3.1.2.2: "close the connection if none is forthcoming within a
/// reasonable period of time"). Idle connections between messages stay open.
pub const PARTIAL_MESSAGE_TIMEOUT: Duration = Duration::from_secs(32);

/// How long a connection closed for a framing error waits for its error response to be
/// written.
const FINAL_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Messages to the core task. Stream connections (TCP or TLS) are named by their [`Peer`].
enum CoreMsg {
    /// A SIP message from a stream connection.
    Stream(Vec<u8>, Peer),
    /// A stream connection was accepted; the core sends to it through this writer.
    StreamOpened(Peer, mpsc::Sender<Vec<u8>>),
    /// A stream connection closed or failed.
    StreamClosed(Peer),
    /// A stream connection is closed because it cannot be framed: the error, the status
    /// sent before closing (if any) and what is known of the offending input.
    StreamRefused {
        from: Peer,
        why: String,
        answered: Option<u16>,
        input: Vec<u8>,
    },
}

fn now() -> Now {
    Now {
        mono: Instant::now(),
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    }
}

/// The address to advertise when the config names none: the listening address, or the
/// first non-loopback IPv4 address of the host when listening on all addresses.
fn advertise_host(cfg: &Config) -> String {
    if let Some(a) = &cfg.sip.advertise {
        return a.host.clone();
    }
    let ip = cfg.sip.listen.first().map(|l| l.addr.ip());
    match ip {
        Some(ip) if !ip.is_unspecified() => ip.to_string(),
        _ => first_host_ipv4().unwrap_or_else(|| "127.0.0.1".into()),
    }
}

fn first_host_ipv4() -> Option<String> {
    if_addrs::get_if_addrs()
        .ok()?
        .into_iter()
        .find(|i| i.ip().is_ipv4() && !i.is_loopback())
        .map(|i| i.ip().to_string())
}

/// The destinations whose host is a name (those need DNS), each once: the trunks' URIs and
/// the DNs' static contacts (a registered contact is used as it is registered).
pub fn named_destinations(cfg: &Config) -> Vec<Destination> {
    let trunks = cfg
        .trunks
        .iter()
        .map(|t| ("trunk", &t.name, t.uri.as_str()));
    let dns = cfg
        .directory
        .dns()
        .filter_map(|d| Some(("DN", &d.number, d.contact.as_deref()?)));
    let mut out: Vec<Destination> = Vec::new();
    for (what, name, uri) in trunks.chain(dns) {
        let dest = crate::sip::Uri::parse(uri)
            .ok()
            .and_then(|u| Destination::from_uri(&u).ok());
        match dest {
            Some(d) if matches!(d.host, Host::Name(_)) => {
                if !out.contains(&d) {
                    out.push(d);
                }
            }
            Some(_) => {}
            None => tracing::warn!(%name, %uri, "the {what}'s URI cannot be located"),
        }
    }
    out
}

/// Runs sipctl until SIGINT/SIGTERM.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let host = advertise_host(&cfg);
    let udp_listen = cfg
        .sip
        .listen
        .iter()
        .find(|l| l.transport == ConfigTransport::Udp)
        .map(|l| l.addr);
    let tcp_listen: Vec<SocketAddr> = cfg
        .sip
        .listen
        .iter()
        .filter(|l| l.transport == ConfigTransport::Tcp)
        .map(|l| l.addr)
        .collect();
    // Certificates are read now: a bad path stops sipctl before it listens anywhere.
    let mut tls_listen: Vec<(SocketAddr, TlsAcceptor)> = Vec::new();
    for l in &cfg.sip.listen {
        if let (ConfigTransport::Tls, Some(files)) = (l.transport, &l.tls) {
            let server = crate::tls::server_config(files)?;
            tls_listen.push((l.addr, TlsAcceptor::from(server)));
        }
    }
    let tls_client = match &cfg.sip.tls_ca {
        Some(ca) => Some(TlsConnector::from(crate::tls::client_config(ca)?)),
        None => None,
    };
    let port = cfg
        .sip
        .advertise
        .as_ref()
        .and_then(|a| a.port)
        .or(udp_listen.map(|a| a.port()))
        .or(tcp_listen.first().map(|a| a.port()))
        .unwrap_or(5060);
    let core_cfg = CoreConfig {
        host: host.clone(),
        port,
        switch: cfg.sip.switch_name.clone(),
        trusted_peers: cfg.sip.trusted_peers.clone(),
        ng: linecord_ng::client::ClientConfig {
            initial_timeout: Duration::from_millis(cfg.recorder.timeout_ms),
            retries: cfg.recorder.retries,
        },
        timers: TimerConfig::default(),
        max_transactions: cfg.sip.max_transactions,
        session_timer: cfg.sip.session_timer,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        // fastrand's own seeding (per-process hash keys and time): a new sequence every run.
        seed: fastrand::u64(..),
    };
    let mut core = B2bua::new(core_cfg, cfg.router.clone(), cfg.directory.clone());
    if let Some((a, _)) = tls_listen.first() {
        core.set_tls_port(a.port());
    }

    let udp = match udp_listen {
        Some(a) => Some(Arc::new(
            UdpSocket::bind(a)
                .await
                .with_context(|| format!("SIP UDP socket on {a}"))?,
        )),
        None => None,
    };
    let (core_tx, mut core_rx) = mpsc::channel::<CoreMsg>(4096);
    // One connection per peer (address and transport), accepted or opened by sipctl.
    let mut stream_writers: HashMap<Peer, mpsc::Sender<Vec<u8>>> = HashMap::new();
    // Accepted connections, over all TCP and TLS listeners: bounded by
    // `sip.max-tcp-connections`.
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stream_listeners = tcp_listen
        .iter()
        .map(|a| (*a, None))
        .chain(tls_listen.iter().map(|(a, t)| (*a, Some(t.clone()))));
    for (a, tls) in stream_listeners {
        let what = if tls.is_some() { "TLS" } else { "TCP" };
        let listener = TcpListener::bind(a)
            .await
            .with_context(|| format!("SIP {what} socket on {a}"))?;
        tokio::spawn(accept_loop(
            listener,
            tls,
            core_tx.clone(),
            Arc::clone(&accepted),
            cfg.sip.max_tcp_connections,
        ));
    }
    let tls_addrs: Vec<SocketAddr> = tls_listen.iter().map(|(a, _)| *a).collect();
    let ng_bind: SocketAddr = if cfg.recorder.ng.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let ng = UdpSocket::bind(ng_bind).await.context("NG socket")?;
    ng.connect(cfg.recorder.ng)
        .await
        .with_context(|| format!("NG address {}", cfg.recorder.ng))?;

    // Events: a thread writes them to the spool (fsync per job) off the signalling path.
    let events = match &cfg.events.spool_dir {
        Some(dir) => {
            let spool = linecord_jobs::Spool::open(dir)
                .with_context(|| format!("event spool {}", dir.display()))?;
            let (tx, rx) = std::sync::mpsc::sync_channel::<linecord_jobs::EventJob>(65_536);
            std::thread::Builder::new()
                .name("event-spool".into())
                .spawn(move || {
                    for ev in rx {
                        let ms = ev.time_unix_ms;
                        if let Err(e) = spool.push(&linecord_jobs::Job::Event(ev), ms) {
                            tracing::error!(error = %e, "call event not written to the spool");
                        }
                    }
                })?;
            Some(tx)
        }
        None => None,
    };

    // Trunks and DN contacts by name: located at start and refreshed at TTL expiry in the
    // background; a failed refresh keeps the last good targets (logged by the DNS shell).
    let named = named_destinations(&cfg);
    let (dns_tx, mut dns_rx) = mpsc::channel::<(Destination, Located)>(64);
    if !named.is_empty() {
        let resolver =
            dns::Resolver::new(&cfg.dns).context("DNS for trunks and contacts given by name")?;
        tracing::info!(names = named.len(), servers = ?cfg.dns.servers, "locating trunks and DN contacts by DNS");
        tokio::spawn(dns::keep_located(resolver, named, dns_tx));
    } else {
        drop(dns_tx);
    }

    let (api_tx, mut api_rx) = mpsc::channel::<ApiMsg>(256);
    let api_listener = tokio::net::TcpListener::bind(cfg.api.listen)
        .await
        .with_context(|| format!("API socket on {}", cfg.api.listen))?;
    tokio::spawn(api::serve(api_listener, cfg.api.token.clone(), api_tx));

    tracing::info!(
        sip_udp = ?udp_listen, sip_tcp = ?tcp_listen, sip_tls = ?tls_addrs, advertise = %host, port,
        recorder = %cfg.recorder.ng, api = %cfg.api.listen,
        "sipctl running"
    );

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut waiting: HashMap<
        Ticket,
        oneshot::Sender<Result<crate::b2bua::CallInfo, crate::b2bua::ApiError>>,
    > = HashMap::new();
    let mut udp_buf = vec![0u8; MAX_MESSAGE_SIZE + 1];
    let mut ng_buf = vec![0u8; 65_536];
    loop {
        let deadline = core.poll_timeout().map(tokio::time::Instant::from_std);
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let udp_recv = async {
            match &udp {
                Some(s) => s.recv_from(&mut udp_buf).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = udp_recv => match r {
                Ok((n, from)) => {
                    // A datagram over the limit arrives cut at MAX_MESSAGE_SIZE + 1 bytes; the
                    // core refuses it (counted, logged rate-limited).
                    let data = udp_buf.get(..n).unwrap_or_default();
                    if !data.iter().all(|b| b.is_ascii_whitespace()) {
                        core.handle_sip(now(), data, Peer::udp(from));
                    }
                }
                Err(e) => tracing::debug!(error = %e, "SIP UDP receive"),
            },
            Some(msg) = core_rx.recv() => match msg {
                CoreMsg::Stream(bytes, from) => core.handle_sip(now(), &bytes, from),
                CoreMsg::StreamOpened(from, w) => { stream_writers.insert(from, w); }
                CoreMsg::StreamClosed(from) => {
                    // Only if it is this connection's writer (a new one may have replaced it).
                    if stream_writers.get(&from).is_some_and(mpsc::Sender::is_closed) {
                        stream_writers.remove(&from);
                    }
                }
                CoreMsg::StreamRefused { from, why, answered, input } => {
                    core.handle_stream_refused(now(), from, &why, answered, &input);
                }
            },
            r = ng.recv(&mut ng_buf) => match r {
                Ok(n) => core.handle_ng(now(), &ng_buf[..n]),
                // ICMP port unreachable while the recorder is down: retransmissions decide.
                Err(e) => tracing::debug!(error = %e, "NG receive"),
            },
            Some(msg) = api_rx.recv() => match msg {
                ApiMsg::List(reply) => { let _ = reply.send(core.calls()); }
                ApiMsg::Status(reply) => { let _ = reply.send(core.counters()); }
                ApiMsg::Record { id, action, reply } => match core.api_command(now(), &id, action) {
                    Ok(ticket) => { waiting.insert(ticket, reply); }
                    Err(e) => { let _ = reply.send(Err(e)); }
                },
            },
            Some((dest, l)) = dns_rx.recv() => core.handle_located(dest, l),
            _ = sleep => core.handle_timeout(now()),
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
        // Everything the core wants done.
        while let Some(t) = core.poll_transmit() {
            match t.dest.transport {
                Transport::Udp => {
                    if let Some(s) = &udp {
                        if let Err(e) = s.send_to(&t.bytes, t.dest.addr).await {
                            tracing::debug!(error = %e, to = %t.dest.addr, "SIP UDP send");
                            if let Some(tx) = t.tx {
                                core.handle_transport_error(now(), tx);
                            }
                        }
                    }
                }
                Transport::Tcp | Transport::Tls => {
                    let writer = match stream_writers.get(&t.dest) {
                        Some(w) if !w.is_closed() => Some(w.clone()),
                        _ => {
                            let w = connect(t.dest, core_tx.clone(), tls_client.clone());
                            if let Some(w) = &w {
                                stream_writers.insert(t.dest, w.clone());
                            }
                            w
                        }
                    };
                    if writer.is_none_or(|w| w.try_send(t.bytes).is_err()) {
                        if let Some(tx) = t.tx {
                            core.handle_transport_error(now(), tx);
                        }
                    }
                }
            }
        }
        while let Some(d) = core.poll_ng_transmit() {
            if let Err(e) = ng.send(&d).await {
                tracing::debug!(error = %e, "NG send");
            }
        }
        while let Some(ev) = core.poll_event() {
            tracing::info!(call = %ev.global_call_id, kind = ev.kind.as_str(), reason = ?ev.reason, "call event");
            if let Some(tx) = &events {
                if tx.try_send(ev).is_err() {
                    tracing::error!("event spool queue full: call event dropped");
                }
            }
        }
        while let Some((ticket, result)) = core.poll_api_result() {
            if let Some(reply) = waiting.remove(&ticket) {
                let _ = reply.send(result);
            }
        }
    }
    tracing::info!(calls = core.calls().len(), "sipctl stopping");
    Ok(())
}

/// One accepted connection counted in the shared total until it ends.
struct Accepted(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Accepted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Accepts SIP connections on one TCP socket; with `tls`, each is a TLS connection whose
/// handshake runs in the connection's own task (bounded by [`TLS_HANDSHAKE_TIMEOUT`]), so a
/// slow handshake never holds up the accept loop.
async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    core: mpsc::Sender<CoreMsg>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    max: usize,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut refused_log = RateLimiter::new(10, Duration::from_secs(1));
    let what = if tls.is_some() { "TLS" } else { "TCP" };
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                if accepted.fetch_add(1, Relaxed) >= max {
                    accepted.fetch_sub(1, Relaxed);
                    // Closed at once: a connection flood costs a socket for a moment, never
                    // a buffer or a task.
                    drop(stream);
                    if let Some(suppressed) = refused_log.check(Instant::now()) {
                        tracing::warn!(
                            peer = %from,
                            max,
                            suppressed,
                            "SIP {what} connection refused: sip.max-tcp-connections reached"
                        );
                    }
                    continue;
                }
                let guard = Accepted(Arc::clone(&accepted));
                let core = core.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => serve_accepted(stream, Peer::tcp(from), core).await,
                        Some(acceptor) => {
                            let hs = tokio::time::timeout(
                                TLS_HANDSHAKE_TIMEOUT,
                                acceptor.accept(stream),
                            );
                            match hs.await {
                                Ok(Ok(tls)) => serve_accepted(tls, Peer::tls(from), core).await,
                                Ok(Err(e)) => {
                                    tracing::debug!(peer = %from, error = %e, "SIP TLS handshake failed")
                                }
                                Err(_) => {
                                    tracing::debug!(peer = %from, "SIP TLS handshake timed out")
                                }
                            }
                        }
                    }
                    drop(guard);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "SIP {what} accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Registers an accepted (and, for TLS, handshaken) connection with the core and runs it.
async fn serve_accepted<S>(stream: S, peer: Peer, core: mpsc::Sender<CoreMsg>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (w_tx, w_rx) = mpsc::channel(256);
    if core.send(CoreMsg::StreamOpened(peer, w_tx)).await.is_err() {
        return;
    }
    connection(stream, peer, core, w_rx, PARTIAL_MESSAGE_TIMEOUT).await;
}

/// Opens a connection to `to` (TCP, or TLS verified with `tls`) for sending and receiving on
/// it; messages written before it is up wait in the channel. `None` when `to` is a TLS peer
/// and there is no `sip.tls-ca` to verify it with.
fn connect(
    to: Peer,
    core: mpsc::Sender<CoreMsg>,
    tls: Option<TlsConnector>,
) -> Option<mpsc::Sender<Vec<u8>>> {
    let tls = match (to.transport, tls) {
        (Transport::Tls, None) => {
            tracing::warn!(to = %to.addr, "SIP TLS connection not opened: no sip.tls-ca to verify the peer with");
            return None;
        }
        (Transport::Tls, Some(c)) => Some(c),
        _ => None,
    };
    let (w_tx, w_rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let what = to.transport.via_token();
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to.addr)).await {
            Ok(Ok(s)) => s,
            _ => {
                tracing::warn!(to = %to.addr, "SIP {what} connect failed");
                let _ = core.send(CoreMsg::StreamClosed(to)).await;
                return;
            }
        };
        match tls {
            None => connection(tcp, to, core, w_rx, PARTIAL_MESSAGE_TIMEOUT).await,
            Some(connector) => {
                // RFC 5922 §7.2: the certificate is checked against the URI's host; sipctl
                // reaches peers by IP address, so that is the name.
                let name = rustls_pki_types::ServerName::IpAddress(to.addr.ip().into());
                let hs = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, connector.connect(name, tcp));
                match hs.await {
                    Ok(Ok(s)) => connection(s, to, core, w_rx, PARTIAL_MESSAGE_TIMEOUT).await,
                    Ok(Err(e)) => {
                        tracing::warn!(to = %to.addr, error = %e, "SIP TLS handshake failed");
                        let _ = core.send(CoreMsg::StreamClosed(to)).await;
                    }
                    Err(_) => {
                        tracing::warn!(to = %to.addr, "SIP TLS handshake timed out");
                        let _ = core.send(CoreMsg::StreamClosed(to)).await;
                    }
                }
            }
        }
    });
    Some(w_tx)
}

/// Reads framed SIP messages from a stream connection (TCP or TLS: the same framing and
/// limits, RFC 3261 §18.3) into the core and writes what the core sends to this peer. When
/// the stream cannot be framed, the error response (400 for a bad Content-Length, RFC 4475
/// §3.1.2.3 / §3.3.9; 513 for an oversized message) is written last and the connection
/// closed; a partial message that stalls for `stall` (the daemon uses
/// [`PARTIAL_MESSAGE_TIMEOUT`]) closes it too.
async fn connection<S>(
    stream: S,
    peer: Peer,
    core: mpsc::Sender<CoreMsg>,
    mut out: mpsc::Receiver<Vec<u8>>,
    stall: Duration,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    // The last bytes to write before closing (the error response of a framing error).
    let (last_tx, mut last_rx) = oneshot::channel::<Vec<u8>>();
    let mut writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                m = out.recv() => match m {
                    Some(bytes) => {
                        // flush: TLS holds records until flushed; a no-op for TCP.
                        if wr.write_all(&bytes).await.is_err() || wr.flush().await.is_err() {
                            return;
                        }
                    }
                    None => return,
                },
                last = &mut last_rx => {
                    if let Ok(bytes) = last {
                        let _ = wr.write_all(&bytes).await;
                        let _ = wr.flush().await;
                    }
                    let _ = wr.shutdown().await;
                    return;
                }
            }
        }
    });
    let mut framer = StreamFramer::new(MAX_MESSAGE_SIZE);
    let mut buf = vec![0u8; 16 * 1024];
    let mut last_tx = Some(last_tx);
    // Whether `writer` was awaited to its end (a JoinHandle must not be polled again).
    let mut writer_done = false;
    'read: loop {
        let read = rd.read(&mut buf);
        let r = if framer.buffered() > 0 {
            match tokio::time::timeout(stall, read).await {
                Ok(r) => r,
                Err(_) => {
                    let _ = core
                        .send(CoreMsg::StreamRefused {
                            from: peer,
                            why: "a partial message stalled; connection closed".to_owned(),
                            answered: None,
                            input: Vec::new(),
                        })
                        .await;
                    break;
                }
            }
        } else {
            read.await
        };
        let n = match r {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = buf.get(..n).unwrap_or_default();
        framer.push(chunk);
        loop {
            match framer.poll_frame() {
                Ok(Some(Frame::Message(m))) => {
                    if core.send(CoreMsg::Stream(m, peer)).await.is_err() {
                        break 'read;
                    }
                }
                Ok(Some(Frame::Ping)) => {}
                Ok(None) => break,
                Err(e) => {
                    let resp = stream_error_response(&framer, &e);
                    let answered = resp.as_ref().map(|(status, _)| *status);
                    let input = framer.rejected_head().unwrap_or(chunk).to_vec();
                    if let (Some((_, bytes)), Some(tx)) = (resp, last_tx.take()) {
                        if tx.send(bytes).is_ok() {
                            writer_done = tokio::time::timeout(FINAL_WRITE_TIMEOUT, &mut writer)
                                .await
                                .is_ok();
                        }
                    }
                    let _ = core
                        .send(CoreMsg::StreamRefused {
                            from: peer,
                            why: e.to_string(),
                            answered,
                            input,
                        })
                        .await;
                    break 'read;
                }
            }
        }
    }
    drop(last_tx);
    writer.abort();
    // Once the writer task is gone its receiver is dropped, so the core sees this peer's
    // writer closed when it handles StreamClosed.
    if !writer_done {
        let _ = writer.await;
    }
    let _ = core.send(CoreMsg::StreamClosed(peer)).await;
}

/// The error response for a framing error, when the offending message's header section was
/// read: (status, bytes).
fn stream_error_response(framer: &StreamFramer, e: &FramingError) -> Option<(u16, Vec<u8>)> {
    let head = framer.rejected_head()?;
    let resp = bad_request_response(head, &ParseError::from(e))?;
    Some((resp.status, resp.to_bytes()))
}

#[cfg(test)]
mod tests {
    //! The TCP connection task against a real loopback socket (the behaviour under test is
    //! about the socket: what is written before the close, and when it closes).

    use super::*;
    use crate::sip::locate::{LocateError, Target, Transport as LocTransport};
    use std::io::{Read, Write};

    #[test]
    fn named_trunks_are_located_and_applied() {
        let cfg = Config::from_toml(
            "[[trunk]]\nname = \"a\"\naddress = \"198.18.0.9:5060\"\n\
             [[trunk]]\nname = \"b\"\naddress = \"Carrier.Test\"\n\
             [[trunk]]\nname = \"c\"\naddress = \"sip:carrier.test\"\n\
             [[trunk]]\nname = \"d\"\naddress = \"carrier.test\"\ntransport = \"tcp\"\n\
             [[dn]]\nnumber = \"1001\"\ncontact = \"198.18.0.20:5060\"\n\
             [[dn]]\nnumber = \"1002\"\ncontact = \"pbx.test:5062\"",
        )
        .expect("config");
        let named = named_destinations(&cfg);
        // The numeric trunk and DN need no DNS; b and c are the same destination.
        assert_eq!(named.len(), 3, "{named:?}");
        assert_eq!(named[2].host, Host::Name("pbx.test".into()));
        assert_eq!(named[2].port, Some(5062));
        assert_eq!(named[0].host, Host::Name("carrier.test".into()));
        assert_eq!(named[1].transport, Some(LocTransport::Tcp));
        let mut table = crate::sip::locate::TargetTable::new();
        let t = Target {
            addr: "198.18.0.30:5060".parse().expect("addr"),
            transport: LocTransport::Udp,
        };
        let located = Located::Targets {
            targets: vec![t],
            expires: None,
        };
        table.apply(named[0].clone(), located);
        assert!(table.resolve("sip:+4930@carrier.test").is_some());
        table.apply(named[0].clone(), Located::Pending);
        assert!(
            table.get(&named[0]).is_some(),
            "pending keeps what is known"
        );
        let failed = Located::Failed(LocateError::NoTargets("carrier.test".into()));
        table.apply(named[0].clone(), failed);
        assert!(table.resolve("sip:+4930@carrier.test").is_none());
    }

    /// Runs `connection` for one accepted socket; returns the client end and the core's
    /// receiving channel.
    async fn serve(stall: Duration) -> (std::net::TcpStream, mpsc::Receiver<CoreMsg>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = std::net::TcpStream::connect(addr).expect("connect");
        let (stream, from) = listener.accept().await.expect("accept");
        let (core_tx, core_rx) = mpsc::channel(16);
        let (_w_tx, w_rx) = mpsc::channel(16);
        tokio::spawn(async move {
            // keep the writer channel open as the core would
            let _keep = _w_tx;
            connection(stream, Peer::tcp(from), core_tx, w_rx, stall).await;
        });
        (client, core_rx)
    }

    /// Reads until EOF on a blocking thread (bounded by the socket timeout).
    async fn read_to_eof(mut client: std::net::TcpStream) -> (Vec<u8>, bool) {
        tokio::task::spawn_blocking(move || {
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut got = Vec::new();
            let eof = client.read_to_end(&mut got).is_ok();
            (got, eof)
        })
        .await
        .expect("reader")
    }

    const HEAD: &str = "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-c1\r\n\
                        From: <sip:a@h>;tag=1\r\nTo: <sip:x@h>\r\nCall-ID: c1@test\r\nCSeq: 1 OPTIONS\r\n";

    #[tokio::test]
    async fn a_framing_error_is_answered_then_the_connection_closes() {
        let (mut client, mut core) = serve(Duration::from_secs(30)).await;
        client
            .write_all(format!("{HEAD}Content-Length: -1\r\n\r\n").as_bytes())
            .expect("write");
        let (got, eof) = read_to_eof(client).await;
        assert!(eof, "closed by sipctl");
        assert!(
            got.starts_with(b"SIP/2.0 400 "),
            "{}",
            String::from_utf8_lossy(&got)
        );
        match core.recv().await {
            Some(CoreMsg::StreamRefused {
                answered, input, ..
            }) => {
                assert_eq!(answered, Some(400));
                assert!(input.starts_with(b"OPTIONS "));
            }
            _ => panic!("the core hears of the refusal"),
        }
        assert!(matches!(core.recv().await, Some(CoreMsg::StreamClosed(_))));
    }

    #[tokio::test]
    async fn a_stalled_partial_message_closes_the_connection() {
        let (mut client, mut core) = serve(Duration::from_millis(300)).await;
        let t0 = Instant::now();
        client.write_all(HEAD.as_bytes()).expect("write"); // no empty line yet
        let (got, eof) = read_to_eof(client).await;
        assert!(eof && got.is_empty(), "closed without an answer");
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(4),
            "{waited:?}"
        );
        assert!(matches!(
            core.recv().await,
            Some(CoreMsg::StreamRefused { answered: None, .. })
        ));
    }

    #[tokio::test]
    async fn an_idle_connection_between_messages_stays_open() {
        let (mut client, mut core) = serve(Duration::from_millis(200)).await;
        client
            .write_all(format!("{HEAD}Content-Length: 0\r\n\r\n").as_bytes())
            .expect("write");
        assert!(matches!(core.recv().await, Some(CoreMsg::Stream(..))));
        // nothing buffered: no stall timer; after 3x the stall time it is still open
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(core.try_recv().is_err(), "no refusal, no close");
        client
            .write_all(format!("{HEAD}Content-Length: 0\r\n\r\n").as_bytes())
            .expect("write");
        assert!(matches!(core.recv().await, Some(CoreMsg::Stream(..))));
    }
}
