//! The call table: what NG `offer`, `answer`, `delete` and the media timeout do to calls,
//! parties and their port pairs, and the `query`/`list`/`statistics` views of it.
//!
//! Sans-IO: every method takes the time as [`Now`]; port numbers come from a [`PortPool`]; the
//! endpoint changes for the packet workers are queued and pulled with
//! [`SessionTable::poll_flow_change`]. Model (as rtpengine's): a call has two parties, each
//! known by its SIP tag; the party whose SDP is being signalled is the *owner* (the from-tag
//! in an offer, the to-tag in an answer). Every media line of the call has one port pair per
//! party: the pair advertised *to* that party, on which the relay receives its packets and
//! from which it sends it the other party's packets.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use std::sync::atomic::Ordering::Relaxed;

use linecord_ng::bencode::Value;
use linecord_ng::echo::quote_str;
use linecord_recfile::{CodecInfo, Event, FileHeader, PartyInfo, StopReason, StreamId, StreamInfo};
use linecord_sdp::{MediaInfo, MediaPorts, RewritePlan, Sdp};

use crate::media::record::{RecordTap, RecordingShared};
use crate::media::{Component, EndpointConfig, Latching, StatsSnapshot, StreamStats};
use crate::ports::{PortError, PortPool};

/// The time, as the caller's clocks read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Now {
    /// Monotonic nanoseconds since the process epoch (same clock the workers use).
    pub mono_ns: u64,
    /// Wall clock, milliseconds since the Unix epoch (only for display).
    pub unix_ms: u64,
}

/// Default of [`TableSettings::max_media_per_call`] (`--max-media-per-call`). A call needs
/// one line per stream: audio, video, a presentation/BFCP pair, T.38 and text come to 5 or 6,
/// and RFC 3264 §8 keeps a removed stream's line (port 0) for the rest of the call, so
/// re-INVITEs that add and drop streams accumulate lines. 16 leaves room for that; at 16
/// lines one call holds 32 port pairs (0.64 % of the default 5 000-pair range), where an
/// unlimited offer could take 96 % of it.
pub const DEFAULT_MAX_MEDIA_PER_CALL: usize = 16;
/// Default of [`TableSettings::max_sdp_size`] (`--max-sdp-size`), bytes: about ten times a
/// carrier's SDP with a full codec list (~1.5 KB), and 1 KB for each of 16 media lines.
pub const DEFAULT_MAX_SDP_SIZE: usize = 16 * 1024;

/// Settings of the table that come from the configuration.
#[derive(Debug, Clone)]
pub struct TableSettings {
    /// Address advertised in rewritten SDP (the media interface).
    pub advertised: IpAddr,
    /// A call with no packets and no signalling for this long is deleted.
    pub media_timeout_ns: u64,
    /// Number of packet workers calls are spread over.
    pub workers: usize,
    /// Most `m=` lines an offer or answer may carry (each takes a port pair per party).
    pub max_media_per_call: usize,
    /// Largest SDP body an offer or answer may carry, bytes.
    pub max_sdp_size: usize,
}

impl Default for TableSettings {
    /// Advertises 127.0.0.1; 60 s media timeout; one worker; the default limits.
    fn default() -> Self {
        TableSettings {
            advertised: IpAddr::from([127, 0, 0, 1]),
            media_timeout_ns: 60_000_000_000,
            workers: 1,
            max_media_per_call: DEFAULT_MAX_MEDIA_PER_CALL,
            max_sdp_size: DEFAULT_MAX_SDP_SIZE,
        }
    }
}

/// Number of `m=` lines in an SDP body, counted without parsing it (lines are LF-terminated,
/// as the SDP parser splits them). Linear in the body.
pub fn count_media_lines(sdp: &[u8]) -> usize {
    sdp.split(|&b| b == b'\n')
        .filter(|line| line.starts_with(b"m="))
        .count()
}

/// A change the packet workers must apply.
#[derive(Debug, Clone)]
pub enum FlowChange {
    /// Add or update an endpoint on `worker`.
    Upsert {
        /// Worker owning the call.
        worker: usize,
        /// The endpoint.
        config: EndpointConfig,
    },
    /// Remove the endpoint on `port` from `worker`.
    Remove {
        /// Worker owning the call.
        worker: usize,
        /// Local port.
        port: u16,
    },
    /// A recording starts: open its file (header) and start it on `worker`.
    RecordingStart {
        /// Worker owning the call.
        worker: usize,
        /// The recording.
        recording: Arc<RecordingShared>,
        /// The file header.
        header: Box<FileHeader>,
        /// Time base of the recording (monotonic ns).
        start_ns: u64,
    },
    /// Pause (`true`) or resume a recording.
    RecordingPause {
        /// Worker owning the call.
        worker: usize,
        /// [`RecordingShared::key`].
        key: u64,
        /// Pause or resume.
        paused: bool,
    },
    /// Write an event into a recording (streams added or changed by a re-INVITE).
    RecordingEvent {
        /// Worker owning the call.
        worker: usize,
        /// [`RecordingShared::key`].
        key: u64,
        /// The event.
        event: Box<linecord_recfile::Event>,
    },
    /// A recording ends.
    RecordingStop {
        /// Worker owning the call.
        worker: usize,
        /// [`RecordingShared::key`].
        key: u64,
        /// Why.
        reason: StopReason,
        /// Per stream: (id, lost, jitter) as the relay measured them.
        net: Vec<(StreamId, i64, u32)>,
    },
}

