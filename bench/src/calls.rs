//! Setting calls up and tearing them down over NG, as a SIP proxy would: `offer` with
//! party A's SDP, `answer` with party B's, `delete` at the end.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use linecord_ng::client::{Client, ClientConfig, ClientEvent, RequestId};
use linecord_ng::{reply, Command, Request, Value};

use crate::netns;

/// Errors of NG call control.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Socket trouble.
    #[error("NG socket: {0}")]
    Io(#[from] std::io::Error),
    /// The relay did not answer in time.
    #[error("the relay did not answer {command} for call {call_id}")]
    Timeout {
        /// NG command.
        command: String,
        /// Call it was about.
        call_id: String,
    },
    /// The relay answered with an error or something unusable.
    #[error("{command} for call {call_id}: {reason}")]
    Refused {
        /// NG command.
        command: String,
        /// Call it was about.
        call_id: String,
        /// What the relay said.
        reason: String,
    },
}

/// Requests kept in flight at once: enough to hide the round trip, few enough that a relay
/// handling NG on one thread is not flooded.
const WINDOW: usize = 32;

/// A blocking NG link to a relay (wraps the sans-IO [`Client`]).
pub struct NgLink {
    sock: UdpSocket,
    server: SocketAddr,
    client: Client,
}

impl NgLink {
    /// Opens a socket in network namespace `ns` (the relay's, when its NG port listens on
    /// that namespace's loopback) towards `server`.
    pub fn open(ns: Option<&str>, server: SocketAddr) -> Result<NgLink, CallError> {
        let ns = ns.map(str::to_owned);
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .map_err(|_| std::io::Error::other("bad bind address"))?;
        let sock = std::thread::spawn(move || -> std::io::Result<UdpSocket> {
            if let Some(ns) = &ns {
                netns::enter(ns)?;
            }
            UdpSocket::bind(bind)
        })
        .join()
        .map_err(|_| std::io::Error::other("netns thread panicked"))??;
        sock.set_read_timeout(Some(Duration::from_millis(20)))?;
        let prefix = format!("bench{}", std::process::id());
        Ok(NgLink {
            sock,
            server,
            client: Client::new(&prefix, ClientConfig::default()),
        })
    }

    /// Sends every request, at most [`WINDOW`] in flight, and returns the replies in order.
    /// `label(i)` names request `i` in errors.
    pub fn call_many(
        &mut self,
        requests: &[Value],
        label: impl Fn(usize) -> (String, String),
    ) -> Result<Vec<Value>, CallError> {
        let mut replies: Vec<Option<Value>> = vec![None; requests.len()];
        let mut ids: Vec<(RequestId, usize)> = Vec::new();
        let mut next = 0;
        let mut done = 0;
        let mut buf = vec![0u8; 65_536];
        while done < requests.len() {
            while next < requests.len() && self.client.pending() < WINDOW {
                ids.push((self.client.request(Instant::now(), &requests[next]), next));
                next += 1;
            }
            while let Some(d) = self.client.poll_transmit() {
                self.sock.send_to(&d, self.server)?;
            }
            match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => {
                    self.client.handle_datagram(&buf[..n]);
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                // ICMP port unreachable: the relay is not (yet) there; retransmission decides.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e.into()),
            }
            self.client.handle_timeout(Instant::now());
            while let Some(ev) = self.client.poll_event() {
                let (id, body) = match ev {
                    ClientEvent::Reply { id, body } => (id, Some(body)),
                    ClientEvent::TimedOut { id } => (id, None),
                };
                let Some(pos) = ids.iter().position(|(i, _)| *i == id) else {
                    continue;
                };
                let (_, index) = ids.swap_remove(pos);
                let Some(body) = body else {
                    let (command, call_id) = label(index);
                    return Err(CallError::Timeout { command, call_id });
                };
                replies[index] = Some(body);
                done += 1;
            }
        }
        Ok(replies
            .into_iter()
            .map(|r| r.unwrap_or_else(Value::dict))
            .collect())
    }

    /// One request, one reply.
    pub fn call(&mut self, request: &Value, label: (&str, &str)) -> Result<Value, CallError> {
        let (c, id) = (label.0.to_owned(), label.1.to_owned());
        let mut v = self.call_many(std::slice::from_ref(request), |_| (c.clone(), id.clone()))?;
        Ok(v.pop().unwrap_or_else(Value::dict))
    }
}

/// How the calls are set up.
#[derive(Debug, Clone)]
pub struct CallPlan {
    /// Call-ID prefix (unique per run and phase).
    pub prefix: String,
    /// Number of calls.
    pub calls: usize,
    /// Ask the relay to record (`record call: yes`).
    pub record: bool,
    /// Party A's RTP addresses (one per sender thread; call `i` uses `a[i % len]`).
    pub a: Vec<SocketAddr>,
    /// Party B's RTP addresses.
    pub b: Vec<SocketAddr>,
}

