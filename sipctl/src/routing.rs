//! Routing strategy rules: where a call goes and whether it is recorded.
//!
//! A [`Router`] holds ordered [`Rule`]s. [`Router::decide`] takes the facts of a new call
//! ([`CallFacts`]: caller, callee, request-URI, headers, time, a sampling value) and the
//! [`Directory`], and returns a [`Decision`]: the target (a DN's contact, a trunk, or a
//! rejection), whether to record, whether recording is critical, and the rule that decided.
//! The first rule whose every condition matches wins; when none does, a callee that is a
//! known DN is called, anything else gets 404.
//!
//! Recording is on when the matching rule says so (`record = true`, thinned by
//! `record-percent`) or when a DN taking part has `record = true` (agent-side recording: the
//! DN the call terminates at, or the DN that places it); `record-critical` comes from that DN.
//! Sans-IO: the time and the sampling value are inputs.
//!
//! Time windows are in the local time of one [`TimeZone`]: an IANA zone such as
//! `Europe/Berlin` (so business hours follow daylight saving time) or a fixed UTC offset.

use jiff::tz::{Offset, TimeZone};
use jiff::Timestamp;

use crate::directory::{Directory, Lookup};

/// Hundredths of a percent: `10_000` = 100 %. Sampling values and thresholds use this unit.
pub const SAMPLE_SCALE: u32 = 10_000;

/// Why a pattern, time window or offset is invalid (the config layer adds the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatternError(pub String);