/// Why an NG request failed. The control core returns these; the NG edge
/// ([`super::ng::NgController`]) turns one into the reply's `error-reason` (its `Display`
/// text, echoed input quoted and bounded) and never the other way round.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NgError {
    /// The datagram is not a bencoded NG message.
    #[error("invalid message: {0}")]
    InvalidMessage(#[from] linecord_ng::message::MessageError),
    /// The message is not a valid request dictionary.
    #[error("invalid request: {0}")]
    InvalidRequest(#[from] linecord_ng::request::RequestError),
    /// A required key is absent or empty.
    #[error("missing key '{0}'")]
    MissingKey(&'static str),
    /// A key the recorder does not implement.
    #[error("unsupported key '{}'", quote_str(.0))]
    UnsupportedKey(String),
    /// A flag the recorder does not implement.
    #[error("unsupported flag '{}'", quote_str(.0))]
    UnsupportedFlag(String),
    /// A `replace` value other than `origin` and `session-connection`.
    #[error("unsupported 'replace' value '{}'", quote_str(.0))]
    UnsupportedReplace(String),
    /// An `ICE` value other than `remove`.
    #[error("unsupported 'ICE' value '{}' (only 'remove': the relay does not do ICE)", quote_str(.0))]
    UnsupportedIce(String),
    /// A `direction` pair naming two interfaces.
    #[error("unsupported 'direction' '{}' -> '{}': the recorder has one media interface", quote_str(.0), quote_str(.1))]
    UnsupportedDirection(String, String),
    /// More than two `direction` entries.
    #[error("invalid 'direction': more than two entries")]
    TooManyDirections,
    /// An address key whose value is not an IP address.
    #[error("invalid address '{}' in '{key}'", quote_str(value))]
    InvalidAddress {
        /// The key.
        key: &'static str,
        /// Its value.
        value: String,
    },
    /// A `list` limit that is not positive.
    #[error("invalid 'limit' {0}")]
    InvalidLimit(i64),
    /// A command the recorder does not implement.
    #[error("unsupported command '{}'", quote_str(.0))]
    UnsupportedCommand(String),
    /// `stop recording` on a call that is not being recorded (also pause).
    #[error("call is not being recorded")]
    NotRecording,
    /// No call with this Call-ID (the text rtpengine sends, which proxies match on).
    #[error("Unknown call-id")]
    UnknownCallId,
    /// More `m=` lines than `max-media-per-call`.
    #[error("too many media lines: {lines} > max-media-per-call {max}")]
    TooManyMedia {
        /// `m=` lines in the SDP.
        lines: usize,
        /// The limit.
        max: usize,
    },
    /// An SDP larger than `max-sdp-size`.
    #[error("SDP too large: {size} bytes > max-sdp-size {max}")]
    SdpTooLarge {
        /// Its size in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The SDP does not parse.
    #[error("bad SDP: {0}")]
    BadSdp(linecord_sdp::SdpError),
    /// A media line over something other than UDP.
    #[error(
        "unsupported media transport '{}' in m={} line {line}",
        quote_str(proto),
        quote_str(kind)
    )]
    UnsupportedTransport {
        /// The `m=` line's protocol.
        proto: String,
        /// Its media kind.
        kind: String,
        /// Its number, from 1.
        line: usize,
    },
    /// No port pair could be allocated.
    #[error("{0}")]
    Ports(#[from] PortError),
    /// The rewritten SDP could not be produced.
    #[error("cannot rewrite SDP: {0}")]
    Rewrite(linecord_sdp::SdpError),
    /// A tag that is not one of the call's two parties.
    #[error("tag '{}' is not a party of this call", quote_str(.0))]
    UnknownTag(String),
}

/// The signalling options of one offer or answer, already validated.
#[derive(Debug, Clone)]
pub struct Negotiation<'a> {
    /// SIP Call-ID.
    pub call_id: &'a str,
    /// Tag of the party whose SDP this is.
    pub owner_tag: &'a str,
    /// Tag of the other party, if known.
    pub other_tag: Option<&'a str>,
    /// True for `answer` (the call must exist).
    pub is_answer: bool,
    /// The party's SDP.
    pub sdp: &'a [u8],
    /// How the party's source address is learned.
    pub latching: Latching,
    /// Use the SDP address even when `received_from` is given (`trust address`).
    pub trust_address: bool,
    /// Source address of the SIP message (`received from`).
    pub received_from: Option<IpAddr>,
    /// Override of the party's media address (`media address`).
    pub media_address: Option<IpAddr>,
    /// Rewrite the o= line (`replace: origin`).
    pub replace_origin: bool,
    /// Label for the owner party.
    pub label: Option<&'a str>,
    /// Call metadata.
    pub metadata: Option<&'a str>,
}

struct PartyMedia {
    rtp_port: u16,
    codecs: Vec<CodecInfo>,
    kind: String,
    proto: String,
    clock_rate: u32,
    rtcp_mux: bool,
    latching: Latching,
    /// Address from signalling (after received-from/media-address rules).
    peer_rtp: Option<SocketAddr>,
    peer_rtcp: Option<SocketAddr>,
    latched_rtp: Option<SocketAddr>,
    latched_rtcp: Option<SocketAddr>,
    rtp: Arc<StreamStats>,
    rtcp: Arc<StreamStats>,
}

impl PartyMedia {
    fn new(rtp_port: u16) -> Self {
        PartyMedia {
            rtp_port,
            codecs: Vec::new(),
            kind: String::from("audio"),
            proto: String::from("RTP/AVP"),
            clock_rate: 8000,
            rtcp_mux: false,
            latching: Latching::Symmetric,
            peer_rtp: None,
            peer_rtcp: None,
            latched_rtp: None,
            latched_rtcp: None,
            rtp: Arc::default(),
            rtcp: Arc::default(),
        }
    }
}

#[derive(Default)]
struct Party {
    tag: Option<String>,
    label: Option<String>,
    medias: Vec<PartyMedia>,
    created_unix_ms: u64,
    /// The party's last SDP as signalled.
    sdp: Vec<u8>,
}

struct Call {
    worker: usize,
    created_unix_ms: u64,
    last_signal_ns: u64,
    last_signal_unix_ms: u64,
    metadata: Option<String>,
    parties: [Party; 2],
    /// The recording in progress.
    recording: Option<CallRecording>,
    /// The last recording that ended (for `query`).
    last_recording: Option<Arc<RecordingShared>>,
}

struct CallRecording {
    shared: Arc<RecordingShared>,
    paused: bool,
}

/// Stream id of (party, media line, component) in a recording: 4 per media line.
fn stream_id(party: usize, media_index: usize, component: Component) -> StreamId {
    (media_index * 4 + party * 2 + usize::from(component == Component::Rtcp)) as StreamId
}

impl Call {
    fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.parties
            .iter()
            .flat_map(|p| p.medias.iter().map(|m| m.rtp_port))
    }

    fn last_activity_ns(&self) -> u64 {
        self.parties
            .iter()
            .flat_map(|p| p.medias.iter())
            .flat_map(|m| [&m.rtp, &m.rtcp])
            .map(|s| s.snapshot().last_packet_ns)
            .fold(self.last_signal_ns, u64::max)
    }
}

/// Totals since start, for `statistics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    /// Calls created.
    pub managed_sessions: u64,
    /// Calls deleted by NG `delete`.
    pub deleted_sessions: u64,
    /// Calls deleted by the media timeout.
    pub timeout_sessions: u64,
    /// Offers refused because no ports were left.
    pub port_exhaustion: u64,
    /// Recordings started.
    pub recordings: u64,
    /// Offers/answers refused by a per-call limit (media lines, SDP size).
    pub limit_rejections: u64,
}

/// The call table. `P` hands out port pairs.
pub struct SessionTable<P> {
    settings: TableSettings,
    pool: P,
    calls: HashMap<String, Call>,
    /// RTP port of any pair → call-id (for latch events), one shared copy per call.
    port_index: HashMap<u16, Arc<str>>,
    changes: VecDeque<FlowChange>,
    next_worker: usize,
    next_recording: u64,
    totals: Totals,
}

fn endpoint_json(addr: Option<SocketAddr>) -> Value {
    let mut d = Value::dict();
    if let Some(a) = addr {
        d.insert("family", if a.is_ipv4() { "IPv4" } else { "IPv6" });
        d.insert("address", a.ip().to_string());
        d.insert("port", u64::from(a.port()));
    }
    d
}

fn stats_json(s: &StatsSnapshot) -> Value {
    let mut d = Value::dict();
    d.insert("packets", s.packets);
    d.insert("bytes", s.bytes);
    d.insert("errors", s.errors);
    d
}

impl<P: PortPool> SessionTable<P> {
    /// An empty table.
    pub fn new(settings: TableSettings, pool: P) -> Self {
        SessionTable {
            settings,
            pool,
            calls: HashMap::new(),
            port_index: HashMap::new(),
            changes: VecDeque::new(),
            next_worker: 0,
            next_recording: 1,
            totals: Totals::default(),
        }
    }