/// Calls set up on a relay.
#[derive(Debug, Clone)]
pub struct CallSet {
    /// Call-IDs.
    pub call_ids: Vec<String>,
    /// Where party A sends call `i`'s RTP (the relay's port facing A).
    pub a_dest: Vec<SocketAddr>,
    /// Where party B sends.
    pub b_dest: Vec<SocketAddr>,
}

fn party_sdp(addr: SocketAddr, session: usize) -> String {
    let family = if addr.is_ipv4() { "IP4" } else { "IP6" };
    let ip = addr.ip();
    format!(
        "v=0\r\no=- {session} 1 IN {family} {ip}\r\ns=bench\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n",
        addr.port()
    )
}

fn request(command: Command, call_id: &str, to_tag: Option<&str>) -> Request {
    let mut r = Request::new(command);
    r.call_id = Some(call_id.to_owned());
    r.from_tag = Some("bench-a".to_owned());
    r.to_tag = to_tag.map(str::to_owned);
    r
}

/// The media address of the first `m=` line of a reply's SDP.
fn reply_media(
    body: &Value,
    command: &str,
    call_id: &str,
    fallback: IpAddr,
) -> Result<SocketAddr, CallError> {
    let refused = |reason: String| CallError::Refused {
        command: command.to_owned(),
        call_id: call_id.to_owned(),
        reason,
    };
    let r = reply::inspect(body).map_err(|e| refused(e.to_string()))?;
    if r.result != "ok" {
        return Err(refused(r.error_reason.unwrap_or(r.result).to_owned()));
    }
    let sdp = r.sdp.ok_or_else(|| refused("no SDP in the reply".into()))?;
    let parsed = linecord_sdp::Sdp::parse(sdp).map_err(|e| refused(e.to_string()))?;
    let m = parsed
        .medias()
        .into_iter()
        .next()
        .ok_or_else(|| refused("no m= line".into()))?;
    Ok(SocketAddr::new(m.address.unwrap_or(fallback), m.port))
}

/// Offers and answers every call of `plan`; the relay's address `relay_ip` stands in for a
/// reply SDP without a connection address.
pub fn setup(ng: &mut NgLink, plan: &CallPlan, relay_ip: IpAddr) -> Result<CallSet, CallError> {
    let ids: Vec<String> = (0..plan.calls)
        .map(|i| format!("{}-{i}", plan.prefix))
        .collect();
    let offers: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut r = request(Command::Offer, id, None);
            r.sdp = Some(party_sdp(plan.a[i % plan.a.len()], i).into_bytes());
            r.record_call = plan.record.then_some(true);
            r.to_value()
        })
        .collect();
    let offer_replies = ng.call_many(&offers, |i| ("offer".into(), ids[i].clone()))?;
    let answers: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut r = request(Command::Answer, id, Some("bench-b"));
            r.sdp = Some(party_sdp(plan.b[i % plan.b.len()], i).into_bytes());
            r.to_value()
        })
        .collect();
    let answer_replies = ng.call_many(&answers, |i| ("answer".into(), ids[i].clone()))?;
    let mut set = CallSet {
        call_ids: ids.clone(),
        a_dest: Vec::with_capacity(plan.calls),
        b_dest: Vec::with_capacity(plan.calls),
    };
    for (i, id) in ids.iter().enumerate() {
        // The offer's reply goes to B: it is where B sends. The answer's reply goes to A.
        set.b_dest
            .push(reply_media(&offer_replies[i], "offer", id, relay_ip)?);
        set.a_dest
            .push(reply_media(&answer_replies[i], "answer", id, relay_ip)?);
    }
    Ok(set)
}

/// Deletes every call (a call the relay no longer knows is not an error).
pub fn teardown(ng: &mut NgLink, set: &CallSet) -> Result<(), CallError> {
    let deletes: Vec<Value> = set
        .call_ids
        .iter()
        .map(|id| request(Command::Delete, id, None).to_value())
        .collect();
    ng.call_many(&deletes, |i| ("delete".into(), set.call_ids[i].clone()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_and_reply_parsing() {
        let a: SocketAddr = "198.18.0.10:40000".parse().unwrap();
        let sdp = party_sdp(a, 3);
        let parsed = linecord_sdp::Sdp::parse(sdp.as_bytes()).unwrap();
        assert_eq!(parsed.medias()[0].port, 40000);
        let fallback: IpAddr = "198.18.0.1".parse().unwrap();
        let ok = reply::ok_with_sdp(sdp.as_bytes());
        assert_eq!(reply_media(&ok, "offer", "c", fallback).unwrap(), a);
        let err = reply::error("Unknown call-id");
        let e = reply_media(&err, "answer", "c1", fallback).unwrap_err();
        assert_eq!(e.to_string(), "answer for call c1: Unknown call-id");
        assert!(reply_media(&reply::ok(), "offer", "c", fallback).is_err());
    }
}