// ---------------------------------------------------------------------------------------
// Glob patterns

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Lit(char),
    Any,
    Star,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Token {
    fn matches(&self, c: char) -> bool {
        let c = c.to_ascii_lowercase();
        match self {
            Token::Lit(l) => *l == c,
            Token::Any => true,
            Token::Star => false,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

/// A glob pattern matched against the whole text, ASCII case-insensitively: `*` any run
/// of characters, `?` one character, `[0-9]`, `[abc]`, `[!0-9]` one character of (not of)
/// a set, `\x` the character `x` itself. E.g. `+4930*`, `1[0-9][0-9][0-9]`,
/// `sip:*@example.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    tokens: Vec<Token>,
}

impl Glob {
    /// Compiles a pattern; fails on an unclosed `[`, an empty set or a trailing `\`.
    pub fn new(pattern: &str) -> Result<Glob, PatternError> {
        let mut tokens = Vec::new();
        let mut it = pattern.chars().peekable();
        while let Some(c) = it.next() {
            let tok = match c {
                '*' => {
                    if tokens.last() == Some(&Token::Star) {
                        continue;
                    }
                    Token::Star
                }
                '?' => Token::Any,
                '\\' => match it.next() {
                    Some(e) => Token::Lit(e.to_ascii_lowercase()),
                    None => return Err(PatternError("pattern ends with a lone \\".into())),
                },
                '[' => {
                    let negated = matches!(it.peek(), Some('!' | '^'));
                    if negated {
                        it.next();
                    }
                    let mut ranges = Vec::new();
                    let mut closed = false;
                    while let Some(c) = it.next() {
                        if c == ']' && !ranges.is_empty() {
                            closed = true;
                            break;
                        }
                        let lo = c.to_ascii_lowercase();
                        if it.peek() == Some(&'-') {
                            it.next();
                            match it.next() {
                                Some(']') => {
                                    ranges.push((lo, lo));
                                    ranges.push(('-', '-'));
                                    closed = true;
                                    break;
                                }
                                Some(hi) => {
                                    let hi = hi.to_ascii_lowercase();
                                    if hi < lo {
                                        return Err(PatternError(format!(
                                            "range {lo}-{hi} is backwards"
                                        )));
                                    }
                                    ranges.push((lo, hi));
                                }
                                None => break,
                            }
                        } else {
                            ranges.push((lo, lo));
                        }
                    }
                    if !closed {
                        return Err(PatternError("unclosed [ in pattern".into()));
                    }
                    Token::Class { negated, ranges }
                }
                c => Token::Lit(c.to_ascii_lowercase()),
            };
            tokens.push(tok);
        }
        Ok(Glob {
            text: pattern.to_owned(),
            tokens,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the whole of `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        let toks = &self.tokens;
        let (mut p, mut t) = (0usize, 0usize);
        // Position after the last `*` seen and the text position it is trying.
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            if let Some(tok) = toks.get(p) {
                if *tok == Token::Star {
                    star = Some((p + 1, t));
                    p += 1;
                    continue;
                }
                if tok.matches(text[t]) {
                    p += 1;
                    t += 1;
                    continue;
                }
            }
            match star {
                Some((sp, st)) => {
                    p = sp;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            }
        }
        toks[p..].iter().all(|t| *t == Token::Star)
    }
}

/// One or more globs: matches when any of them does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patterns(pub Vec<Glob>);

impl Patterns {
    /// Compiles each pattern.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Patterns, PatternError> {
        if patterns.is_empty() {
            return Err(PatternError(
                "an empty list of patterns never matches".into(),
            ));
        }
        patterns
            .iter()
            .map(|p| Glob::new(p.as_ref()))
            .collect::<Result<_, _>>()
            .map(Patterns)
    }

    /// Whether any pattern matches the whole `text`.
    pub fn matches(&self, text: &str) -> bool {
        self.0.iter().any(|g| g.matches(text))
    }
}

// ---------------------------------------------------------------------------------------
// Time windows

/// Days of the week as a bit set, bit 0 = Monday … bit 6 = Sunday.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Days(pub u8);

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const DAY_FULL_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

impl Days {
    /// Every day.
    pub const ALL: Days = Days(0x7f);

    /// Parses a list of `mon`…`sun` (or full names) and ranges like `mon-fri` or
    /// `fri-mon` (wrapping over the weekend); case-insensitive. `*` means every day.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Days, PatternError> {
        fn day(s: &str) -> Result<u8, PatternError> {
            let l = s.trim().to_ascii_lowercase();
            (0..7u8)
                .find(|&i| l == DAY_NAMES[usize::from(i)] || l == DAY_FULL_NAMES[usize::from(i)])
                .ok_or_else(|| PatternError(format!("{s:?} is not a day of the week")))
        }
        if items.is_empty() {
            return Err(PatternError("an empty list of days never matches".into()));
        }
        let mut bits = 0u8;
        for item in items {
            let item = item.as_ref().trim();
            if item == "*" {
                bits = Days::ALL.0;
                continue;
            }
            match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (day(a)?, day(b)?);
                    let mut d = a;
                    loop {
                        bits |= 1 << d;
                        if d == b {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
                None => bits |= 1 << day(item)?,
            }
        }
        Ok(Days(bits))
    }

    /// Whether day `d` (0 = Monday) is in the set.
    pub fn contains(self, d: u8) -> bool {
        d < 7 && self.0 & (1 << d) != 0
    }
}

/// Parses `HH:MM` into minutes after midnight; `24:00` is allowed (as an end).
fn parse_hhmm(s: &str) -> Result<u16, PatternError> {
    let bad = || PatternError(format!("{s:?} is not a time HH:MM"));
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// Days of the week and a time span within the day, in the wall-clock time of a zone.
/// A span whose end is not after its start runs across midnight (`22:00-06:00`) and
/// belongs to the day it starts on: `fri` + `22:00-06:00` covers Friday 22:00 to Saturday
/// 06:00. The start is included, the end is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    /// The days the window starts on.
    pub days: Days,
    /// Start, minutes after local midnight.
    pub start_min: u16,
    /// End, minutes after local midnight (up to 1440).
    pub end_min: u16,
}

impl TimeWindow {
    /// A window from `days` (see [`Days::parse`]; `None` = every day) and `hours`
    /// (`HH:MM-HH:MM`; `None` = the whole day).
    pub fn parse<S: AsRef<str>>(
        days: Option<&[S]>,
        hours: Option<&str>,
    ) -> Result<TimeWindow, PatternError> {
        let days = match days {
            Some(d) => Days::parse(d)?,
            None => Days::ALL,
        };
        let (start_min, end_min) = match hours {
            None => (0, 1440),
            Some(h) => {
                let (a, b) = h
                    .split_once('-')
                    .ok_or_else(|| PatternError(format!("{h:?} is not HH:MM-HH:MM")))?;
                let (a, b) = (parse_hhmm(a)?, parse_hhmm(b)?);
                if a == b {
                    return Err(PatternError(format!("{h:?} is an empty span")));
                }
                if a == 1440 {
                    return Err(PatternError(format!("{h:?} starts at 24:00")));
                }
                (a, b)
            }
        };
        Ok(TimeWindow {
            days,
            start_min,
            end_min,
        })
    }

    /// Whether the Unix time `unix_s` falls in the window, read as wall-clock time in `zone`.
    /// On the day a zone changes its offset the window still opens and closes at the
    /// written wall-clock times (09:00 stays 09:00 across DST); a wall-clock time the change
    /// skips never happens, one it repeats matches twice.
    pub fn contains(&self, unix_s: u64, zone: &TimeZone) -> bool {
        // Beyond jiff's range (year 9999) nothing is in any window.
        let Ok(ts) = i64::try_from(unix_s)
            .map_err(drop)
            .and_then(|s| Timestamp::from_second(s).map_err(drop))
        else {
            return false;
        };
        let local = zone.to_datetime(ts);
        let weekday = local.weekday().to_monday_zero_offset() as u8;
        let yesterday = (weekday + 6) % 7;
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        if self.start_min < self.end_min {
            self.days.contains(weekday) && self.start_min <= minute && minute < self.end_min
        } else {
            (self.days.contains(weekday) && minute >= self.start_min)
                || (self.days.contains(yesterday) && minute < self.end_min)
        }
    }
}

/// Parses the zone of the time windows: an IANA time zone name (`Europe/Berlin`, looked up
/// in the tz database built into sipctl) or a fixed UTC offset (see [`parse_utc_offset`]).
pub fn parse_time_zone(s: &str) -> Result<TimeZone, PatternError> {
    let t = s.trim();
    if t.starts_with(['+', '-']) || t.eq_ignore_ascii_case("z") || t.eq_ignore_ascii_case("utc") {
        return fixed_zone(parse_utc_offset(t)?);
    }
    TimeZone::get(t).map_err(|_| {
        PatternError(format!(
            "{s:?} is not an IANA time zone like Europe/Berlin nor an offset like +01:00"
        ))
    })
}

/// The zone `minutes` ahead of UTC all year.
pub fn fixed_zone(minutes: i32) -> Result<TimeZone, PatternError> {
    Offset::from_seconds(minutes * 60)
        .map(TimeZone::fixed)
        .map_err(|_| PatternError(format!("{minutes} minutes is not a UTC offset")))
}

/// Parses a UTC offset: `Z`, `UTC`, `+HH:MM`, `-HH:MM` (up to ±14:00). Returns minutes.
pub fn parse_utc_offset(s: &str) -> Result<i32, PatternError> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("z") || t.eq_ignore_ascii_case("utc") {
        return Ok(0);
    }
    let bad = || PatternError(format!("{s:?} is not a UTC offset like +01:00"));
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return Err(bad()),
    };
    let m = i32::from(parse_hhmm(rest).map_err(|_| bad())?);
    if m > 14 * 60 {
        return Err(bad());
    }
    Ok(sign * m)
}

// ---------------------------------------------------------------------------------------
// Rules and decisions

/// Where a rule sends a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleTarget {
    /// The DN named by the callee (404 if it is not one).
    CalledDn,
    /// A fixed DN of the directory.
    Dn(String),
    /// A trunk.
    Trunk {
        /// The trunk's name.
        name: String,
        /// Its SIP URI (`sip:host:port;transport=…`).
        uri: String,
    },
    /// Refuse the call with this SIP status.
    Reject {
        /// 400–699.
        status: u16,
    },
}

/// One routing rule: conditions (all must hold; an absent condition always holds) and
/// what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Name, reported in [`Decision::rule_name`] and in logs.
    pub name: String,
    /// Caller (From user part).
    pub caller: Option<Patterns>,
    /// Callee (request-URI user part).
    pub callee: Option<Patterns>,
    /// The whole request-URI.
    pub ruri: Option<Patterns>,
    /// Header name (matched case-insensitively) and value patterns: each header must be
    /// present with at least one value matching.
    pub headers: Vec<(String, Patterns)>,
    /// When the rule applies.
    pub window: Option<TimeWindow>,
    /// Where the call goes.
    pub target: RuleTarget,
    /// Whether calls matching the rule are recorded …
    pub record: bool,
    /// … for this share of calls, in [`SAMPLE_SCALE`] units (10 000 = all).
    pub record_share: u32,
}

impl Rule {
    /// A rule that matches every call, sends it to the called DN and does not record: set
    /// the fields you need.
    pub fn new(name: impl Into<String>) -> Rule {
        Rule {
            name: name.into(),
            caller: None,
            callee: None,
            ruri: None,
            headers: Vec::new(),
            window: None,
            target: RuleTarget::CalledDn,
            record: false,
            record_share: SAMPLE_SCALE,
        }
    }

    /// Whether every condition holds for `facts`.
    pub fn matches(&self, facts: &CallFacts<'_>, zone: &TimeZone) -> bool {
        let opt = |p: &Option<Patterns>, v: &str| p.as_ref().is_none_or(|p| p.matches(v));
        opt(&self.caller, facts.caller)
            && opt(&self.callee, facts.callee)
            && opt(&self.ruri, facts.ruri)
            && self.headers.iter().all(|(name, pat)| {
                facts
                    .headers
                    .iter()
                    .any(|(n, v)| n.eq_ignore_ascii_case(name) && pat.matches(v))
            })
            && self
                .window
                .is_none_or(|w| w.contains(facts.unix_time, zone))
    }
}

/// What routing knows about a new call.
#[derive(Debug, Clone, Copy)]
pub struct CallFacts<'a> {
    /// Caller: the From URI's user part (`+4930123456`).
    pub caller: &'a str,
    /// Callee: the request-URI's user part (`1001`).
    pub callee: &'a str,
    /// The whole request-URI (`sip:1001@pbx.example.com`).
    pub ruri: &'a str,
    /// The INVITE's headers as (name, value), compact names expanded by the caller.
    pub headers: &'a [(&'a str, &'a str)],
    /// Now, seconds since the Unix epoch.
    pub unix_time: u64,
    /// The sampling value, `0..SAMPLE_SCALE`: random, or [`sample_from_call_id`].
    pub sample: u32,
}

/// A stable sampling value in `0..SAMPLE_SCALE` derived from a call id (FNV-1a), so the
/// same call always gets the same sampling decision.
pub fn sample_from_call_id(call_id: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in call_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(SAMPLE_SCALE)) as u32
}

/// Where a call goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A DN: send the INVITE to `contact`.
    Dn {
        /// The DN.
        dn: String,
        /// Its current contact URI.
        contact: String,
    },
    /// A trunk.
    Trunk {
        /// The trunk's name.
        name: String,
        /// Its SIP URI.
        uri: String,
    },
    /// Refuse the call.
    Reject {
        /// SIP status code.
        status: u16,
        /// Reason phrase.
        reason: String,
    },
}

/// Why a call is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordBy {
    /// The matching routing rule.
    Rule,
    /// The `record = true` of the DN called or calling (agent-side recording).
    Dn,
}

/// The agent of a call: the configured DN on this switch that the call terminates at, or that
/// placed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Agent {
    /// The call comes from this DN (an outbound call of the agent).
    Caller(String),
    /// The call terminates at this DN.
    Callee(String),
}

/// The outcome of routing a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Where the call goes.
    pub target: Target,
    /// Whether to record it from the start.
    pub record: bool,
    /// Who asked for recording (`None` when not recording; the rule wins when both do).
    pub record_by: Option<RecordBy>,
    /// Whether the call must be refused (500) if recording fails (the DN's
    /// `record-critical`; only when `record`).
    pub record_critical: bool,
    /// The rule that matched, `None` for the default.
    pub rule_name: Option<String>,
    /// The agent of the call, if a configured DN takes part.
    pub agent: Option<Agent>,
}

/// The reason phrase of a SIP status code this module produces (generic otherwise).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
        488 => "Not Acceptable Here",
        500 => "Server Internal Error",
        503 => "Service Unavailable",
        603 => "Decline",
        s if s < 500 => "Request Failure",
        s if s < 600 => "Server Failure",
        _ => "Global Failure",
    }
}

fn reject(status: u16) -> Target {
    Target::Reject {
        status,
        reason: reason_phrase(status).to_owned(),
    }
}

/// The routing strategy: ordered rules and the time zone of their time windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Router {
    /// Rules, first match wins.
    pub rules: Vec<Rule>,
    /// The zone whose wall-clock time the rules' windows are written in.
    pub zone: TimeZone,
    /// Where a call goes that rings unanswered too long; `None`: it rings until the caller
    /// gives up.
    pub no_answer: Option<NoAnswer>,
}

impl Default for Router {
    /// No rules, windows in UTC, no no-answer timer.
    fn default() -> Router {
        Router {
            rules: Vec::new(),
            zone: TimeZone::UTC,
            no_answer: None,
        }
    }
}

/// The no-answer timer of calls routed to a party (`routing.no-answer-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoAnswer {
    /// Seconds of ringing before the call moves on.
    pub after_secs: u32,
    /// Where it goes then (never [`RuleTarget::CalledDn`]).
    pub target: RuleTarget,
}

impl Router {
    /// The rule that applies to `facts`, if any.
    pub fn matching_rule(&self, facts: &CallFacts<'_>) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(facts, &self.zone))
    }

    /// Routes a new call (see the module documentation), with GIR's agent-side recording: a
    /// DN with `record = true` is recorded whether it is called or it calls. When both parties
    /// are DNs the callee is the agent, unless only the caller's DN records.
    pub fn decide(&self, facts: &CallFacts<'_>, directory: &Directory) -> Decision {
        let mut d = self.decide_target(facts, directory);
        let callee_dn = match &d.target {
            Target::Dn { dn, .. } => Some(dn.clone()),
            _ => None,
        };
        let refused = matches!(d.target, Target::Reject { .. });
        let caller = directory.get(facts.caller).filter(|_| !refused);
        let callee_records = callee_dn
            .as_deref()
            .and_then(|n| directory.get(n))
            .is_some_and(|dn| dn.record);
        d.agent = match (caller, callee_dn) {
            (Some(c), Some(_)) if c.record && !callee_records => {
                Some(Agent::Caller(c.number.clone()))
            }
            (_, Some(callee)) => Some(Agent::Callee(callee)),
            (Some(c), None) => Some(Agent::Caller(c.number.clone())),
            (None, None) => None,
        };
        if let Some(c) = caller.filter(|c| c.record) {
            if !d.record {
                d.record = true;
                d.record_by = Some(RecordBy::Dn);
                d.record_critical = c.record_critical;
            }
        }
        d
    }

    /// Where a call goes after nobody answered it for [`NoAnswer::after_secs`], as a decision
    /// (recording as for the call itself: `record` keeps what the call had). `None` when no
    /// no-answer target is configured.
    pub fn decide_no_answer(&self, directory: &Directory, unix_time: u64) -> Option<Target> {
        let na = self.no_answer.as_ref()?;
        Some(match &na.target {
            RuleTarget::Trunk { name, uri } => Target::Trunk {
                name: name.clone(),
                uri: uri.clone(),
            },
            RuleTarget::Reject { status } => reject(*status),
            RuleTarget::Dn(dn) => match directory.lookup(dn, unix_time) {
                Lookup::Found { dn, contact, .. } => Target::Dn {
                    dn: dn.number.clone(),
                    contact: contact.to_owned(),
                },
                Lookup::Unknown | Lookup::Unavailable { .. } => reject(480),
            },
            RuleTarget::CalledDn => reject(480),
        })
    }

    /// Where a call goes and whether the rule or the called DN records it.
    fn decide_target(&self, facts: &CallFacts<'_>, directory: &Directory) -> Decision {
        let rule = self.matching_rule(facts);
        let rule_record = rule.is_some_and(|r| r.record && facts.sample < r.record_share);
        let rule_name = rule.map(|r| r.name.clone());
        let dn = match rule.map(|r| &r.target) {
            None | Some(RuleTarget::CalledDn) => facts.callee,
            Some(RuleTarget::Dn(dn)) => dn.as_str(),
            Some(RuleTarget::Trunk { name, uri }) => {
                return Decision {
                    target: Target::Trunk {
                        name: name.clone(),
                        uri: uri.clone(),
                    },
                    record: rule_record,
                    record_by: rule_record.then_some(RecordBy::Rule),
                    record_critical: false,
                    rule_name,
                    agent: None,
                }
            }
            Some(RuleTarget::Reject { status }) => {
                return Decision {
                    target: reject(*status),
                    record: false,
                    record_by: None,
                    record_critical: false,
                    rule_name,
                    agent: None,
                }
            }
        };
        let refused = |status| Decision {
            target: reject(status),
            record: false,
            record_by: None,
            record_critical: false,
            rule_name: rule_name.clone(),
            agent: None,
        };
        match directory.lookup(dn, facts.unix_time) {
            Lookup::Unknown => refused(404),
            Lookup::Unavailable { .. } => refused(480),
            Lookup::Found { dn, contact, .. } => {
                let record = rule_record || dn.record;
                let record_by = if rule_record {
                    Some(RecordBy::Rule)
                } else if dn.record {
                    Some(RecordBy::Dn)
                } else {
                    None
                };
                Decision {
                    target: Target::Dn {
                        dn: dn.number.clone(),
                        contact: contact.to_owned(),
                    },
                    record,
                    record_by,
                    record_critical: record && dn.record_critical,
                    rule_name: rule_name.clone(),
                    agent: None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::DnConfig;

    fn g(p: &str) -> Glob {
        Glob::new(p).expect("valid glob")
    }

    fn pats(p: &[&str]) -> Option<Patterns> {
        Some(Patterns::new(p).expect("valid patterns"))
    }

    fn dn(number: &str, contact: Option<&str>, record: bool, critical: bool) -> DnConfig {
        DnConfig {
            number: number.into(),
            name: None,
            contact: contact.map(Into::into),
            record,
            record_critical: critical,
        }
    }

    fn directory() -> Directory {
        Directory::new(
            vec![
                dn("1001", Some("sip:1001@198.18.0.20:5060"), false, false),
                dn("1002", Some("198.18.0.21:5070"), true, true),
                dn("1003", None, false, false),
            ],
            3600,
        )
        .expect("valid directory")
    }

    // 2026-11-25 is a Wednesday; 09:12:03 UTC.
    const WED_0912: u64 = 1_795_597_923;
    const HOUR: u64 = 3600;

    fn facts(callee: &str) -> CallFacts<'_> {
        CallFacts {
            caller: "+4930123456",
            callee,
            ruri: "sip:1001@pbx.example.com",
            headers: &[],
            unix_time: WED_0912,
            sample: 0,
        }
    }

    #[test]
    fn globs() {
        assert!(g("+4930*").matches("+4930123456"));
        assert!(!g("+4930*").matches("+4940123456"));
        assert!(g("1[0-9][0-9][0-9]").matches("1234"));
        assert!(!g("1[0-9][0-9][0-9]").matches("12345"));
        assert!(g("1[!0]??").matches("1100"));
        assert!(!g("1[!0]??").matches("1000"));
        assert!(g("sip:*@EXAMPLE.com").matches("sip:1001@example.COM"));
        assert!(g("*a*b*c").matches("xxaxxbxxbc"));
        assert!(!g("*a*b*c").matches("xxaxxbxxbcd"));
        assert!(g("*").matches(""));
        assert!(g("").matches(""));
        assert!(!g("").matches("x"));
        assert!(g("\\*1").matches("*1"));
        assert!(!g("\\*1").matches("21"));
        assert!(g("[a-]").matches("-"));
        assert!(g("[]]").matches("]"));
        for bad in ["[0-9", "abc\\", "[9-0]", "["] {
            assert!(Glob::new(bad).is_err(), "{bad}");
        }
        assert!(Patterns::new::<&str>(&[]).is_err());
        let p = Patterns::new(&["1001", "2*"]).expect("valid");
        assert!(p.matches("1001") && p.matches("2999") && !p.matches("1002"));
    }

    #[test]
    fn days_and_offsets() {
        assert_eq!(Days::parse(&["mon-fri"]), Ok(Days(0b001_1111)));
        assert_eq!(Days::parse(&["fri-mon"]), Ok(Days(0b111_0001)));
        assert_eq!(Days::parse(&["Sat", "sunday"]), Ok(Days(0b110_0000)));
        assert_eq!(Days::parse(&["*"]), Ok(Days::ALL));
        assert!(Days::parse(&["mo"]).is_err());
        assert!(Days::parse(&["mondays"]).is_err());
        assert!(Days::parse::<&str>(&[]).is_err());
        assert_eq!(parse_utc_offset("+01:00"), Ok(60));
        assert_eq!(parse_utc_offset("-05:30"), Ok(-330));
        assert_eq!(parse_utc_offset("UTC"), Ok(0));
        assert!(parse_utc_offset("01:00").is_err());
        assert!(parse_utc_offset("+15:00").is_err());
        assert!(TimeWindow::parse(None::<&[&str]>, Some("08:00-08:00")).is_err());
        assert!(TimeWindow::parse(None::<&[&str]>, Some("8-17")).is_err());
        assert!(TimeWindow::parse(None::<&[&str]>, Some("08:00-24:00")).is_ok());
        assert!(TimeWindow::parse(None::<&[&str]>, Some("24:00-08:00")).is_err());
        assert!(TimeWindow::parse(None::<&[&str]>, Some("08:60-09:00")).is_err());
    }

    /// The zone `min` minutes ahead of UTC.
    fn z(min: i32) -> TimeZone {
        fixed_zone(min).expect("offset")
    }

    /// Unix seconds of an RFC 3339 time in UTC.
    fn utc(s: &str) -> u64 {
        let ts: Timestamp = s.parse().expect("timestamp");
        u64::try_from(ts.as_second()).expect("after 1970")
    }

    #[test]
    fn time_zones_parse() {
        assert_eq!(parse_time_zone("+01:00"), Ok(z(60)));
        assert_eq!(parse_time_zone("UTC"), Ok(z(0)));
        let berlin = parse_time_zone(" Europe/Berlin ").expect("bundled tzdb");
        assert_eq!(berlin.iana_name(), Some("Europe/Berlin"));
        assert!(parse_time_zone("Europe/Nowhere").is_err());
        assert!(parse_time_zone("CET+1").is_err());
        assert!(parse_time_zone("+15:00").is_err());
    }

    #[test]
    fn business_hours_follow_dst_in_berlin() {
        // EU rules: 2026-03-29 01:00 UTC clocks go 02:00 CET -> 03:00 CEST,
        // 2026-10-25 01:00 UTC they go 03:00 CEST -> 02:00 CET.
        let berlin = parse_time_zone("Europe/Berlin").expect("bundled tzdb");
        let w = TimeWindow::parse(Some(&["mon-fri"]), Some("09:00-17:00")).expect("valid");
        let cases = [
            // Friday before the spring change: CET, 09:00 local = 08:00 UTC.
            ("2026-03-27T07:59:59Z", false),
            ("2026-03-27T08:00:00Z", true),
            ("2026-03-27T15:59:59Z", true),
            ("2026-03-27T16:00:00Z", false),
            // Sunday of the change: not a weekday.
            ("2026-03-29T08:00:00Z", false),
            // Monday after: CEST, 09:00 local = 07:00 UTC (a fixed +01:00 would say 08:00).
            ("2026-03-30T06:59:59Z", false),
            ("2026-03-30T07:00:00Z", true),
            ("2026-03-30T14:59:59Z", true),
            ("2026-03-30T15:00:00Z", false),
            // Friday before the autumn change: CEST.
            ("2026-10-23T06:59:59Z", false),
            ("2026-10-23T07:00:00Z", true),
            ("2026-10-23T15:00:00Z", false),
            ("2026-10-25T08:00:00Z", false),
            // Monday after: CET again.
            ("2026-10-26T07:00:00Z", false),
            ("2026-10-26T07:59:59Z", false),
            ("2026-10-26T08:00:00Z", true),
            ("2026-10-26T15:59:59Z", true),
            ("2026-10-26T16:00:00Z", false),
        ];
        for (t, inside) in cases {
            assert_eq!(w.contains(utc(t), &berlin), inside, "{t}");
        }
        // The fixed offset of the old configuration drifts by an hour in summer.
        assert!(!w.contains(utc("2026-03-30T07:00:00Z"), &z(60)));
    }

    #[test]
    fn dst_skipped_and_repeated_hours() {
        let berlin = parse_time_zone("Europe/Berlin").expect("bundled tzdb");
        let w = TimeWindow::parse(None::<&[&str]>, Some("02:00-03:00")).expect("valid");
        // 2026-03-29: 02:00-03:00 local does not exist; the instants around it are outside.
        assert!(
            !w.contains(utc("2026-03-29T00:59:59Z"), &berlin),
            "01:59:59 CET"
        );
        assert!(
            !w.contains(utc("2026-03-29T01:00:00Z"), &berlin),
            "03:00:00 CEST"
        );
        assert!(
            w.contains(utc("2026-03-28T01:30:00Z"), &berlin),
            "the day before: 02:30"
        );
        // 2026-10-25: 02:00-03:00 local happens twice, both times inside.
        assert!(
            w.contains(utc("2026-10-25T00:30:00Z"), &berlin),
            "02:30 CEST"
        );
        assert!(
            w.contains(utc("2026-10-25T01:30:00Z"), &berlin),
            "02:30 CET"
        );
        assert!(
            !w.contains(utc("2026-10-25T02:00:00Z"), &berlin),
            "03:00 CET"
        );
        // Beyond jiff's range: never inside, no panic.
        assert!(!w.contains(u64::MAX, &berlin));
    }

    #[test]
    fn time_windows_within_a_day() {
        let w = TimeWindow::parse(Some(&["mon-fri"]), Some("08:00-18:00")).expect("valid");
        assert!(w.contains(WED_0912, &z(0)));
        assert!(!w.contains(WED_0912 + 9 * HOUR, &z(0)), "18:12");
        // +10:00: 19:12 local, outside; -02:00: 07:12, outside; +08:00 17:12 inside.
        assert!(!w.contains(WED_0912, &z(600)));
        assert!(!w.contains(WED_0912, &z(-120)));
        assert!(w.contains(WED_0912, &z(480)));
        // Saturday 09:12.
        assert!(!w.contains(WED_0912 + 3 * 24 * HOUR, &z(0)));
        // Start included, end excluded.
        let start = WED_0912 - 9 * HOUR - 12 * 60 - 3 + 8 * HOUR; // 08:00:00
        assert!(w.contains(start, &z(0)));
        assert!(!w.contains(start - 1, &z(0)));
        assert!(!w.contains(start + 10 * HOUR, &z(0)));
        assert!(w.contains(start + 10 * HOUR - 1, &z(0)));
    }

    #[test]
    fn time_windows_across_midnight() {
        // Friday 22:00 to Saturday 06:00 (local UTC+1).
        let w = TimeWindow::parse(Some(&["fri"]), Some("22:00-06:00")).expect("valid");
        let wed_midnight_utc = WED_0912 - (9 * HOUR + 12 * 60 + 3);
        let fri = wed_midnight_utc + 2 * 24 * HOUR - HOUR; // Friday 00:00 at UTC+1
        assert!(!w.contains(fri + 21 * HOUR + 59 * 60, &z(60)), "fri 21:59");
        assert!(w.contains(fri + 22 * HOUR, &z(60)), "fri 22:00");
        assert!(w.contains(fri + 24 * HOUR, &z(60)), "sat 00:00");
        assert!(w.contains(fri + 29 * HOUR + 59 * 60, &z(60)), "sat 05:59");
        assert!(!w.contains(fri + 30 * HOUR, &z(60)), "sat 06:00");
        assert!(
            !w.contains(fri + 5 * HOUR, &z(60)),
            "fri 05:00 belongs to thursday"
        );
        assert!(!w.contains(fri + 46 * HOUR, &z(60)), "sat 22:00");
        // Without days: every night.
        let w = TimeWindow::parse(None::<&[&str]>, Some("22:00-06:00")).expect("valid");
        assert!(w.contains(fri + 5 * HOUR, &z(60)));
        assert!(!w.contains(fri + 12 * HOUR, &z(60)));
    }

    #[test]
    fn no_rule_routes_to_known_dn_else_404() {
        let r = Router::default();
        let d = r.decide(&facts("1001"), &directory());
        assert_eq!(
            d.target,
            Target::Dn {
                dn: "1001".into(),
                contact: "sip:1001@198.18.0.20:5060".into()
            }
        );
        assert!(!d.record && !d.record_critical);
        assert_eq!(d.rule_name, None);
        let d = r.decide(&facts("9999"), &directory());
        assert_eq!(
            d.target,
            Target::Reject {
                status: 404,
                reason: "Not Found".into()
            }
        );
        // Known but not registered: 480.
        let d = r.decide(&facts("1003"), &directory());
        assert!(matches!(d.target, Target::Reject { status: 480, .. }));
    }

    #[test]
    fn dn_record_and_critical() {
        let d = Router::default().decide(&facts("1002"), &directory());
        assert_eq!(
            d.target,
            Target::Dn {
                dn: "1002".into(),
                contact: "sip:1002@198.18.0.21:5070".into()
            }
        );
        assert!(d.record && d.record_critical);
        assert_eq!(d.record_by, Some(RecordBy::Dn));
    }

    #[test]
    fn each_match_kind() {
        let mut caller = Rule::new("caller");
        caller.caller = pats(&["+4930*"]);
        caller.target = RuleTarget::Reject { status: 403 };
        let mut callee = Rule::new("callee");
        callee.callee = pats(&["1001"]);
        callee.target = RuleTarget::Reject { status: 486 };
        let mut ruri = Rule::new("ruri");
        ruri.ruri = pats(&["sip:*@sales.example.com"]);
        ruri.target = RuleTarget::Reject { status: 603 };
        let mut header = Rule::new("header");
        header.headers = vec![("X-Queue".into(), Patterns::new(&["sales*"]).expect("ok"))];
        header.target = RuleTarget::Reject { status: 503 };
        let dir = directory();
        let status = |rule: &Rule, f: &CallFacts<'_>| {
            let r = Router {
                rules: vec![rule.clone()],
                zone: TimeZone::UTC,
                no_answer: None,
            };
            match r.decide(f, &dir).target {
                Target::Reject { status, .. } => status,
                _ => 0,
            }
        };
        let f = facts("1001");
        assert_eq!(status(&caller, &f), 403);
        assert_eq!(
            status(
                &caller,
                &CallFacts {
                    caller: "+4940",
                    ..f
                }
            ),
            0
        );
        assert_eq!(status(&callee, &f), 486);
        assert_eq!(
            status(
                &callee,
                &CallFacts {
                    callee: "1002",
                    ..f
                }
            ),
            0
        );
        assert_eq!(status(&ruri, &f), 0);
        let sales = CallFacts {
            ruri: "sip:1001@SALES.example.com",
            ..f
        };
        assert_eq!(status(&ruri, &sales), 603);
        assert_eq!(status(&header, &f), 0, "header absent");
        let hs = [("x-queue", "support"), ("X-QUEUE", "Sales-EU")];
        assert_eq!(status(&header, &CallFacts { headers: &hs, ..f }), 503);
        let hs = [("x-queue", "support")];
        assert_eq!(status(&header, &CallFacts { headers: &hs, ..f }), 0);
        let mut window = Rule::new("window");
        window.window = Some(TimeWindow::parse(Some(&["wed"]), Some("09:00-10:00")).expect("ok"));
        window.target = RuleTarget::Reject { status: 480 };
        assert_eq!(status(&window, &f), 480);
        let later = CallFacts {
            unix_time: WED_0912 + HOUR,
            ..f
        };
        assert_eq!(status(&window, &later), 0);
        // All conditions must hold.
        let mut both = callee.clone();
        both.caller = pats(&["+4940*"]);
        assert_eq!(status(&both, &f), 0);
    }

    #[test]
    fn rule_order_first_match_wins() {
        let mut a = Rule::new("first");
        a.callee = pats(&["10*"]);
        a.target = RuleTarget::Trunk {
            name: "pstn".into(),
            uri: "sip:198.18.0.9:5060".into(),
        };
        a.record = true;
        let mut b = Rule::new("second");
        b.callee = pats(&["1001"]);
        b.target = RuleTarget::Reject { status: 403 };
        let r = Router {
            rules: vec![a.clone(), b.clone()],
            zone: TimeZone::UTC,
            no_answer: None,
        };
        let d = r.decide(&facts("1001"), &directory());
        assert_eq!(d.rule_name.as_deref(), Some("first"));
        assert_eq!(
            d.target,
            Target::Trunk {
                name: "pstn".into(),
                uri: "sip:198.18.0.9:5060".into()
            }
        );
        assert!(d.record && !d.record_critical);
        assert_eq!(d.record_by, Some(RecordBy::Rule));
        let r = Router {
            rules: vec![b, a],
            zone: TimeZone::UTC,
            no_answer: None,
        };
        let d = r.decide(&facts("1001"), &directory());
        assert_eq!(d.rule_name.as_deref(), Some("second"));
        assert!(matches!(d.target, Target::Reject { status: 403, .. }));
        assert!(!d.record);
    }

    #[test]
    fn rule_to_fixed_dn_combines_record_flags() {
        let mut r = Rule::new("to-1002");
        r.target = RuleTarget::Dn("1002".into());
        let router = Router {
            rules: vec![r],
            zone: TimeZone::UTC,
            no_answer: None,
        };
        let d = router.decide(&facts("5555"), &directory());
        assert!(matches!(&d.target, Target::Dn { dn, .. } if dn == "1002"));
        // Rule does not record, the DN does: on, critical from the DN.
        assert!(d.record && d.record_critical);
        assert_eq!(d.record_by, Some(RecordBy::Dn));
    }

    #[test]
    fn sampling() {
        let dir = directory();
        let recorded = |percent: u32| {
            let mut r = Rule::new("sample");
            r.record = true;
            r.record_share = percent * 100;
            let router = Router {
                rules: vec![r],
                zone: TimeZone::UTC,
                no_answer: None,
            };
            (0..SAMPLE_SCALE)
                .filter(|&s| {
                    router
                        .decide(
                            &CallFacts {
                                sample: s,
                                ..facts("1001")
                            },
                            &dir,
                        )
                        .record
                })
                .count()
        };
        assert_eq!(recorded(0), 0);
        assert_eq!(recorded(30), 3000);
        assert_eq!(recorded(100), SAMPLE_SCALE as usize);
        // Deterministic per call id, spread roughly evenly.
        assert_eq!(sample_from_call_id("abc@x"), sample_from_call_id("abc@x"));
        let under_30 = (0..10_000)
            .filter(|i| sample_from_call_id(&format!("call-{i}@host")) < 3000)
            .count();
        assert!((2700..3300).contains(&under_30), "{under_30}");
        assert!((0..1000).all(|i| sample_from_call_id(&format!("{i}")) < SAMPLE_SCALE));
    }
}
