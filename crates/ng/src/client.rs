//! A sans-IO NG client: request tracking by cookie, retransmission and timeouts.
//!
//! The caller owns the socket and the clock. It drives the client like this:
//!
//! 1. [`Client::request`] queues a request and returns its [`RequestId`];
//! 2. [`Client::poll_transmit`] yields datagrams to send to the media server (first sends and
//!    retransmissions);
//! 3. every datagram received from the media server goes to [`Client::handle_datagram`];
//! 4. [`Client::poll_timeout`] says when to call [`Client::handle_timeout`] next;
//! 5. [`Client::poll_event`] yields the outcome of each request: its reply dictionary, or a
//!    timeout after the last retransmission.
//!
//! Retransmissions reuse the cookie, so the server answers them from its cookie cache
//! instead of running the command twice (that is the point of the cookie). Replies whose
//! cookie is unknown (late answers to requests already finished) are ignored.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::bencode::Value;
use crate::message;

/// Identifies one request of a [`Client`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Retransmission policy of a [`Client`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// Time to wait for a reply before the first retransmission; doubles on each retry.
    pub initial_timeout: Duration,
    /// Retransmissions after the first send before the request times out.
    pub retries: u32,
}

impl Default for ClientConfig {
    /// 500 ms, then 1 s, 2 s: a request times out 3.5 s after it was first sent.
    fn default() -> Self {
        ClientConfig {
            initial_timeout: Duration::from_millis(500),
            retries: 2,
        }
    }
}

/// What became of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// The server answered (any `result`, including `error`: read it with
    /// [`crate::reply::inspect`]).
    Reply {
        /// The request answered.
        id: RequestId,
        /// The reply dictionary.
        body: Value,
    },
    /// No reply after every retransmission.
    TimedOut {
        /// The request that timed out.
        id: RequestId,
    },
}

struct Pending {
    cookie: Vec<u8>,
    datagram: Vec<u8>,
    sends: u32,
    deadline: Instant,
}

/// Tracks NG requests of one client towards one media server.
pub struct Client {
    config: ClientConfig,
    prefix: String,
    next: u64,
    pending: BTreeMap<RequestId, Pending>,
    /// Every pending request by its deadline: the next timeout and the overdue requests
    /// without a scan of all pending ones (thousands wait at high call rates).
    deadlines: BTreeSet<(Instant, RequestId)>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<ClientEvent>,
}

impl Client {
    /// A client whose cookies start with `prefix` (e.g. the process id, so two clients of
    /// one server never share a cookie).
    pub fn new(prefix: &str, config: ClientConfig) -> Client {
        Client {
            config,
            prefix: prefix.to_owned(),
            next: 1,
            pending: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Queues `body` (a request dictionary) for sending; call [`Client::poll_transmit`] next.
    pub fn request(&mut self, now: Instant, body: &Value) -> RequestId {
        let id = RequestId(self.next);
        self.next += 1;
        let cookie = format!("{}_{}", self.prefix, id.0).into_bytes();
        let datagram = message::frame(&cookie, body);
        self.transmit.push_back(datagram.clone());
        let deadline = now + self.config.initial_timeout;
        self.deadlines.insert((deadline, id));
        self.pending.insert(
            id,
            Pending {
                cookie,
                datagram,
                sends: 1,
                deadline,
            },
        );
        id
    }

    /// The next datagram to send to the media server, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// Feeds a datagram received from the media server. Returns false when it was not a
    /// reply to a pending request (garbage, or a late duplicate).
    pub fn handle_datagram(&mut self, datagram: &[u8]) -> bool {
        let Ok((cookie, body)) = message::parse(datagram) else {
            return false;
        };
        // The cookie is `PREFIX_N` for request N: the request is found from it directly.
        let id = cookie
            .strip_prefix(self.prefix.as_bytes())
            .and_then(|rest| rest.strip_prefix(b"_"))
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|n| n.parse::<u64>().ok())
            .map(RequestId);
        let Some(id) = id.filter(|id| self.pending.get(id).is_some_and(|p| p.cookie == cookie))
        else {
            return false;
        };
        if let Some(p) = self.pending.remove(&id) {
            self.deadlines.remove(&(p.deadline, id));
        }
        self.events.push_back(ClientEvent::Reply { id, body });
        true
    }

    /// When [`Client::handle_timeout`] must next be called, if a request is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(d, _)| *d)
    }