    /// The port pool (the UDP backend takes bound sockets from it).
    pub fn pool_mut(&mut self) -> &mut P {
        &mut self.pool
    }

    /// Next endpoint change for the workers. Call after every request and timeout.
    pub fn poll_flow_change(&mut self) -> Option<FlowChange> {
        self.changes.pop_front()
    }

    /// Number of calls.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether there are no calls.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Totals since start.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// Free port pairs.
    pub fn free_pairs(&self) -> usize {
        self.pool.free_pairs()
    }

    /// Refuses an SDP that exceeds the per-call limits, before anything is parsed or
    /// allocated: first the number of media lines, then the size.
    fn check_limits(&mut self, sdp: &[u8]) -> Result<(), NgError> {
        let max_media = self.settings.max_media_per_call;
        let lines = count_media_lines(sdp);
        let refusal = if lines > max_media {
            NgError::TooManyMedia {
                lines,
                max: max_media,
            }
        } else if sdp.len() > self.settings.max_sdp_size {
            NgError::SdpTooLarge {
                size: sdp.len(),
                max: self.settings.max_sdp_size,
            }
        } else {
            return Ok(());
        };
        self.totals.limit_rejections += 1;
        Err(refusal)
    }

    /// Handles an `offer` or `answer`: returns the rewritten SDP for the other party. An SDP
    /// over [`TableSettings::max_media_per_call`] or [`TableSettings::max_sdp_size`] is
    /// refused before any port is taken.
    pub fn negotiate(&mut self, n: &Negotiation<'_>, now: Now) -> Result<Vec<u8>, NgError> {
        self.check_limits(n.sdp)?;
        let sdp = Sdp::parse(n.sdp).map_err(NgError::BadSdp)?;
        let medias = sdp.medias();
        if medias.len() > self.settings.max_media_per_call {
            // Not reached: the parser finds no m= line the count above missed. Kept so the
            // limit holds whatever the parser accepts.
            self.totals.limit_rejections += 1;
            return Err(NgError::TooManyMedia {
                lines: medias.len(),
                max: self.settings.max_media_per_call,
            });
        }
        if let Some(m) = medias.iter().find(|m| m.port != 0 && !m.is_udp) {
            return Err(NgError::UnsupportedTransport {
                proto: m.proto.clone(),
                kind: m.kind.clone(),
                line: m.index + 1,
            });
        }
        let created = !self.calls.contains_key(n.call_id);
        if created {
            if n.is_answer {
                return Err(NgError::UnknownCallId);
            }
            let worker = self.next_worker % self.settings.workers.max(1);
            self.next_worker = self.next_worker.wrapping_add(1);
            self.calls.insert(
                n.call_id.to_owned(),
                Call {
                    worker,
                    created_unix_ms: now.unix_ms,
                    last_signal_ns: now.mono_ns,
                    last_signal_unix_ms: now.unix_ms,
                    metadata: None,
                    parties: [Party::default(), Party::default()],
                    recording: None,
                    last_recording: None,
                },
            );
            self.totals.managed_sessions += 1;
        }
        let result = self.negotiate_in_call(n, &sdp, &medias, now);
        if result.is_err() && created {
            self.remove_call(n.call_id);
            self.totals.managed_sessions -= 1;
        }
        result
    }

    fn negotiate_in_call(
        &mut self,
        n: &Negotiation<'_>,
        sdp: &Sdp,
        medias: &[MediaInfo],
        now: Now,
    ) -> Result<Vec<u8>, NgError> {
        let call = self
            .calls
            .get_mut(n.call_id)
            .ok_or(NgError::UnknownCallId)?;
        let (owner, other) = resolve_sides(call, n)?;
        let known_medias = call.parties[owner].medias.len();

        // Port pairs for every media line, for both parties.
        let mut fresh = Vec::new();
        for side in [owner, other] {
            while call.parties[side].medias.len() < medias.len() {
                match self.pool.allocate() {
                    Ok(port) => {
                        fresh.push(port);
                        call.parties[side].medias.push(PartyMedia::new(port));
                    }
                    Err(e) => {
                        self.totals.port_exhaustion += 1;
                        for p in &fresh {
                            self.pool.release(*p);
                        }
                        for party in &mut call.parties {
                            party.medias.retain(|m| !fresh.contains(&m.rtp_port));
                        }
                        return Err(NgError::Ports(e));
                    }
                }
            }
        }
        if !fresh.is_empty() {
            let id: Arc<str> = Arc::from(n.call_id);
            for p in fresh {
                self.port_index.insert(p, Arc::clone(&id));
            }
        }

        // The owner's addresses from its SDP.
        for m in medias {
            let pm = &mut call.parties[owner].medias[m.index];
            let (rtp, rtcp) = signalled_peers(m, n);
            pm.kind.clone_from(&m.kind);
            pm.proto.clone_from(&m.proto);
            pm.clock_rate = m.clock_rate();
            pm.rtcp_mux = m.rtcp_mux;
            pm.latching = n.latching;
            pm.peer_rtp = rtp;
            pm.peer_rtcp = rtcp;
            pm.codecs = m
                .codecs
                .iter()
                .map(|c| CodecInfo {
                    payload_type: c.payload_type,
                    name: c.name.clone(),
                    clock_rate: c.clock_rate,
                    channels: c.channels,
                })
                .collect();
        }
        call.parties[owner].sdp = n.sdp.to_vec();
        if let Some(label) = n.label {
            call.parties[owner].label = Some(label.to_owned());
        }
        if call.parties[owner].created_unix_ms == 0 {
            call.parties[owner].created_unix_ms = now.unix_ms;
        }
        if call.parties[other].created_unix_ms == 0 {
            call.parties[other].created_unix_ms = now.unix_ms;
        }
        if let Some(md) = n.metadata {
            call.metadata = Some(md.to_owned());
        }
        call.last_signal_ns = now.mono_ns;
        call.last_signal_unix_ms = now.unix_ms;

        // The other party will send to its own pairs: advertise those.
        let plan = RewritePlan {
            address: self.settings.advertised,
            medias: medias
                .iter()
                .map(|m| {
                    let local = call.parties[other].medias[m.index].rtp_port;
                    (m.port != 0).then_some(MediaPorts {
                        rtp: local,
                        rtcp: local + 1,
                    })
                })
                .collect(),
            replace_origin: n.replace_origin,
            remove_ice: true,
        };
        let out = sdp.rewrite(&plan).map_err(NgError::Rewrite)?;
        if let Some(r) = &call.recording {
            // A re-INVITE during a recording: the file learns about new and changed streams.
            let key = r.shared.key;
            let worker = call.worker;
            let advertised = self.settings.advertised;
            for m in medias {
                let parties: &[usize] = if m.index >= known_medias {
                    &[owner, other]
                } else {
                    &[owner]
                };
                for &p in parties {
                    for c in [Component::Rtp, Component::Rtcp] {
                        let info = stream_info(call, p, m.index, c, advertised);
                        let event = if m.index >= known_medias {
                            Event::StreamAdded(info)
                        } else {
                            Event::StreamChanged(info)
                        };
                        self.changes.push_back(FlowChange::RecordingEvent {
                            worker,
                            key,
                            event: Box::new(event),
                        });
                    }
                }
            }
        }
        self.push_endpoints(n.call_id);
        Ok(out)
    }

