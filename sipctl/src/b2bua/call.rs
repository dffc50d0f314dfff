//! The call and its parts: the two legs (each a dialog sipctl is a party of), the phases of
//! setting up a call, the media mode, and the one mid-call operation a call can have at a time.

use super::timers::CallTimer;
use super::*;

/// The two sides of a call: A (the caller, sipctl is the UAS) and B (the callee, sipctl is
/// the UAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Side {
    A,
    B,
}

impl Side {
    pub(super) fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// One side of a call: a dialog sipctl is a party of (RFC 3261 §12), kept in the core's
/// [`DialogTable`] under `key`, plus what the B2BUA adds to it.
#[derive(Debug, Clone)]
pub(super) struct Leg {
    /// The leg's dialog in the dialog table.
    pub(super) key: DialogKey,
    /// Where in-dialog requests go.
    pub(super) peer: Peer,
    /// The `o=` line of SDP sent on this leg.
    pub(super) origin: Origin,
    /// The party accepts UPDATE (its Allow says so): session refreshes use it, else a
    /// re-INVITE.
    pub(super) allows_update: bool,
    /// The last SDP sipctl sent on this leg (a re-INVITE refresh repeats it).
    pub(super) last_sdp: Vec<u8>,
    /// The leg's session timer (RFC 4028), once negotiated.
    pub(super) session: Option<SessionTimer>,
}

impl Leg {
    /// A leg for the dialog at `key`, reached at `peer`.
    pub(super) fn new(key: DialogKey, peer: Peer) -> Leg {
        Leg {
            key,
            peer,
            origin: Origin::new(),
            allows_update: false,
            last_sdp: Vec::new(),
            session: None,
        }
    }

    /// Stamps `sdp` with this leg's `o=` line and keeps it as the last SDP sent.
    pub(super) fn stamp(&mut self, sdp: &[u8]) -> Vec<u8> {
        let sdp = self.origin.stamp(sdp);
        self.last_sdp.clone_from(&sdp);
        sdp
    }
}

/// Whether a message's Allow lists UPDATE.
pub(super) fn allows_update(msg: &impl HeaderAccess) -> bool {
    msg.headers()
        .values("Allow")
        .iter()
        .any(|m| m.trim().eq_ignore_ascii_case("UPDATE"))
}

/// Which call and leg a dialog of the table belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LegOf {
    /// The call.
    pub(super) call: u64,
    /// The side the leg is on (for a transfer target: the side it replaces).
    pub(super) side: Side,
    /// A transfer target's leg that has not replaced the transferor yet.
    pub(super) pending: bool,
}

impl LegOf {
    /// Leg `side` of call `call`.
    pub(super) fn new(call: u64, side: Side) -> LegOf {
        LegOf {
            call,
            side,
            pending: false,
        }
    }
}

/// Where sipctl is, for Via and Contact.
#[derive(Debug, Clone)]
pub(super) struct Me {
    pub(super) host: String,
    pub(super) port: u16,
    /// The TLS listening port (RFC 3261 §26.2), when sipctl has one.
    pub(super) tls_port: Option<u16>,
}

impl Me {
    /// sipctl's port for messages over `transport`.
    pub(super) fn port_for(&self, transport: Transport) -> u16 {
        match transport {
            Transport::Tls => self.tls_port.unwrap_or(self.port),
            _ => self.port,
        }
    }

    /// sipctl's Contact on a leg over `transport`, as a header value.
    pub(super) fn contact(&self, transport: Transport) -> String {
        transport.contact("sipctl", &self.host, self.port_for(transport))
    }