    /// Retransmits requests whose reply is overdue and times out those out of retries.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(p) = self.pending.get_mut(&id) else {
                continue;
            };
            if p.sends > self.config.retries {
                self.pending.remove(&id);
                self.events.push_back(ClientEvent::TimedOut { id });
                continue;
            }
            p.sends += 1;
            p.deadline = now + self.config.initial_timeout * (1 << (p.sends - 1).min(16));
            self.deadlines.insert((p.deadline, id));
            self.transmit.push_back(p.datagram.clone());
        }
    }

    /// The next finished request, if any.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Number of requests still waiting for a reply.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply;

    fn ping() -> Value {
        let mut v = Value::dict();
        v.insert("command", "ping");
        v
    }

    fn answer(datagram: &[u8], body: &Value) -> Vec<u8> {
        let (cookie, _) = message::parse(datagram).unwrap();
        message::frame(cookie, body)
    }

    #[test]
    fn reply_matches_by_cookie() {
        let t0 = Instant::now();
        let mut c = Client::new("7", ClientConfig::default());
        let a = c.request(t0, &ping());
        let b = c.request(t0, &ping());
        let da = c.poll_transmit().unwrap();
        let db = c.poll_transmit().unwrap();
        assert!(da.starts_with(b"7_1 ") && db.starts_with(b"7_2 "));
        assert!(c.poll_transmit().is_none());
        // Answers out of order.
        assert!(c.handle_datagram(&answer(&db, &reply::pong())));
        assert!(c.handle_datagram(&answer(&da, &reply::ok())));
        assert_eq!(
            c.poll_event(),
            Some(ClientEvent::Reply {
                id: b,
                body: reply::pong()
            })
        );
        assert_eq!(
            c.poll_event(),
            Some(ClientEvent::Reply {
                id: a,
                body: reply::ok()
            })
        );
        // A duplicate answer is ignored, as is garbage.
        assert!(!c.handle_datagram(&answer(&da, &reply::ok())));
        assert!(!c.handle_datagram(b"garbage"));
        assert_eq!(c.pending(), 0);
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn retransmits_with_backoff_then_times_out() {
        let t0 = Instant::now();
        let mut c = Client::new("p", ClientConfig::default());
        let id = c.request(t0, &ping());
        let first = c.poll_transmit().unwrap();
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(c.poll_timeout(), Some(ms(500)));
        c.handle_timeout(ms(499));
        assert!(c.poll_transmit().is_none());
        c.handle_timeout(ms(500));
        assert_eq!(c.poll_transmit().unwrap(), first, "same cookie, same bytes");
        assert_eq!(c.poll_timeout(), Some(ms(1500)));
        c.handle_timeout(ms(1500));
        assert_eq!(c.poll_transmit().unwrap(), first);
        assert_eq!(c.poll_timeout(), Some(ms(3500)));
        c.handle_timeout(ms(3500));
        assert!(c.poll_transmit().is_none());
        assert_eq!(c.poll_event(), Some(ClientEvent::TimedOut { id }));
        // A reply after the timeout is not a reply to anything any more.
        assert!(!c.handle_datagram(&answer(&first, &reply::pong())));
    }

    #[test]
    fn thousands_pending_are_matched_by_cookie_and_time_out_in_deadline_order() {
        let t0 = Instant::now();
        let cfg = ClientConfig {
            initial_timeout: Duration::from_millis(100),
            retries: 0,
        };
        let mut c = Client::new("p", cfg);
        for i in 0..5000 {
            c.request(t0 + Duration::from_millis(i % 50), &Value::dict());
        }
        let sent: Vec<Vec<u8>> = std::iter::from_fn(|| c.poll_transmit()).collect();
        // Replies in reverse order find their requests; a foreign or repeated cookie does not.
        for d in sent.iter().rev().step_by(2) {
            let (cookie, _) = message::parse(d).unwrap();
            let reply = message::frame(cookie, &reply::ok());
            assert!(c.handle_datagram(&reply));
            assert!(!c.handle_datagram(&reply), "a late duplicate");
        }
        assert!(!c.handle_datagram(&message::frame(b"q_1", &reply::ok())));
        assert!(!c.handle_datagram(&message::frame(b"p_999999", &reply::ok())));
        assert_eq!(c.pending(), 2500);
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_millis(100)));
        c.handle_timeout(t0 + Duration::from_millis(120));
        let timed_out = std::iter::from_fn(|| c.poll_event())
            .filter(|e| matches!(e, ClientEvent::TimedOut { .. }))
            .count();
        // Requests made at 0..=20 ms are overdue at 120 ms: 21 of each 50, half unanswered.
        assert!(timed_out > 0 && timed_out < 2500, "{timed_out}");
        assert_eq!(c.pending(), 2500 - timed_out);
        assert!(c
            .poll_timeout()
            .is_some_and(|d| d > t0 + Duration::from_millis(120)));
    }
}
