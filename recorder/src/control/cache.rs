//! The NG reply cache: a retransmitted request (same source and cookie) gets the reply it
//! got the first time, without being run again (rtpengine's `control_ng.c` cookie cache).
//!
//! Bounded three ways, because every entry is made by a peer: by age ([`CacheLimits::ttl_ns`]),
//! by count ([`CacheLimits::max_entries`]) and by bytes ([`CacheLimits::max_bytes`]: cookies,
//! replies and a fixed per-entry overhead). When a new reply does not fit, the oldest entries
//! go first; a reply larger than the whole byte budget is not cached at all. The key copies
//! only the cookie, which [`linecord_ng::message::split_cookie`] bounds to
//! [`linecord_ng::message::MAX_COOKIE`] bytes. Sans-IO: the caller passes the time.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

/// Bookkeeping bytes counted per entry on top of its cookie and reply: the hash-table slot
/// (72 bytes and a control byte, at 7/8 load), the order-queue slot (48 bytes) and the
/// headers and rounding of the entry's three allocations (~48 bytes); rounded up. The test
/// `overhead_covers_the_layout` checks it against the real sizes.
pub const ENTRY_OVERHEAD: usize = 192;

/// Bounds of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Most bytes of cookies, replies and [`ENTRY_OVERHEAD`] held at once.
    pub max_bytes: usize,
    /// Most entries held at once.
    pub max_entries: usize,
    /// How long a reply is kept, nanoseconds.
    pub ttl_ns: u64,
}

type Key = (SocketAddr, Box<[u8]>);

struct Entry {
    reply: Box<[u8]>,
    at_ns: u64,
}

/// Replies by (source, cookie), oldest first.
pub struct ReplyCache {
    limits: CacheLimits,
    entries: HashMap<Key, Entry>,
    /// Keys in insertion (= time) order; always the same keys as `entries`.
    order: VecDeque<Key>,
    bytes: usize,
}

/// What one entry costs against [`CacheLimits::max_bytes`]: the cookie twice (map key and
/// order queue), the reply, and [`ENTRY_OVERHEAD`].
pub fn entry_cost(cookie: &[u8], reply: &[u8]) -> usize {
    2 * cookie.len() + reply.len() + ENTRY_OVERHEAD
}

impl ReplyCache {
    /// An empty cache.
    pub fn new(limits: CacheLimits) -> Self {
        ReplyCache {
            limits,
            entries: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
        }
    }

    /// The cached reply to `cookie` from `source`, if it is younger than the TTL at `now_ns`.
    pub fn get(&self, source: SocketAddr, cookie: &[u8], now_ns: u64) -> Option<&[u8]> {
        // A borrowed lookup needs the owned key type; cookies are at most 128 bytes.
        let key: Key = (source, cookie.into());
        self.entries
            .get(&key)
            .filter(|e| now_ns.saturating_sub(e.at_ns) < self.limits.ttl_ns)
            .map(|e| &*e.reply)
    }

    /// Caches `reply` for (`source`, `cookie`) at `now_ns`, evicting the oldest entries until
    /// it fits. Returns false (and caches nothing) when the reply alone exceeds the byte
    /// budget. An existing entry for the key is replaced.
    pub fn insert(&mut self, source: SocketAddr, cookie: &[u8], reply: &[u8], now_ns: u64) -> bool {
        let cost = entry_cost(cookie, reply);
        if cost > self.limits.max_bytes || self.limits.max_entries == 0 {
            return false;
        }
        let key: Key = (source, cookie.into());
        if let Some(old) = self.entries.remove(&key) {
            // Not reached from the NG handler (it inserts after a miss); kept correct anyway.
            self.bytes -= entry_cost(cookie, &old.reply);
            self.order.retain(|k| *k != key);
        }
        while self.bytes + cost > self.limits.max_bytes
            || self.entries.len() >= self.limits.max_entries
        {
            if !self.pop_oldest() {
                break;
            }
        }
        self.bytes += cost;
        self.order.push_back(key.clone());
        self.entries.insert(
            key,
            Entry {
                reply: reply.into(),
                at_ns: now_ns,
            },
        );
        true
    }