    /// Queues the current endpoint configuration of every port of a call.
    fn push_endpoints(&mut self, call_id: &str) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        let worker = call.worker;
        let configs = endpoint_configs(call);
        self.changes.extend(
            configs
                .into_iter()
                .map(|config| FlowChange::Upsert { worker, config }),
        );
    }

    /// Handles `start recording` (and `record call: yes`): starts a recording of the call, or
    /// resumes a paused one; nothing if it is already recording.
    /// `metadata`, when given, replaces the call's metadata (and goes into the file header).
    pub fn start_recording(
        &mut self,
        call_id: &str,
        metadata: Option<&str>,
        now: Now,
    ) -> Result<(), NgError> {
        let key = self.next_recording;
        let settings_adv = self.settings.advertised;
        let call = self.calls.get_mut(call_id).ok_or(NgError::UnknownCallId)?;
        if let Some(md) = metadata {
            call.metadata = Some(md.to_owned());
        }
        let worker = call.worker;
        match &mut call.recording {
            Some(r) if r.paused => {
                r.paused = false;
                let key = r.shared.key;
                self.changes.push_back(FlowChange::RecordingPause {
                    worker,
                    key,
                    paused: false,
                });
                return Ok(());
            }
            Some(_) => return Ok(()),
            None => {}
        }
        self.next_recording += 1;
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            now.unix_ms / 1000,
            (now.unix_ms % 1000) as u32 * 1_000_000,
        );
        let id = uuid::Uuid::new_v7(ts).to_string();
        let shared = Arc::new(RecordingShared::new(key, id.clone()));
        let header = file_header(call, call_id, &id, now, settings_adv);
        call.recording = Some(CallRecording {
            shared: Arc::clone(&shared),
            paused: false,
        });
        self.totals.recordings += 1;
        tracing::info!(call_id = %quote_str(call_id), recording = %id, "recording started");
        self.changes.push_back(FlowChange::RecordingStart {
            worker,
            recording: shared,
            header: Box::new(header),
            start_ns: now.mono_ns,
        });
        self.push_endpoints(call_id);
        Ok(())
    }

    /// Handles `pause recording`.
    pub fn pause_recording(&mut self, call_id: &str) -> Result<(), NgError> {
        let call = self.calls.get_mut(call_id).ok_or(NgError::UnknownCallId)?;
        let worker = call.worker;
        let r = call.recording.as_mut().ok_or(NgError::NotRecording)?;
        if !r.paused {
            r.paused = true;
            let key = r.shared.key;
            self.changes.push_back(FlowChange::RecordingPause {
                worker,
                key,
                paused: true,
            });
        }
        Ok(())
    }

    /// Handles `stop recording` (and the end of a recorded call): the file is finished.
    /// Returns false when the call was not being recorded.
    pub fn stop_recording(&mut self, call_id: &str, reason: StopReason) -> Result<bool, NgError> {
        let call = self.calls.get_mut(call_id).ok_or(NgError::UnknownCallId)?;
        let Some(r) = call.recording.take() else {
            return Ok(false);
        };
        let mut net = Vec::new();
        for (p, party) in call.parties.iter().enumerate() {
            for (i, m) in party.medias.iter().enumerate() {
                let s = m.rtp.snapshot();
                net.push((stream_id(p, i, Component::Rtp), s.lost, s.jitter));
            }
        }
        tracing::info!(
            call_id = %quote_str(call_id),
            recording = %r.shared.id,
            ?reason,
            "recording stopped"
        );
        self.changes.push_back(FlowChange::RecordingStop {
            worker: call.worker,
            key: r.shared.key,
            reason,
            net,
        });
        call.last_recording = Some(r.shared);
        self.push_endpoints(call_id);
        Ok(true)
    }

    fn remove_call(&mut self, call_id: &str) -> Option<Call> {
        let call = self.calls.remove(call_id)?;
        for port in call.ports() {
            for p in [port, port + 1] {
                self.changes.push_back(FlowChange::Remove {
                    worker: call.worker,
                    port: p,
                });
            }
            self.port_index.remove(&port);
            self.pool.release(port);
        }
        Some(call)
    }

    /// Handles `delete`: removes the call and returns its final `query` view.
    pub fn delete(&mut self, call_id: &str, now: Now) -> Result<Value, NgError> {
        self.stop_recording(call_id, StopReason::Deleted)?;
        let view = self.query(call_id, now)?;
        self.remove_call(call_id);
        self.totals.deleted_sessions += 1;
        Ok(view)
    }

    /// Records an address a worker latched onto (for `query`).
    pub fn handle_latched(&mut self, port: u16, addr: SocketAddr) {
        let rtp_port = port & !1;
        let Some(call) = self
            .port_index
            .get(&rtp_port)
            .and_then(|id| self.calls.get_mut(&**id))
        else {
            return;
        };
        for m in call.parties.iter_mut().flat_map(|p| p.medias.iter_mut()) {
            if m.rtp_port == rtp_port {
                if port == rtp_port {
                    m.latched_rtp = Some(addr);
                } else {
                    m.latched_rtcp = Some(addr);
                }
            }
        }
    }

    /// Deletes calls idle past the media timeout; returns how many. Call about once a second.
    pub fn handle_timeout(&mut self, now: Now) -> usize {
        let limit = self.settings.media_timeout_ns;
        let idle: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, c)| now.mono_ns.saturating_sub(c.last_activity_ns()) > limit)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &idle {
            tracing::info!(call_id = %quote_str(id), "media timeout: deleting call");
            let _ = self.stop_recording(id, StopReason::Timeout);
            self.remove_call(id);
            self.totals.timeout_sessions += 1;
        }
        idle.len()
    }

    /// Stops every recording (shutdown). Returns how many.
    pub fn stop_all_recordings(&mut self) -> usize {
        let ids: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, c)| c.recording.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            let _ = self.stop_recording(id, StopReason::Shutdown);
        }
        ids.len()
    }

    /// Call-ids, at most `limit`.
    pub fn list(&self, limit: usize) -> Vec<String> {
        let mut ids: Vec<String> = self.calls.keys().take(limit).cloned().collect();
        ids.sort();
        ids
    }

    /// The `query` reply body for a call, in rtpengine's shape: `created`, `last signal`,
    /// `tags` → tag → `medias` → `streams` (endpoint, local port, stats), and `totals`.
    pub fn query(&self, call_id: &str, now: Now) -> Result<Value, NgError> {
        let call = self.calls.get(call_id).ok_or(NgError::UnknownCallId)?;
        let unix_of = |mono: u64| -> u64 {
            if mono == 0 {
                0
            } else {
                now.unix_ms
                    .saturating_sub(now.mono_ns.saturating_sub(mono) / 1_000_000)
                    / 1000
            }
        };
        let mut totals_rtp = StatsSnapshot::default();
        let mut totals_rtcp = StatsSnapshot::default();
        let mut tags = Value::dict();
        for (i, party) in call.parties.iter().enumerate() {
            let Some(tag) = &party.tag else { continue };
            let mut t = Value::dict();
            t.insert("tag", tag.as_str());
            if let Some(l) = &party.label {
                t.insert("label", l.as_str());
            }
            t.insert("created", party.created_unix_ms / 1000);
            if let Some(other) = &call.parties[1 - i].tag {
                t.insert("in dialogue with", other.as_str());
            }
            let mut medias = Vec::new();
            for (index, m) in party.medias.iter().enumerate() {
                let mut streams = Vec::new();
                for (component, stats, peer, latched) in [
                    (Component::Rtp, &m.rtp, m.peer_rtp, m.latched_rtp),
                    (Component::Rtcp, &m.rtcp, m.peer_rtcp, m.latched_rtcp),
                ] {
                    let s = stats.snapshot();
                    let total = if component == Component::Rtp {
                        &mut totals_rtp
                    } else {
                        &mut totals_rtcp
                    };
                    total.packets += s.packets;
                    total.bytes += s.bytes;
                    total.errors += s.errors;
                    let mut st = Value::dict();
                    let port = m.rtp_port + u16::from(component == Component::Rtcp);
                    st.insert("local port", u64::from(port));
                    st.insert(
                        "local address",
                        self.settings.advertised.to_string().as_str(),
                    );
                    st.insert("endpoint", endpoint_json(latched.or(peer)));
                    st.insert("advertised endpoint", endpoint_json(peer));
                    st.insert("last packet", unix_of(s.last_packet_ns));
                    st.insert("stats", stats_json(&s));
                    let mut flags = vec![Value::from(if component == Component::Rtp {
                        "RTP"
                    } else {
                        "RTCP"
                    })];
                    if latched.is_some() {
                        flags.push(Value::from("confirmed"));
                    }
                    if m.rtcp_mux && component == Component::Rtp {
                        flags.push(Value::from("RTCP-mux"));
                    }
                    st.insert("flags", flags);
                    if component == Component::Rtp {
                        st.insert("SSRC", u64::from(s.ssrc));
                        st.insert("lost", s.lost);
                        st.insert("jitter", u64::from(s.jitter));
                    }
                    streams.push(st);
                }
                let mut md = Value::dict();
                md.insert("index", (index + 1) as u64);
                md.insert("type", m.kind.as_str());
                md.insert("protocol", m.proto.as_str());
                md.insert("streams", streams);
                medias.push(md);
            }
            t.insert("medias", medias);
            tags.insert(tag, t);
        }
        let mut totals = Value::dict();
        totals.insert("RTP", stats_json(&totals_rtp));
        totals.insert("RTCP", stats_json(&totals_rtcp));
        let mut reply = Value::dict();
        reply.insert("result", "ok");
        reply.insert("created", call.created_unix_ms / 1000);
        reply.insert("created_us", call.created_unix_ms * 1000);
        reply.insert("last signal", call.last_signal_unix_ms / 1000);
        if let Some(md) = &call.metadata {
            reply.insert("metadata", md.as_str());
        }
        reply.insert("tags", tags);
        reply.insert("totals", totals);
        reply.insert("recording", recording_json(call));
        Ok(reply)
    }
}