    /// The same Contact, parsed (for a dialog's local Contact).
    pub(super) fn contact_addr(&self, transport: Transport) -> Option<NameAddr> {
        NameAddr::parse(&self.contact(transport)).ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for the recorder's offer reply before the INVITE goes to B.
    Routing,
    /// INVITE sent to B.
    Calling,
    /// B sent a provisional response.
    Early,
    /// B answered; waiting for the recorder's answer reply before answering A.
    Answering,
    /// 200 sent to A, waiting for A's ACK.
    Answered,
    /// Both dialogs confirmed.
    Confirmed,
    /// Being torn down.
    Ending,
}

impl Phase {
    pub(super) fn name(self) -> &'static str {
        match self {
            Phase::Routing => "routing",
            Phase::Calling => "calling",
            Phase::Early => "ringing",
            Phase::Answering | Phase::Answered => "answered",
            Phase::Confirmed => "confirmed",
            Phase::Ending => "ending",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Media {
    Direct,
    Recorded { paused: bool },
}

/// A mid-call operation in progress (one at a time per call).
#[derive(Debug, Clone)]
pub(super) enum Op {
    /// Agent start: NG offer, re-INVITE B, NG answer, re-INVITE A.
    Start { ticket: Option<Ticket> },
    /// Agent stop (or recovery to direct media): NG stop, re-INVITE B, re-INVITE A, NG delete.
    Stop {
        ticket: Option<Ticket>,
        reason: Option<String>,
    },
    /// Pause or resume: one NG request.
    PauseResume { ticket: Option<Ticket>, pause: bool },
    /// A party's re-INVITE relayed to the other party (through NG when recorded).
    Relay {
        from: Side,
        server_tx: TxId,
        /// The SDP the party offered.
        offer: Vec<u8>,
        /// INVITE or UPDATE: the other party gets the same method.
        method: Method,
    },
    /// Another in-dialog request relayed as is (INFO, UPDATE, OPTIONS, MESSAGE...).
    Passthrough { server_tx: TxId },
    /// Blind transfer (REFER from `from`): a new leg to the target replaces `from`.
    Transfer {
        /// The transferor's side.
        from: Side,
        /// The new leg, until it answers.
        leg: Box<Leg>,
        /// Who the target is (for the event and the API).
        target: String,
        /// The target's DN, when it is one.
        dn: Option<String>,
        /// Attended transfer (RFC 3891 Replaces): the call whose far leg `leg` is; it ends
        /// when the transfer is done.
        replaces: Option<u64>,
    },
    /// This call's far party is being moved into call `into` (attended transfer).
    Joining { into: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NgPurpose {
    InitialOffer,
    /// The callee's early SDP (18x) in a recorded call.
    EarlyAnswer,
    InitialAnswer,
    StartOffer,
    StartAnswer,
    Stop,
    PauseResume,
    RelayOffer,
    RelayAnswer,
    TransferOffer,
    TransferAnswer,
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TxPurpose {
    /// The first INVITE to B.
    BInvite,
    /// A re-INVITE sent to `side` for the call's current op.
    Reinvite(Side),
    /// BYE, NOTIFY, PRACK: responses are not awaited.
    Bye,
    /// A session refresh sipctl sends as the refresher of `side`'s session timer (RFC 4028).
    Refresh(Side),
    /// The INVITE of a B leg given up for another (no-answer): a late 2xx gets ACK and BYE.
    Abandoned,
    /// The relayed request of a passthrough op.
    Passthrough,
    /// The INVITE to a transfer target.
    TransferInvite,
}

pub(super) struct Call {
    pub(super) id: u64,
    /// Deadlines of the call's timers, by [`CallTimer::index`].
    pub(super) deadlines: [Option<Instant>; CallTimer::COUNT],
    /// The session timer answer owed to the caller's INVITE in its 2xx (RFC 4028 §9).
    pub(super) a_session: UasTimer,
    /// The highest RSeq of the callee's reliable provisional responses (RFC 3262).
    pub(super) b_rseq: Option<u32>,
    /// This side's leg was moved into another call (attended transfer): its dialog is not
    /// this call's to remove.
    pub(super) moved: Option<Side>,
    /// The call went to the no-answer target already.
    pub(super) no_answer_redirected: bool,
    /// The callee's remaining located targets (RFC 3263 §4.3 failover).
    pub(super) b_failover: Option<Failover>,
    /// The SDP offered to the callee (before the leg's `o=` stamp), for a retry elsewhere.
    pub(super) b_offer: Vec<u8>,
    pub(super) ctx: CallContext,
    pub(super) media_call: MediaCall,
    pub(super) a: Leg,
    pub(super) b: Option<Leg>,
    /// The caller's INVITE and its server transaction, until it has a final response.
    pub(super) a_invite: Option<(TxId, Request)>,
    /// The INVITE to B and its client transaction, until it has a final response.
    pub(super) b_invite: Option<(TxId, Request)>,
    pub(super) phase: Phase,
    pub(super) media: Media,
    /// The recorder holds a session for this call (it needs `delete` at the end).
    pub(super) at_recorder: bool,
    /// Latest SDP each party sent.
    pub(super) sdp_a: Vec<u8>,
    pub(super) sdp_b: Vec<u8>,
    pub(super) record_critical: bool,
    pub(super) initiator: Option<RecordingInitiator>,
    pub(super) op: Option<Op>,
    pub(super) caller: Option<String>,
    pub(super) callee: Option<String>,
    pub(super) dn: Option<String>,
    /// CANCEL from A arrived before B sent a provisional response.
    pub(super) cancel_pending: bool,
    pub(super) b_provisional: bool,
    /// The `Min-SE` of the callee's 422 (RFC 4028 §7.4), once the INVITE was retried with it.
    pub(super) b_min_se: Option<u32>,
    pub(super) rang: bool,
    /// `recording_started` was sent (so `recording_stopped` is due at the end).
    pub(super) recording_announced: bool,
    /// The callee sent early media (`early_media` was sent).
    pub(super) early_media: bool,
    /// The callee's provisional response whose early SDP is at the recorder (status, reason).
    pub(super) early_response: Option<(u16, String)>,
}

impl Call {
    /// Leg `side`, to change it (B exists once the call is routed).
    pub(super) fn leg(&mut self, side: Side) -> Option<&mut Leg> {
        match side {
            Side::A => Some(&mut self.a),
            Side::B => self.b.as_mut(),
        }
    }

    /// Leg `side`.
    pub(super) fn leg_ref(&self, side: Side) -> Option<&Leg> {
        match side {
            Side::A => Some(&self.a),
            Side::B => self.b.as_ref(),
        }
    }

    pub(super) fn recording_state(&self) -> RecordingState {
        match (&self.op, self.media) {
            (Some(Op::Start { .. }), _) => RecordingState::Starting,
            (Some(Op::Stop { .. }), _) => RecordingState::Stopping,
            (_, Media::Direct) => RecordingState::Off,
            (_, Media::Recorded { paused: true }) => RecordingState::Paused,
            (_, Media::Recorded { paused: false }) => RecordingState::On,
        }
    }

    pub(super) fn info(&self) -> CallInfo {
        CallInfo {
            id: self.id.to_string(),
            global_call_id: self.ctx.global_call_id.clone(),
            caller: self.caller.clone(),
            callee: self.callee.clone(),
            dn: self.dn.clone(),
            state: self.phase.name(),
            recording: self.recording_state(),
            a_call_id: self.a.key.call_id.clone(),
            b_call_id: self.b.as_ref().map(|b| b.key.call_id.clone()),
        }
    }
}