    /// Drops entries older than the TTL. Call about once a second.
    pub fn expire(&mut self, now_ns: u64) {
        while let Some(front) = self.order.front() {
            let at = self.entries.get(front).map_or(0, |e| e.at_ns);
            if now_ns.saturating_sub(at) < self.limits.ttl_ns {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) -> bool {
        let Some(key) = self.order.pop_front() else {
            return false;
        };
        if let Some(e) = self.entries.remove(&key) {
            self.bytes -= entry_cost(&key.1, &e.reply);
        }
        true
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held, as counted against [`CacheLimits::max_bytes`].
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The bounds.
    pub fn limits(&self) -> CacheLimits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn src(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    fn limits(max_bytes: usize, max_entries: usize) -> CacheLimits {
        CacheLimits {
            max_bytes,
            max_entries,
            ttl_ns: 32 * S,
        }
    }

    /// The bytes the cache holds, recomputed from its contents.
    fn recount(c: &ReplyCache) -> usize {
        c.entries
            .iter()
            .map(|(k, e)| entry_cost(&k.1, &e.reply))
            .sum()
    }

    #[test]
    fn overhead_covers_the_layout() {
        use std::mem::size_of;
        let slot = size_of::<(Key, Entry)>() * 8 / 7 + 1;
        let allocations = 3 * 16;
        assert!(ENTRY_OVERHEAD >= slot + size_of::<Key>() + allocations);
    }

    #[test]
    fn hit_miss_and_ttl() {
        let mut c = ReplyCache::new(limits(1 << 20, 100));
        assert!(c.insert(src(1), b"c1", b"reply-1", 0));
        assert_eq!(c.get(src(1), b"c1", S), Some(&b"reply-1"[..]));
        assert_eq!(
            c.get(src(2), b"c1", S),
            None,
            "the source is part of the key"
        );
        assert_eq!(c.get(src(1), b"c2", S), None);
        assert_eq!(
            c.get(src(1), b"c1", 32 * S),
            None,
            "expired, even before expire()"
        );
        c.expire(31 * S);
        assert_eq!(c.len(), 1);
        c.expire(32 * S);
        assert!(c.is_empty());
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn byte_bound_holds_when_filled_with_big_replies() {
        let max = 1 << 20;
        let mut c = ReplyCache::new(limits(max, 65_536));
        let big = vec![b'r'; 60_000];
        for i in 0..1_000u32 {
            let cookie = format!("cookie-{i}");
            assert!(c.insert(src(5060), cookie.as_bytes(), &big, u64::from(i)));
            assert!(c.bytes() <= max, "{} > {max} after {i}", c.bytes());
            assert_eq!(c.bytes(), recount(&c));
        }
        // About max / 60 KB entries fit; the newest are the ones kept.
        let fit = max / entry_cost(b"cookie-999", &big);
        assert_eq!(c.len(), fit);
        assert!(c.get(src(5060), b"cookie-999", 1_000).is_some());
        assert!(c.get(src(5060), b"cookie-0", 1_000).is_none());
        // Small replies then fill the freed room without passing the bound either.
        for i in 0..10_000u32 {
            c.insert(
                src(1),
                format!("s{i}").as_bytes(),
                b"d6:result4:ponge",
                2_000,
            );
        }
        assert!(c.bytes() <= max);
        assert_eq!(c.bytes(), recount(&c));
    }

    #[test]
    fn entry_bound_holds_too() {
        let mut c = ReplyCache::new(limits(1 << 30, 10));
        for i in 0..100u32 {
            c.insert(src(1), &i.to_be_bytes(), b"x", 0);
            assert!(c.len() <= 10);
        }
        assert!(c.get(src(1), &99u32.to_be_bytes(), 0).is_some());
        assert!(c.get(src(1), &89u32.to_be_bytes(), 0).is_none());
        assert_eq!(c.order.len(), c.entries.len());
    }

    #[test]
    fn a_reply_larger_than_the_budget_is_not_cached() {
        let mut c = ReplyCache::new(limits(10_000, 100));
        assert!(c.insert(src(1), b"small", b"ok", 0));
        assert!(!c.insert(src(1), b"huge", &[0; 10_000], 0));
        assert_eq!(c.len(), 1, "nothing was evicted for it");
        assert!(c.get(src(1), b"huge", 0).is_none());
    }

    #[test]
    fn replacing_a_key_keeps_the_count_exact() {
        let mut c = ReplyCache::new(limits(1 << 20, 100));
        c.insert(src(1), b"k", b"first", 0);
        c.insert(src(1), b"k", b"second, longer", 1);
        assert_eq!(c.len(), 1);
        assert_eq!(c.order.len(), 1);
        assert_eq!(c.get(src(1), b"k", 1), Some(&b"second, longer"[..]));
        assert_eq!(c.bytes(), recount(&c));
    }
}