/// `query`'s view of the call's recording: `state` is `off`, `recording`, `paused`,
/// `stopped` (the last one ended and its file was finished or is being finished) or `failed`
/// (with `reason`: why the writer failed it).
fn recording_json(call: &Call) -> Value {
    let mut d = Value::dict();
    let (shared, state) = match (&call.recording, &call.last_recording) {
        (Some(r), _) => (
            Some(&r.shared),
            if r.shared.failed.load(Relaxed) {
                "failed"
            } else if r.paused {
                "paused"
            } else {
                "recording"
            },
        ),
        (None, Some(last)) => (
            Some(last),
            if last.failed.load(Relaxed) {
                "failed"
            } else {
                "stopped"
            },
        ),
        (None, None) => (None, "off"),
    };
    d.insert("state", state);
    if let Some(s) = shared {
        d.insert("id", s.id.as_str());
        d.insert("packets", s.packets.load(Relaxed));
        d.insert("dropped", s.dropped.load(Relaxed));
        let complete = !s.failed.load(Relaxed) && s.dropped.load(Relaxed) == 0;
        d.insert("complete", if complete { "yes" } else { "no" });
        // Why the writer failed it (disk full, not started for lack of space, …).
        if let Some(reason) = s.error.get() {
            d.insert("reason", reason.as_str());
        }
    }
    d
}

/// The recording's description of party `p`'s stream on media line `i`.
fn stream_info(call: &Call, p: usize, i: usize, c: Component, advertised: IpAddr) -> StreamInfo {
    let m = &call.parties[p].medias[i];
    let (peer, port) = match c {
        Component::Rtp => (m.peer_rtp, m.rtp_port),
        Component::Rtcp => (m.peer_rtcp, m.rtp_port + 1),
    };
    StreamInfo {
        id: stream_id(p, i, c),
        party: p as u8,
        media_index: i as u16,
        component: match c {
            Component::Rtp => linecord_recfile::Component::Rtp,
            Component::Rtcp => linecord_recfile::Component::Rtcp,
        },
        source: peer.map(|a| a.to_string()).unwrap_or_default(),
        destination: SocketAddr::new(advertised, port).to_string(),
        codecs: m.codecs.clone(),
    }
}

/// The header of a new recording of `call`.
fn file_header(call: &Call, call_id: &str, id: &str, now: Now, advertised: IpAddr) -> FileHeader {
    let mut streams = Vec::new();
    for (p, party) in call.parties.iter().enumerate() {
        for i in 0..party.medias.len() {
            for c in [Component::Rtp, Component::Rtcp] {
                streams.push(stream_info(call, p, i, c, advertised));
            }
        }
    }
    FileHeader {
        recording_id: id.to_owned(),
        call_id: call_id.to_owned(),
        start_unix_ms: now.unix_ms,
        metadata: call.metadata.clone(),
        parties: call
            .parties
            .iter()
            .map(|p| PartyInfo {
                tag: p.tag.clone().unwrap_or_default(),
                label: p.label.clone(),
                sdp: p.sdp.clone(),
            })
            .collect(),
        streams,
    }
}

/// Which party owns the SDP and which receives it (see the module doc), assigning tags the
/// call has not seen yet.
fn resolve_sides(call: &mut Call, n: &Negotiation<'_>) -> Result<(usize, usize), NgError> {
    let tag_of = |call: &Call, i: usize| call.parties[i].tag.clone();
    let owner = if tag_of(call, 0).is_none() {
        call.parties[0].tag = Some(n.owner_tag.to_owned());
        0
    } else if tag_of(call, 0).as_deref() == Some(n.owner_tag) {
        0
    } else if tag_of(call, 1).as_deref() == Some(n.owner_tag) {
        1
    } else if tag_of(call, 1).is_none() || n.is_answer {
        // First answer, or a different branch answering (the last answer wins).
        call.parties[1].tag = Some(n.owner_tag.to_owned());
        1
    } else {
        return Err(NgError::UnknownTag(n.owner_tag.to_owned()));
    };
    let other = 1 - owner;
    match (n.other_tag, tag_of(call, other)) {
        (Some(t), None) => call.parties[other].tag = Some(t.to_owned()),
        (Some(t), Some(known)) if t != known => return Err(NgError::UnknownTag(t.to_owned())),
        _ => {}
    }
    Ok((owner, other))
}

/// The party's RTP and RTCP addresses from its SDP media line and the signalling keys.
fn signalled_peers(m: &MediaInfo, n: &Negotiation<'_>) -> (Option<SocketAddr>, Option<SocketAddr>) {
    if m.port == 0 {
        return (None, None);
    }
    let sdp_ip = m.address;
    let ip = n
        .media_address
        .or(if n.trust_address {
            None
        } else {
            n.received_from
        })
        .or(sdp_ip);
    let Some(ip) = ip.filter(|ip| !ip.is_unspecified()) else {
        return (None, None);
    };
    let rtp = SocketAddr::new(ip, m.port);
    let rtcp = if m.rtcp_mux {
        rtp
    } else {
        let rtcp_ip = match m.rtcp_address {
            Some(a)
                if n.media_address.is_none() && (n.trust_address || n.received_from.is_none()) =>
            {
                a
            }
            _ => ip,
        };
        SocketAddr::new(rtcp_ip, m.rtcp_port.unwrap_or(m.port.wrapping_add(1)))
    };
    (Some(rtp), Some(rtcp))
}

/// The four endpoints (RTP and RTCP of each party) of every media line of `call`.
fn endpoint_configs(call: &Call) -> Vec<EndpointConfig> {
    let mut out = Vec::new();
    let recording = call.recording.as_ref().map(|r| r.shared.key);
    let tap = |p: usize, i: usize, c: Component| {
        recording.map(|key| RecordTap {
            recording: key,
            stream: stream_id(p, i, c),
        })
    };
    for (p, party) in call.parties.iter().enumerate() {
        let other = &call.parties[1 - p];
        for (i, m) in party.medias.iter().enumerate() {
            let fwd = other.medias.get(i).map(|o| o.rtp_port);
            out.push(EndpointConfig {
                port: m.rtp_port,
                component: Component::Rtp,
                peer: m.peer_rtp,
                latching: m.latching,
                forward_port: fwd,
                clock_rate: m.clock_rate,
                stats: Arc::clone(&m.rtp),
                record: tap(p, i, Component::Rtp),
                dtmf_payload_type: m
                    .codecs
                    .iter()
                    .find(|c| c.name.eq_ignore_ascii_case("telephone-event"))
                    .map(|c| c.payload_type),
            });
            out.push(EndpointConfig {
                port: m.rtp_port + 1,
                component: Component::Rtcp,
                peer: m.peer_rtcp,
                latching: m.latching,
                forward_port: fwd.map(|p| p + 1),
                clock_rate: m.clock_rate,
                stats: Arc::clone(&m.rtcp),
                record: tap(p, i, Component::Rtcp),
                dtmf_payload_type: None,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::PortRange;

    const RELAY: &str = "198.18.0.1";

    fn table() -> SessionTable<PortRange> {
        SessionTable::new(
            TableSettings {
                advertised: RELAY.parse().unwrap(),
                media_timeout_ns: 60_000_000_000,
                workers: 2,
                ..TableSettings::default()
            },
            PortRange::new(30_000, 30_099),
        )
    }

    fn sdp(ip: &str, port: u16) -> Vec<u8> {
        format!(
            "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
        )
        .into_bytes()
    }

    fn neg<'a>(
        call: &'a str,
        owner: &'a str,
        other: Option<&'a str>,
        answer: bool,
        sdp: &'a [u8],
    ) -> Negotiation<'a> {
        Negotiation {
            call_id: call,
            owner_tag: owner,
            other_tag: other,
            is_answer: answer,
            sdp,
            latching: Latching::Symmetric,
            trust_address: false,
            received_from: None,
            media_address: None,
            replace_origin: false,
            label: None,
            metadata: None,
        }
    }

    fn media(out: &[u8]) -> MediaInfo {
        Sdp::parse(out).unwrap().medias().remove(0)
    }

    fn drain(t: &mut SessionTable<PortRange>) -> Vec<FlowChange> {
        std::iter::from_fn(|| t.poll_flow_change()).collect()
    }

    fn at(s: u64) -> Now {
        Now {
            mono_ns: s * 1_000_000_000,
            unix_ms: 1_700_000_000_000 + s * 1000,
        }
    }

    #[test]
    fn media_lines_are_counted_as_the_parser_splits_lines() {
        assert_eq!(
            count_media_lines(b"v=0\r\nm=audio 1 RTP/AVP 0\r\nm=video 2 RTP/AVP 96\r\n"),
            2
        );
        assert_eq!(
            count_media_lines(b"m=audio 1 RTP/AVP 0\nm=audio 2 RTP/AVP 0"),
            2
        );
        assert_eq!(
            count_media_lines(b"a=x m=audio\r\nam=audio\r\n m=audio\r\n"),
            0
        );
        assert_eq!(count_media_lines(b""), 0);
        let s = sdp("192.0.2.1", 4000);
        assert_eq!(
            count_media_lines(&s),
            Sdp::parse(&s).unwrap().medias().len()
        );
    }

    #[test]
    fn limits_are_checked_before_any_port_is_taken() {
        let mut t = SessionTable::new(
            TableSettings {
                max_media_per_call: 2,
                max_sdp_size: 1024,
                ..TableSettings::default()
            },
            PortRange::new(30_000, 30_099),
        );
        let free = t.free_pairs();
        let three = format!(
            "{}m=audio 4002 RTP/AVP 0\r\nm=audio 4004 RTP/AVP 0\r\n",
            String::from_utf8(sdp("192.0.2.1", 4000)).unwrap()
        );
        let e = t
            .negotiate(&neg("c1", "A", None, false, three.as_bytes()), at(1))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "too many media lines: 3 > max-media-per-call 2"
        );
        let mut big = sdp("192.0.2.1", 4000);
        big.extend(b"a=x-pad\r\n".repeat(200));
        let e = t
            .negotiate(&neg("c1", "A", None, false, &big), at(1))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("SDP too large: {} bytes > max-sdp-size 1024", big.len())
        );
        assert_eq!((t.free_pairs(), t.len()), (free, 0));
        assert!(drain(&mut t).is_empty(), "no endpoint was announced");
        assert_eq!(t.totals().limit_rejections, 2);
        t.negotiate(&neg("c1", "A", None, false, &sdp("192.0.2.1", 4000)), at(1))
            .unwrap();
        assert_eq!(t.free_pairs(), free - 2);
    }

    #[test]
    fn offer_answer_wires_both_parties() {
        let mut t = table();
        let a_sdp = sdp("192.0.2.10", 4000);
        let to_b = t
            .negotiate(&neg("c1", "A", None, false, &a_sdp), at(1))
            .unwrap();
        let m_b = media(&to_b);
        assert_eq!(m_b.address, Some(RELAY.parse().unwrap()));
        let b_sdp = sdp("198.51.100.20", 5000);
        let to_a = t
            .negotiate(&neg("c1", "B", Some("A"), true, &b_sdp), at(2))
            .unwrap();
        let m_a = media(&to_a);
        assert_ne!(m_a.port, m_b.port);
        // Codecs are kept as offered.
        assert_eq!(m_a.formats, vec!["0", "101"]);

        let ups: Vec<EndpointConfig> = drain(&mut t)
            .into_iter()
            .filter_map(|c| match c {
                FlowChange::Upsert { config, .. } => Some(config),
                _ => None,
            })
            .collect();
        let last = |port: u16| ups.iter().rev().find(|c| c.port == port).unwrap().clone();
        // A sends to m_a.port; its packets leave from m_b.port to B.
        let a_ep = last(m_a.port);
        assert_eq!(a_ep.peer, Some("192.0.2.10:4000".parse().unwrap()));
        assert_eq!(a_ep.forward_port, Some(m_b.port));
        let b_ep = last(m_b.port);
        assert_eq!(b_ep.peer, Some("198.51.100.20:5000".parse().unwrap()));
        assert_eq!(b_ep.forward_port, Some(m_a.port));
        let b_rtcp = last(m_b.port + 1);
        assert_eq!(b_rtcp.component, Component::Rtcp);
        assert_eq!(b_rtcp.peer, Some("198.51.100.20:5001".parse().unwrap()));
        assert_eq!(b_rtcp.forward_port, Some(m_a.port + 1));
    }

    #[test]
    fn reoffer_keeps_ports_and_updates_address() {
        let mut t = table();
        let first = t
            .negotiate(
                &neg("c1", "A", None, false, &sdp("192.0.2.10", 4000)),
                at(1),
            )
            .unwrap();
        let free = t.free_pairs();
        let again = t
            .negotiate(
                &neg("c1", "A", None, false, &sdp("192.0.2.99", 4400)),
                at(2),
            )
            .unwrap();
        assert_eq!(media(&first).port, media(&again).port);
        assert_eq!(t.free_pairs(), free);
        let ups = drain(&mut t);
        let a_peer = ups.iter().rev().find_map(|c| match c {
            FlowChange::Upsert { config, .. }
                if config.peer.is_some() && config.component == Component::Rtp =>
            {
                config.peer
            }
            _ => None,
        });
        assert_eq!(a_peer, Some("192.0.2.99:4400".parse().unwrap()));
    }

    #[test]
    fn reinvite_from_callee_uses_tags_not_roles() {
        let mut t = table();
        let to_b = t
            .negotiate(
                &neg("c1", "A", None, false, &sdp("192.0.2.10", 4000)),
                at(1),
            )
            .unwrap();
        let to_a = t
            .negotiate(
                &neg("c1", "B", Some("A"), true, &sdp("198.51.100.20", 5000)),
                at(1),
            )
            .unwrap();
        // B re-INVITEs: offer from-tag B; the SDP for A carries A's ports.
        let to_a2 = t
            .negotiate(
                &neg("c1", "B", Some("A"), false, &sdp("198.51.100.21", 5002)),
                at(2),
            )
            .unwrap();
        assert_eq!(media(&to_a).port, media(&to_a2).port);
        let to_b2 = t
            .negotiate(
                &neg("c1", "A", Some("B"), true, &sdp("192.0.2.10", 4000)),
                at(2),
            )
            .unwrap();
        assert_eq!(media(&to_b).port, media(&to_b2).port);
        // A third tag is not a party.
        let e = t
            .negotiate(
                &neg("c1", "C", Some("A"), false, &sdp("192.0.2.1", 1)),
                at(3),
            )
            .unwrap_err();
        assert!(e.to_string().contains("'C'"));
    }

    #[test]
    fn received_from_and_media_address_rules() {
        let mut t = table();
        let s = sdp("10.0.0.5", 4000);
        let mut n = neg("c1", "A", None, false, &s);
        n.received_from = Some("203.0.113.9".parse().unwrap());
        t.negotiate(&n, at(1)).unwrap();
        let peer_of = |t: &mut SessionTable<PortRange>| {
            drain(t).into_iter().find_map(|c| match c {
                FlowChange::Upsert { config, .. } if config.peer.is_some() => config.peer,
                _ => None,
            })
        };
        assert_eq!(peer_of(&mut t), Some("203.0.113.9:4000".parse().unwrap()));
        n.trust_address = true;
        t.negotiate(&n, at(1)).unwrap();
        assert_eq!(peer_of(&mut t), Some("10.0.0.5:4000".parse().unwrap()));
        n.media_address = Some("192.0.2.55".parse().unwrap());
        t.negotiate(&n, at(1)).unwrap();
        assert_eq!(peer_of(&mut t), Some("192.0.2.55:4000".parse().unwrap()));
    }

    #[test]
    fn hold_address_means_no_destination() {
        let mut t = table();
        t.negotiate(&neg("c1", "A", None, false, &sdp("0.0.0.0", 4000)), at(1))
            .unwrap();
        assert!(drain(&mut t)
            .iter()
            .all(|c| matches!(c, FlowChange::Upsert { config, .. } if config.peer.is_none())));
    }

    #[test]
    fn answer_for_unknown_call_and_bad_sdp_leave_nothing_behind() {
        let mut t = table();
        let free = t.free_pairs();
        let e = t
            .negotiate(
                &neg("nope", "B", Some("A"), true, &sdp("192.0.2.1", 4000)),
                at(1),
            )
            .unwrap_err();
        assert_eq!(e.to_string(), "Unknown call-id");
        let e = t
            .negotiate(&neg("c2", "A", None, false, b"garbage"), at(1))
            .unwrap_err();
        assert!(e.to_string().starts_with("bad SDP"));
        let tcp = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 TCP/RTP/AVP 0\r\n";
        let e = t
            .negotiate(&neg("c3", "A", None, false, tcp), at(1))
            .unwrap_err();
        assert!(e.to_string().contains("TCP/RTP/AVP"), "{}", e.to_string());
        assert!(t.is_empty());
        assert_eq!(t.free_pairs(), free);
    }

    #[test]
    fn exhaustion_rolls_back_the_partial_call() {
        let mut t = SessionTable::new(
            TableSettings {
                advertised: RELAY.parse().unwrap(),
                media_timeout_ns: 1,
                workers: 1,
                ..TableSettings::default()
            },
            PortRange::new(30_000, 30_005), // 3 pairs: one call (2) + half of another
        );
        t.negotiate(&neg("c1", "A", None, false, &sdp("192.0.2.1", 4000)), at(1))
            .unwrap();
        let e = t
            .negotiate(&neg("c2", "A", None, false, &sdp("192.0.2.1", 4000)), at(1))
            .unwrap_err();
        assert!(e.to_string().contains("ports"));
        assert_eq!(t.free_pairs(), 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.totals().port_exhaustion, 1);
    }

    #[test]
    fn delete_frees_ports_and_removes_endpoints() {
        let mut t = table();
        let free = t.free_pairs();
        t.negotiate(&neg("c1", "A", None, false, &sdp("192.0.2.1", 4000)), at(1))
            .unwrap();
        drain(&mut t);
        let view = t.delete("c1", at(2)).unwrap();
        assert_eq!(view.get("result").and_then(Value::as_str), Some("ok"));
        let removed = drain(&mut t)
            .into_iter()
            .filter(|c| matches!(c, FlowChange::Remove { .. }))
            .count();
        assert_eq!(removed, 4);
        assert_eq!(t.free_pairs(), free);
        assert!(t.delete("c1", at(2)).is_err());
    }

    #[test]
    fn media_timeout_counts_packets_as_activity() {
        let mut t = table();
        t.negotiate(
            &neg("busy", "A", None, false, &sdp("192.0.2.1", 4000)),
            at(0),
        )
        .unwrap();
        t.negotiate(
            &neg("idle", "A", None, false, &sdp("192.0.2.1", 4000)),
            at(0),
        )
        .unwrap();
        let busy_stats = drain(&mut t)
            .into_iter()
            .find_map(|c| match c {
                FlowChange::Upsert { config, .. }
                    if t.port_index.get(&(config.port & !1)).map(|id| &**id) == Some("busy") =>
                {
                    Some(config.stats)
                }
                _ => None,
            })
            .unwrap();
        busy_stats.count_packet(100, at(50).mono_ns);
        assert_eq!(t.handle_timeout(at(59)), 0);
        assert_eq!(t.handle_timeout(at(61)), 1);
        assert_eq!(t.list(10), vec!["busy".to_string()]);
        assert_eq!(t.handle_timeout(at(111)), 1);
        assert_eq!(t.totals().timeout_sessions, 2);
    }

    #[test]
    fn query_shape_follows_rtpengine() {
        let mut t = table();
        let mut n = neg("c1", "A", None, false, &[]);
        let s = sdp("192.0.2.10", 4000);
        n.sdp = &s;
        n.label = Some("caller");
        n.metadata = Some("agent=1001");
        t.negotiate(&n, at(1)).unwrap();
        t.negotiate(
            &neg("c1", "B", Some("A"), true, &sdp("198.51.100.20", 5000)),
            at(2),
        )
        .unwrap();
        let a_port = drain(&mut t)
            .iter()
            .find_map(|c| match c {
                FlowChange::Upsert { config, .. }
                    if config.peer == Some("192.0.2.10:4000".parse().unwrap()) =>
                {
                    Some(config.port)
                }
                _ => None,
            })
            .unwrap();
        t.handle_latched(a_port, "203.0.113.1:4000".parse().unwrap());
        let q = t.query("c1", at(3)).unwrap();
        assert_eq!(
            q.get("metadata").and_then(Value::as_str),
            Some("agent=1001")
        );
        assert_eq!(
            q.get("created").and_then(Value::as_int),
            Some(1_700_000_001)
        );
        let a = q.get("tags").and_then(|t| t.get("A")).unwrap();
        assert_eq!(a.get("label").and_then(Value::as_str), Some("caller"));
        assert_eq!(a.get("in dialogue with").and_then(Value::as_str), Some("B"));
        let streams = a.get("medias").and_then(Value::as_list).unwrap()[0]
            .get("streams")
            .and_then(Value::as_list)
            .unwrap();
        assert_eq!(streams.len(), 2);
        let ep = streams[0].get("endpoint").unwrap();
        assert_eq!(
            ep.get("address").and_then(Value::as_str),
            Some("203.0.113.1")
        );
        let adv = streams[0].get("advertised endpoint").unwrap();
        assert_eq!(
            adv.get("address").and_then(Value::as_str),
            Some("192.0.2.10")
        );
        assert!(q.get("totals").and_then(|t| t.get("RTCP")).is_some());
    }

    #[test]
    fn recording_start_pause_stop_and_streams_added_by_a_reinvite() {
        let mut t = table();
        t.negotiate(
            &neg("c1", "A", None, false, &sdp("192.0.2.10", 4000)),
            at(1),
        )
        .unwrap();
        t.negotiate(
            &neg("c1", "B", Some("A"), true, &sdp("198.51.100.20", 5000)),
            at(1),
        )
        .unwrap();
        drain(&mut t);
        t.start_recording("c1", Some("agent=7"), at(2)).unwrap();
        let ch = drain(&mut t);
        let header = ch
            .iter()
            .find_map(|c| match c {
                FlowChange::RecordingStart { header, .. } => Some(header.clone()),
                _ => None,
            })
            .expect("recording start");
        assert_eq!(header.metadata.as_deref(), Some("agent=7"));
        assert_eq!(header.streams.len(), 4);
        assert_eq!(header.parties[0].tag, "A");
        assert!(header
            .streams
            .iter()
            .any(|s| s.id == 0 && s.source == "192.0.2.10:4000"));
        let tapped = ch
            .iter()
            .filter(|c| matches!(c, FlowChange::Upsert { config, .. } if config.record.is_some()))
            .count();
        assert_eq!(tapped, 4);
        // A re-INVITE adding video: streams are announced to the recording.
        let two = format!(
            "{}m=video 6000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n",
            String::from_utf8(sdp("192.0.2.10", 4000)).unwrap()
        );
        t.negotiate(&neg("c1", "A", Some("B"), false, two.as_bytes()), at(3))
            .unwrap();
        let events: Vec<Event> = drain(&mut t)
            .into_iter()
            .filter_map(|c| match c {
                FlowChange::RecordingEvent { event, .. } => Some(*event),
                _ => None,
            })
            .collect();
        let added = events
            .iter()
            .filter(|e| matches!(e, Event::StreamAdded(s) if s.media_index == 1))
            .count();
        let changed = events
            .iter()
            .filter(|e| matches!(e, Event::StreamChanged(s) if s.media_index == 0 && s.party == 0))
            .count();
        assert_eq!((added, changed), (4, 2));
        t.pause_recording("c1").unwrap();
        assert!(matches!(
            drain(&mut t).as_slice(),
            [FlowChange::RecordingPause { paused: true, .. }]
        ));
        t.start_recording("c1", None, at(4)).unwrap();
        assert!(matches!(
            drain(&mut t).as_slice(),
            [FlowChange::RecordingPause { paused: false, .. }]
        ));
        assert!(t.stop_recording("c1", StopReason::Stopped).unwrap());
        assert!(!t.stop_recording("c1", StopReason::Stopped).unwrap());
        let q = t.query("c1", at(5)).unwrap();
        assert_eq!(
            q.get("recording")
                .and_then(|r| r.get("state"))
                .and_then(Value::as_str),
            Some("stopped")
        );
        assert!(t.pause_recording("c1").is_err());
        assert_eq!(t.totals().recordings, 1);
    }

    #[test]
    fn errors_are_typed_and_their_text_is_the_error_reason() {
        let mut t = table();
        let e = t
            .negotiate(
                &neg("nope", "B", Some("A"), true, &sdp("192.0.2.1", 4000)),
                at(1),
            )
            .unwrap_err();
        assert_eq!(e, NgError::UnknownCallId);
        let e = t
            .negotiate(&neg("c2", "A", None, false, b"garbage"), at(1))
            .unwrap_err();
        assert!(matches!(e, NgError::BadSdp(_)), "{e:?}");
        assert_eq!(t.pause_recording("nope"), Err(NgError::UnknownCallId));
        // Echoed input is quoted: a control character never reaches the reply raw.
        let text = NgError::UnsupportedFlag("a\nb".into()).to_string();
        assert!(text.starts_with("unsupported flag '"), "{text}");
        assert!(!text.contains('\n'), "{text}");
        assert_eq!(
            NgError::InvalidAddress {
                key: "media address",
                value: "x".into()
            }
            .to_string(),
            "invalid address 'x' in 'media address'"
        );
    }
}
