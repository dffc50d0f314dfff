//! Dialogs (RFC 3261 §12), sans-IO.
//!
//! A [`Dialog`] is the state two user agents share after an INVITE got a 1xx-with-tag or a 2xx:
//! Call-ID and tags ([`DialogId`]), local and remote CSeq, the route set and the remote target.
//! It builds in-dialog requests (re-INVITE, BYE, UPDATE, INFO, and the ACK for a 2xx) and checks
//! incoming ones. It sends nothing itself: hand the requests to the
//! [`TransactionLayer`](super::TransactionLayer) (ACK for 2xx via `send_stateless`), sending to
//! the address of [`Dialog::next_hop`].
//!
//! A [`DialogTable`] owns the dialogs of a user agent (the B2BUA's only dialog model, after
//! pjsip's UA layer): an in-dialog request is matched to its dialog by Call-ID, To tag and
//! From tag, checked for CSeq order and applied (target refresh, BYE) by the table itself, which
//! tells the caller what to answer when it does not fit ([`Unrouted`]: 481, 500). Each dialog
//! carries an owner value of the caller's choice (the B2BUA's call and leg).

use super::message::{CSeq, HeaderAccess, Method, NameAddr, Request, Response, Uri, Via};

/// Identifies a dialog: Call-ID, local tag, remote tag (RFC 3261 §12).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// Call-ID.
    pub call_id: String,
    /// Our tag.
    pub local_tag: String,
    /// The peer's tag.
    pub remote_tag: String,
}

impl DialogId {
    /// The dialog an incoming request belongs to, from our side (RFC 3261 §12.2.2: local tag
    /// = To tag, remote tag = From tag; an RFC 2543 peer's missing From tag is the empty tag,
    /// §12.1.1). `None` if the request has no To tag (it is then not an in-dialog request).
    pub fn for_incoming_request(req: &Request) -> Option<DialogId> {
        Some(DialogId {
            call_id: req.call_id()?.to_string(),
            local_tag: req.to_tag()?,
            remote_tag: req.from_tag().unwrap_or_default(),
        })
    }

    /// The key of this dialog in a [`DialogTable`].
    pub fn key(&self) -> DialogKey {
        DialogKey {
            call_id: self.call_id.clone(),
            local_tag: self.local_tag.clone(),
        }
    }

    /// The dialog a response to one of our requests belongs to (RFC 3261 §12.1.2: local tag
    /// = From tag, remote tag = To tag). `None` without a To tag.
    pub fn for_incoming_response(resp: &Response) -> Option<DialogId> {
        Some(DialogId {
            call_id: resp.call_id()?.to_string(),
            local_tag: resp.from_tag()?,
            remote_tag: resp.to_tag()?,
        })
    }
}

/// Dialog states (RFC 3261 §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// Our INVITE is out and no response with a To tag has come back yet: not a dialog in
    /// RFC 3261's sense, but the state it will be built from (the remote tag is empty).
    Initial,
    /// Created by a provisional response with a To tag.
    Early,
    /// Created or confirmed by a 2xx.
    Confirmed,
    /// Ended by BYE, a non-2xx final on an early dialog, or 481/408 on an in-dialog request.
    Terminated,
}

/// Which side of the dialog-creating INVITE we were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We sent the INVITE.
    Uac,
    /// We received the INVITE.
    Uas,
}

/// Errors from creating or updating a dialog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    /// A header needed for the dialog is missing or malformed.
    #[error("missing or malformed {0} header")]
    MissingHeader(&'static str),
    /// The response has no To tag (RFC 3261 §12.1: no dialog without it).
    #[error("response has no To tag")]
    MissingTag,
    /// The response cannot create a dialog (only 101-299 to INVITE can, RFC 3261 §12.1).
    #[error("status {0} does not create a dialog")]
    NotDialogCreating(u16),
    /// The message belongs to another dialog.
    #[error("message does not belong to this dialog")]
    WrongDialog,
    /// The request's CSeq is lower than the remote CSeq (RFC 3261 §12.2.2): answer 500.
    #[error("CSeq {got} is lower than the remote sequence number {remote}")]
    OutOfOrder {
        /// CSeq of the request.
        got: u32,
        /// Current remote sequence number.
        remote: u32,
    },
    /// The dialog is terminated.
    #[error("dialog is terminated")]
    Terminated,
}

/// One dialog (RFC 3261 §12.1): see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    /// Call-ID and tags.
    pub id: DialogId,
    /// Current state.
    pub state: DialogState,
    /// Our role in the creating INVITE.
    pub role: Role,
    /// Our URI with our tag: the From of requests we send.
    pub local_uri: NameAddr,
    /// The peer's URI with its tag: the To of requests we send.
    pub remote_uri: NameAddr,
    /// Our Contact, sent in target-refresh requests.
    pub local_contact: Option<NameAddr>,
    /// Last CSeq number we used (0 = none yet, for a UAS, RFC 3261 §12.1.1).
    pub local_seq: u32,
    /// Highest CSeq number seen from the peer (`None` = empty, RFC 3261 §12.1.2).
    pub remote_seq: Option<u32>,
    /// CSeq number of our last INVITE (the ACK for its 2xx reuses it, §13.2.2.4).
    pub invite_seq: Option<u32>,
    /// Where in-dialog requests go: the peer's Contact URI (RFC 3261 §12.1).
    pub remote_target: Uri,
    /// Route set, in the order Route headers are sent (RFC 3261 §12.1.1, §12.1.2).
    pub route_set: Vec<NameAddr>,
    /// True if the dialog is SIPS (Request-URI sips and over TLS, RFC 3261 §12.1.1).
    pub secure: bool,
}

fn contact_uri(msg: &impl HeaderAccess) -> Option<Uri> {
    msg.contact().map(|c| c.uri)
}

impl Dialog {
    /// The UAC side before the INVITE that creates it got any response (state
    /// [`DialogState::Initial`], empty remote tag): builds that INVITE with
    /// [`Dialog::new_request`] and becomes a dialog with the first response that has a To tag
    /// ([`Dialog::handle_response`]). `local_uri` carries our tag; `local_seq` is the CSeq
    /// number before the first request's (RFC 3261 §8.1.1.5: any value below 2^31).
    pub fn uac_initial(
        call_id: String,
        local_uri: NameAddr,
        remote_uri: NameAddr,
        remote_target: Uri,
        local_contact: Option<NameAddr>,
        local_seq: u32,
    ) -> Result<Dialog, DialogError> {
        let local_tag = local_uri.tag().ok_or(DialogError::MissingTag)?.to_string();
        Ok(Dialog {
            id: DialogId {
                call_id,
                local_tag,
                remote_tag: String::new(),
            },
            state: DialogState::Initial,
            role: Role::Uac,
            local_uri,
            remote_uri,
            local_contact,
            local_seq,
            remote_seq: None,
            invite_seq: None,
            secure: remote_target.is_sips(),
            remote_target,
            route_set: Vec::new(),
        })
    }

    /// The UAS side from a received INVITE, before our first response: `local_tag` is the To
    /// tag every response we send will carry (RFC 3261 §12.1.1). The dialog is
    /// [`DialogState::Early`] until [`Dialog::confirm`] (when we send the 2xx). Without Contact
    /// the remote target is the From URI; an RFC 2543 caller's missing From tag is the empty
    /// remote tag.
    pub fn uas_initial(
        invite: &Request,
        local_tag: &str,
        local_contact: Option<NameAddr>,
        local_seq: u32,
    ) -> Result<Dialog, DialogError> {
        let mut local_uri = invite.to_addr().ok_or(DialogError::MissingHeader("To"))?;
        local_uri.set_tag(local_tag);
        let remote_uri = invite
            .from_addr()
            .ok_or(DialogError::MissingHeader("From"))?;
        let call_id = invite
            .call_id()
            .ok_or(DialogError::MissingHeader("Call-ID"))?;
        let cseq = invite.cseq().ok_or(DialogError::MissingHeader("CSeq"))?;
        let remote_target = contact_uri(invite).unwrap_or_else(|| remote_uri.uri.clone());
        Ok(Dialog {
            id: DialogId {
                call_id: call_id.to_string(),
                local_tag: local_tag.to_string(),
                remote_tag: remote_uri.tag().unwrap_or_default().to_string(),
            },
            state: DialogState::Early,
            role: Role::Uas,
            local_uri,
            remote_uri,
            local_contact,
            local_seq,
            remote_seq: Some(cseq.seq),
            invite_seq: None,
            remote_target,
            route_set: invite.record_routes(),
            secure: invite.uri.is_sips(),
        })
    }

    /// The UAS sent its 2xx to the creating INVITE: the dialog is confirmed (RFC 3261 §12.1.1).
    pub fn confirm(&mut self) {
        if self.state != DialogState::Terminated {
            self.state = DialogState::Confirmed;
        }
    }

    /// Creates the UAC side from our INVITE and a 101-199 response with a To tag (early) or a
    /// 2xx (confirmed) (RFC 3261 §12.1.2): route set = Record-Route of the response reversed,
    /// remote target = its Contact, local CSeq = the INVITE's, remote CSeq empty.
    pub fn uac(invite: &Request, resp: &Response) -> Result<Dialog, DialogError> {
        if !(101..300).contains(&resp.status) {
            return Err(DialogError::NotDialogCreating(resp.status));
        }
        let remote_tag = resp.to_tag().ok_or(DialogError::MissingTag)?;
        let local_uri = invite
            .from_addr()
            .ok_or(DialogError::MissingHeader("From"))?;
        let local_tag = local_uri
            .tag()
            .ok_or(DialogError::MissingHeader("From"))?
            .to_string();
        let call_id = invite
            .call_id()
            .ok_or(DialogError::MissingHeader("Call-ID"))?;
        if resp.call_id() != Some(call_id) || resp.from_tag().as_deref() != Some(&local_tag) {
            return Err(DialogError::WrongDialog);
        }
        let cseq = invite.cseq().ok_or(DialogError::MissingHeader("CSeq"))?;
        let remote_uri = resp.to_addr().ok_or(DialogError::MissingHeader("To"))?;
        let mut route_set = resp.record_routes();
        route_set.reverse();
        Ok(Dialog {
            id: DialogId {
                call_id: call_id.to_string(),
                local_tag,
                remote_tag,
            },
            state: if resp.is_success() {
                DialogState::Confirmed
            } else {
                DialogState::Early
            },
            role: Role::Uac,
            local_uri,
            remote_uri,
            local_contact: invite.contact(),
            local_seq: cseq.seq,
            remote_seq: None,
            invite_seq: Some(cseq.seq),
            // A 2xx to INVITE must carry Contact; fall back to the Request-URI if it does not.
            remote_target: contact_uri(resp).unwrap_or_else(|| invite.uri.clone()),
            route_set,
            secure: invite.uri.is_sips(),
        })
    }

    /// Creates the UAS side from a received INVITE and the 101-299 response we send (which
    /// must carry our To tag) (RFC 3261 §12.1.1): route set = Record-Route of the request in
    /// order, remote target = its Contact, remote CSeq = its CSeq, local CSeq empty.
    pub fn uas(invite: &Request, resp: &Response) -> Result<Dialog, DialogError> {
        if !(101..300).contains(&resp.status) {
            return Err(DialogError::NotDialogCreating(resp.status));
        }
        let local_uri = resp.to_addr().ok_or(DialogError::MissingHeader("To"))?;
        let local_tag = local_uri.tag().ok_or(DialogError::MissingTag)?.to_string();
        let remote_uri = invite
            .from_addr()
            .ok_or(DialogError::MissingHeader("From"))?;
        let remote_tag = remote_uri
            .tag()
            .ok_or(DialogError::MissingHeader("From"))?
            .to_string();
        let call_id = invite
            .call_id()
            .ok_or(DialogError::MissingHeader("Call-ID"))?;
        let cseq = invite.cseq().ok_or(DialogError::MissingHeader("CSeq"))?;
        let remote_target = contact_uri(invite).ok_or(DialogError::MissingHeader("Contact"))?;
        Ok(Dialog {
            id: DialogId {
                call_id: call_id.to_string(),
                local_tag,
                remote_tag,
            },
            state: if resp.is_success() {
                DialogState::Confirmed
            } else {
                DialogState::Early
            },
            role: Role::Uas,
            local_uri,
            remote_uri,
            local_contact: resp.contact(),
            local_seq: 0,
            remote_seq: Some(cseq.seq),
            invite_seq: None,
            remote_target,
            route_set: invite.record_routes(),
            secure: invite.uri.is_sips(),
        })
    }

    /// Applies a response received for a request we sent in this dialog (or for the creating
    /// INVITE, for a UAC early dialog).
    ///
    /// * 2xx to INVITE on an early UAC dialog: confirmed; route set recomputed from its
    ///   Record-Route (RFC 3261 §12.1.2, §13.2.2.4).
    /// * 2xx to a target-refresh request (INVITE, UPDATE), or 1xx in an early dialog: remote
    ///   target from Contact (§12.2.1.2).
    /// * Non-2xx final to the creating INVITE on an early dialog: terminated (§12.3).
    /// * 481 or 408 to any in-dialog request: terminated (§12.2.1.2).
    pub fn handle_response(&mut self, resp: &Response) -> Result<(), DialogError> {
        let ours = resp.call_id() == Some(self.id.call_id.as_str())
            && resp.from_tag().as_deref() == Some(self.id.local_tag.as_str());
        if !ours {
            return Err(DialogError::WrongDialog);
        }
        let cseq = resp.cseq().ok_or(DialogError::MissingHeader("CSeq"))?;
        let unconfirmed = matches!(self.state, DialogState::Initial | DialogState::Early);
        match resp.to_tag() {
            Some(tag) if tag == self.id.remote_tag => {}
            // The first tag, or another fork's (RFC 3261 §12.1.2): a B2BUA leg keeps one dialog
            // per INVITE, the latest early one and then the one that answers.
            Some(tag) if unconfirmed && resp.status > 100 => {
                self.remote_uri.set_tag(&tag);
                self.id.remote_tag = tag;
                if self.state == DialogState::Initial {
                    self.state = DialogState::Early;
                    let mut rs = resp.record_routes();
                    rs.reverse();
                    self.route_set = rs;
                }
            }
            // 100 Trying, or a final without To tag: no dialog state from it, but a non-2xx
            // final to the INVITE ends an unconfirmed dialog (§12.3).
            None if unconfirmed => {
                if cseq.method == Method::Invite && resp.is_final() {
                    self.state = DialogState::Terminated;
                }
                return Ok(());
            }
            _ => return Err(DialogError::WrongDialog),
        }
        if matches!(resp.status, 408 | 481) {
            self.state = DialogState::Terminated;
            return Ok(());
        }
        let refresh = matches!(cseq.method, Method::Invite | Method::Update);
        if resp.is_success() && refresh || self.state == DialogState::Early && resp.status > 100 {
            if let Some(t) = contact_uri(resp) {
                self.remote_target = t;
            }
        }
        if cseq.method == Method::Invite && self.state == DialogState::Early {
            if resp.is_success() {
                self.state = DialogState::Confirmed;
                if self.role == Role::Uac {
                    let mut rs = resp.record_routes();
                    rs.reverse();
                    self.route_set = rs;
                }
            } else if resp.is_final() {
                self.state = DialogState::Terminated;
            }
        }
        Ok(())
    }

    /// Checks and applies a request received in this dialog (RFC 3261 §12.2.2): CSeq ordering
    /// (a lower CSeq is [`DialogError::OutOfOrder`] → answer 500), remote target refresh for
    /// re-INVITE/UPDATE with Contact, BYE terminates. ACK and CANCEL skip the CSeq check (they
    /// reuse the INVITE's number).
    pub fn handle_request(&mut self, req: &Request) -> Result<(), DialogError> {
        if DialogId::for_incoming_request(req).as_ref() != Some(&self.id) {
            return Err(DialogError::WrongDialog);
        }
        if self.state == DialogState::Terminated && req.method != Method::Ack {
            return Err(DialogError::Terminated);
        }
        let cseq = req.cseq().ok_or(DialogError::MissingHeader("CSeq"))?;
        if !matches!(req.method, Method::Ack | Method::Cancel) {
            if let Some(remote) = self.remote_seq {
                if cseq.seq < remote {
                    return Err(DialogError::OutOfOrder {
                        got: cseq.seq,
                        remote,
                    });
                }
            }
            self.remote_seq = Some(cseq.seq);
        }
        match req.method {
            Method::Invite | Method::Update => {
                if let Some(t) = contact_uri(req) {
                    self.remote_target = t;
                }
            }
            Method::Bye => self.state = DialogState::Terminated,
            _ => {}
        }
        Ok(())
    }

    /// Marks the dialog terminated (e.g. after sending BYE, or on a transaction timeout).
    pub fn terminate(&mut self) {
        self.state = DialogState::Terminated;
    }

    /// The URI whose address the next in-dialog request is sent to: the first route if the
    /// route set is not empty, else the remote target (RFC 3261 §12.2.1.1, §8.1.2).
    pub fn next_hop(&self) -> &Uri {
        self.route_set
            .first()
            .map(|r| &r.uri)
            .unwrap_or(&self.remote_target)
    }

    /// Builds an in-dialog request (RFC 3261 §12.2.1.1): To/From/Call-ID of the dialog, the
    /// next local CSeq, Request-URI and Route from the route set (loose or strict routing),
    /// Contact for target-refresh methods, `via` as the top Via (it must carry a fresh branch:
    /// [`new_via`](super::new_via)). Use [`Dialog::ack_for_2xx`] for ACK; CANCEL is built from
    /// the INVITE with [`Request::cancel`].
    pub fn new_request(&mut self, method: Method, via: Via) -> Request {
        self.local_seq = self.local_seq.wrapping_add(1) % (1 << 31);
        if method == Method::Invite {
            self.invite_seq = Some(self.local_seq);
        }
        let seq = self.local_seq;
        self.build(method, seq, via)
    }

    /// Builds the ACK for a 2xx to our last INVITE (RFC 3261 §13.2.2.4): same CSeq number as
    /// the INVITE, method ACK, new branch, same routing as any in-dialog request. `None` if
    /// we never sent an INVITE in this dialog.
    pub fn ack_for_2xx(&self, via: Via) -> Option<Request> {
        Some(self.ack(self.invite_seq?, via))
    }

    /// The ACK for a 2xx to our INVITE with CSeq number `seq` (RFC 3261 §13.2.2.4; the 2xx's
    /// own CSeq, which a retransmitted or late 2xx may hold for an earlier INVITE).
    pub fn ack(&self, seq: u32, via: Via) -> Request {
        self.build(Method::Ack, seq, via)
    }

    fn build(&self, method: Method, seq: u32, via: Via) -> Request {
        // RFC 3261 §12.2.1.1: with an empty route set the Request-URI is the remote target; if
        // the first route is a loose router (;lr) the Request-URI is the remote target and
        // Route is the route set; otherwise (strict router) the Request-URI is the first
        // route's URI (without disallowed parameters) and the remote target goes last.
        let (ruri, routes): (Uri, Vec<String>) = match self.route_set.first() {
            None => (self.remote_target.clone(), Vec::new()),
            Some(first) if first.uri.is_loose_router() => (
                self.remote_target.clone(),
                self.route_set.iter().map(|r| r.to_string()).collect(),
            ),
            Some(first) => {
                let mut ruri = first.uri.clone();
                ruri.params.retain(|p| {
                    !["method", "maddr", "ttl", "transport", "lr"]
                        .iter()
                        .any(|n| p.name.eq_ignore_ascii_case(n))
                });
                ruri.headers = None;
                let mut routes: Vec<String> = self
                    .route_set
                    .iter()
                    .skip(1)
                    .map(|r| r.to_string())
                    .collect();
                routes.push(format!("<{}>", self.remote_target));
                (ruri, routes)
            }
        };
        let mut r = Request::new(method.clone(), ruri);
        r.headers.push("Via", via);
        r.headers.push("Max-Forwards", 70);
        for route in routes {
            r.headers.push("Route", route);
        }
        r.headers.push("From", &self.local_uri);
        r.headers.push("To", &self.remote_uri);
        r.headers.push("Call-ID", &self.id.call_id);
        r.headers.push(
            "CSeq",
            CSeq {
                seq,
                method: method.clone(),
            },
        );
        if matches!(
            method,
            Method::Invite | Method::Update | Method::Subscribe | Method::Refer | Method::Notify
        ) {
            if let Some(c) = &self.local_contact {
                r.headers.push("Contact", c);
            }
        }
        r
    }
}

/// Where a dialog is in a [`DialogTable`]: Call-ID and our tag (RFC 3261 §12.2.2 matches the
/// remote tag too; the table checks it against the dialog it finds).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogKey {
    /// Call-ID.
    pub call_id: String,
    /// Our tag.
    pub local_tag: String,
}

/// Why an in-dialog request matched no dialog it could go to, with the answer it is owed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unrouted {
    /// No dialog with that Call-ID and tags, or it has ended: 481 (RFC 3261 §12.2.2).
    #[error("no such dialog")]
    NoDialog,
    /// The CSeq is lower than the last one of the peer: 500 (RFC 3261 §12.2.2).
    #[error("CSeq {got} is below the remote sequence number {remote}")]
    OutOfOrder {
        /// CSeq of the request.
        got: u32,
        /// Highest CSeq seen before.
        remote: u32,
    },
}

impl Unrouted {
    /// The status code to answer with.
    pub fn status(self) -> u16 {
        match self {
            Unrouted::NoDialog => 481,
            Unrouted::OutOfOrder { .. } => 500,
        }
    }
}

/// The dialogs of a user agent, each with an owner value `T` (for the B2BUA: which call and
/// which leg). See the module docs.
#[derive(Debug, Clone)]
pub struct DialogTable<T> {
    dialogs: std::collections::HashMap<DialogKey, (Dialog, T)>,
}

impl<T> Default for DialogTable<T> {
    fn default() -> Self {
        DialogTable {
            dialogs: std::collections::HashMap::new(),
        }
    }
}

impl<T: Copy> DialogTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `dialog` (replacing one with the same key) and returns its key.
    pub fn insert(&mut self, dialog: Dialog, owner: T) -> DialogKey {
        let key = dialog.id.key();
        self.dialogs.insert(key.clone(), (dialog, owner));
        key
    }

    /// The dialog at `key`.
    pub fn get(&self, key: &DialogKey) -> Option<&Dialog> {
        self.dialogs.get(key).map(|(d, _)| d)
    }

    /// The dialog at `key`, to build requests in it or apply responses.
    pub fn get_mut(&mut self, key: &DialogKey) -> Option<&mut Dialog> {
        self.dialogs.get_mut(key).map(|(d, _)| d)
    }

    /// The owner of the dialog at `key`.
    pub fn owner(&self, key: &DialogKey) -> Option<T> {
        self.dialogs.get(key).map(|(_, o)| *o)
    }

    /// Gives the dialog at `key` a new owner (e.g. a transfer target that answered).
    pub fn set_owner(&mut self, key: &DialogKey, owner: T) {
        if let Some((_, o)) = self.dialogs.get_mut(key) {
            *o = owner;
        }
    }

    /// Removes the dialog at `key`.
    pub fn remove(&mut self, key: &DialogKey) -> Option<Dialog> {
        self.dialogs.remove(key).map(|(d, _)| d)
    }

    /// How many dialogs the table holds.
    pub fn len(&self) -> usize {
        self.dialogs.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.dialogs.is_empty()
    }

    /// Matches an in-dialog request (one with a To tag) to its dialog and applies it
    /// (RFC 3261 §12.2.2): the Call-ID and To tag find the dialog, the From tag must be the
    /// dialog's remote tag, the CSeq must not go backwards (ACK and CANCEL excepted); a
    /// re-INVITE or UPDATE with Contact refreshes the remote target, BYE ends the dialog.
    /// The error says what to answer.
    pub fn route_request(&mut self, req: &Request) -> Result<(DialogKey, T), Unrouted> {
        let id = DialogId::for_incoming_request(req).ok_or(Unrouted::NoDialog)?;
        let key = id.key();
        let (dialog, owner) = self.dialogs.get_mut(&key).ok_or(Unrouted::NoDialog)?;
        match dialog.handle_request(req) {
            Ok(()) => Ok((key, *owner)),
            Err(DialogError::OutOfOrder { got, remote }) => {
                Err(Unrouted::OutOfOrder { got, remote })
            }
            Err(_) => Err(Unrouted::NoDialog),
        }
    }

    /// Applies a response to a request sent in one of the table's dialogs (found by Call-ID
    /// and From tag, RFC 3261 §12.1.2, §12.2.1.2) and returns its key and owner; `None` if it
    /// is no dialog's, or the dialog refuses it (another dialog's To tag).
    pub fn route_response(&mut self, resp: &Response) -> Option<(DialogKey, T)> {
        let key = DialogKey {
            call_id: resp.call_id()?.to_string(),
            local_tag: resp.from_tag()?,
        };
        let (dialog, owner) = self.dialogs.get_mut(&key)?;
        dialog.handle_response(resp).ok()?;
        Some((key, *owner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{generate_tag, Message};
    use crate::sip::transaction::{
        new_via, Incoming, Peer, TransactionLayer, Transport, TxEvent, TxId,
    };
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    fn invite() -> Request {
        let mut r = Request::new(Method::Invite, Uri::sip(Some("bob"), "example.com", None));
        r.headers.push(
            "Via",
            new_via(
                Transport::Udp,
                "192.0.2.1",
                Some(5060),
                &mut fastrand::Rng::new(),
            ),
        );
        r.headers.push("Max-Forwards", 70);
        r.headers
            .push("From", "\"Alice\" <sip:alice@example.org>;tag=atag");
        r.headers.push("To", "<sip:bob@example.com>");
        r.headers.push("Call-ID", "dlg-1@192.0.2.1");
        r.headers.push("CSeq", "10 INVITE");
        r.headers.push("Contact", "<sip:alice@192.0.2.1:5060>");
        r.headers.push("Record-Route", "<sip:p1.example.org;lr>");
        r.headers.push("Record-Route", "<sip:p2.example.net;lr>");
        r
    }

    fn answer(req: &Request, status: u16) -> Response {
        let mut resp = Response::for_request(req, status, "x");
        resp.set_to_tag("btag");
        resp.headers.push("Contact", "<sip:bob@198.51.100.2:5060>");
        for rr in req.headers.get_all("Record-Route") {
            resp.headers.push("Record-Route", rr);
        }
        resp
    }

    fn via() -> Via {
        new_via(
            Transport::Udp,
            "192.0.2.1",
            Some(5060),
            &mut fastrand::Rng::new(),
        )
    }

    #[test]
    fn uac_dialog_route_set_reversed_and_cseq_increments() {
        let inv = invite();
        let ringing = answer(&inv, 180);
        let mut d = Dialog::uac(&inv, &ringing).expect("early dialog");
        assert_eq!(d.state, DialogState::Early);
        assert_eq!(d.id, DialogId::for_incoming_response(&ringing).expect("id"));
        assert_eq!(d.id.local_tag, "atag");
        assert_eq!(d.id.remote_tag, "btag");
        let hosts: Vec<&str> = d.route_set.iter().map(|r| r.uri.host.as_str()).collect();
        // RFC 3261 §12.1.2: Record-Route reversed for the UAC
        assert_eq!(hosts, ["p2.example.net", "p1.example.org"]);
        assert_eq!(d.remote_target.to_string(), "sip:bob@198.51.100.2:5060");
        d.handle_response(&answer(&inv, 200)).expect("2xx");
        assert_eq!(d.state, DialogState::Confirmed);

        let ack = d.ack_for_2xx(via()).expect("ack");
        assert_eq!(
            ack.cseq(),
            Some(CSeq {
                seq: 10,
                method: Method::Ack
            })
        );
        assert!(ack.top_via().is_some_and(|v| v.has_rfc3261_branch()));
        assert_ne!(
            ack.top_via().and_then(|v| v.branch().map(str::to_string)),
            inv.top_via().and_then(|v| v.branch().map(str::to_string))
        );

        let info = d.new_request(Method::Info, via());
        let bye = d.new_request(Method::Bye, via());
        assert_eq!(info.cseq().map(|c| c.seq), Some(11));
        assert_eq!(bye.cseq().map(|c| c.seq), Some(12));
        // loose routing: Request-URI = remote target, Route = route set in order
        assert_eq!(bye.uri.to_string(), "sip:bob@198.51.100.2:5060");
        let routes: Vec<String> = bye.routes().iter().map(|r| r.uri.host.clone()).collect();
        assert_eq!(routes, ["p2.example.net", "p1.example.org"]);
        assert_eq!(bye.from_tag().as_deref(), Some("atag"));
        assert_eq!(bye.to_tag().as_deref(), Some("btag"));
        assert_eq!(bye.call_id(), Some("dlg-1@192.0.2.1"));
        assert_eq!(d.next_hop().host, "p2.example.net");
        assert!(Message::parse(&bye.to_bytes()).is_ok());
        // re-INVITE carries Contact and moves the ACK CSeq
        let reinv = d.new_request(Method::Invite, via());
        assert!(reinv.contact().is_some());
        assert_eq!(
            d.ack_for_2xx(via()).and_then(|a| a.cseq()).map(|c| c.seq),
            Some(13)
        );
        // 481 to an in-dialog request ends the dialog (§12.2.1.2)
        let mut r481 = Response::for_request(&bye, 481, "x");
        r481.headers
            .set("To", bye.headers.get("To").unwrap_or_default());
        d.handle_response(&r481).expect("481");
        assert_eq!(d.state, DialogState::Terminated);
    }

    #[test]
    fn uas_dialog_and_incoming_request_checks() {
        let inv = invite();
        let ok = answer(&inv, 200);
        let mut d = Dialog::uas(&inv, &ok).expect("uas dialog");
        assert_eq!(d.state, DialogState::Confirmed);
        assert_eq!(d.id.local_tag, "btag");
        assert_eq!(d.id.remote_tag, "atag");
        assert_eq!(d.remote_seq, Some(10));
        let hosts: Vec<&str> = d.route_set.iter().map(|r| r.uri.host.as_str()).collect();
        // RFC 3261 §12.1.1: Record-Route in order for the UAS
        assert_eq!(hosts, ["p1.example.org", "p2.example.net"]);
        assert_eq!(d.remote_target.to_string(), "sip:alice@192.0.2.1:5060");

        // the peer's in-dialog requests map to our id
        let mut peer = Dialog::uac(&inv, &ok).expect("uac");
        let info = peer.new_request(Method::Info, via());
        assert_eq!(DialogId::for_incoming_request(&info), Some(d.id.clone()));
        d.handle_request(&info).expect("info");
        assert_eq!(d.remote_seq, Some(11));
        // out of order → 500
        let mut old = info.clone();
        old.headers.set("CSeq", "5 INFO");
        assert_eq!(
            d.handle_request(&old),
            Err(DialogError::OutOfOrder { got: 5, remote: 11 })
        );
        // target refresh
        let mut reinv = peer.new_request(Method::Invite, via());
        reinv.headers.set("Contact", "<sip:alice@192.0.2.99:5062>");
        d.handle_request(&reinv).expect("reinvite");
        assert_eq!(d.remote_target.to_string(), "sip:alice@192.0.2.99:5062");
        // our own requests start at CSeq 1 and go the other way round the route set
        let bye = d.new_request(Method::Bye, via());
        assert_eq!(bye.cseq().map(|c| c.seq), Some(1));
        assert_eq!(bye.from_tag().as_deref(), Some("btag"));
        assert_eq!(bye.to_tag().as_deref(), Some("atag"));
        assert_eq!(d.next_hop().host, "p1.example.org");
        // wrong dialog
        let mut other = info.clone();
        other.headers.set("From", "<sip:alice@example.org>;tag=zzz");
        assert_eq!(d.handle_request(&other), Err(DialogError::WrongDialog));
        // BYE terminates
        let peer_bye = peer.new_request(Method::Bye, via());
        d.handle_request(&peer_bye).expect("bye");
        assert_eq!(d.state, DialogState::Terminated);
    }

    #[test]
    fn strict_router_and_creation_errors() {
        let mut inv = invite();
        inv.headers.remove("Record-Route");
        inv.headers
            .push("Record-Route", "<sip:strict.example.com;transport=udp>");
        let ok = answer(&inv, 200);
        let mut d = Dialog::uac(&inv, &ok).expect("dialog");
        let bye = d.new_request(Method::Bye, via());
        // RFC 3261 §12.2.1.1 strict routing
        assert_eq!(bye.uri.to_string(), "sip:strict.example.com");
        let routes: Vec<String> = bye.routes().iter().map(|r| r.uri.to_string()).collect();
        assert_eq!(routes, ["sip:bob@198.51.100.2:5060"]);

        assert_eq!(
            Dialog::uac(&inv, &answer(&inv, 100)),
            Err(DialogError::NotDialogCreating(100))
        );
        assert_eq!(
            Dialog::uac(&inv, &answer(&inv, 486)),
            Err(DialogError::NotDialogCreating(486))
        );
        let untagged = Response::for_request(&inv, 180, "Ringing");
        assert_eq!(Dialog::uac(&inv, &untagged), Err(DialogError::MissingTag));
        assert_eq!(Dialog::uas(&inv, &untagged), Err(DialogError::MissingTag));

        // early dialog ended by a non-2xx final
        let mut e = Dialog::uac(&inv, &answer(&inv, 183)).expect("early");
        e.handle_response(&answer(&inv, 486)).expect("486");
        assert_eq!(e.state, DialogState::Terminated);
    }

    // --- two endpoints over an in-memory lossy network with a virtual clock --------------

    struct Net {
        now: Instant,
        a: TransactionLayer,
        b: TransactionLayer,
        a_addr: Peer,
        b_addr: Peer,
        /// Packets to drop, by global send index.
        drop: Vec<usize>,
        sent: usize,
        log: Vec<String>,
    }

    impl Net {
        /// Moves every queued transmit to the other side (minus drops); returns what arrived
        /// as (to_b, from_source, incoming).
        fn deliver(&mut self) -> Vec<(bool, Incoming)> {
            let mut out = Vec::new();
            loop {
                let (to_b, t) = if let Some(t) = self.a.poll_transmit() {
                    (true, t)
                } else if let Some(t) = self.b.poll_transmit() {
                    (false, t)
                } else {
                    break;
                };
                let idx = self.sent;
                self.sent += 1;
                let msg = Message::parse(&t.bytes).expect("endpoints send valid SIP");
                let what = match &msg {
                    Message::Request(r) => r.method.to_string(),
                    Message::Response(r) => r.status.to_string(),
                };
                let dropped = self.drop.contains(&idx);
                self.log.push(format!(
                    "{}{}{}",
                    if to_b { "A->B " } else { "B->A " },
                    what,
                    if dropped { " (lost)" } else { "" }
                ));
                if dropped {
                    continue;
                }
                let inc = if to_b {
                    self.b.handle_incoming(self.now, msg, self.a_addr)
                } else {
                    self.a.handle_incoming(self.now, msg, self.b_addr)
                };
                out.push((to_b, inc));
            }
            out
        }

        /// Advances the clock to the next timer of either side.
        fn tick(&mut self) -> bool {
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) => {
                    self.now = self.now.max(t);
                    self.a.handle_timeout(self.now);
                    self.b.handle_timeout(self.now);
                    true
                }
                None => false,
            }
        }
    }

    #[test]
    fn invite_200_ack_bye_over_lossy_udp() {
        let a_addr = Peer::udp("192.0.2.1:5060".parse().expect("addr"));
        let b_addr = Peer::udp("198.51.100.2:5060".parse().expect("addr"));
        let mut net = Net {
            now: Instant::now(),
            a: TransactionLayer::default(),
            b: TransactionLayer::default(),
            a_addr,
            b_addr,
            // lose the first INVITE and the first 200
            drop: vec![0, 3],
            sent: 0,
            log: Vec::new(),
        };
        let t0 = net.now;
        let mut inv = invite();
        inv.headers.remove("Record-Route");
        let inv_tx = net
            .a
            .send_request(net.now, inv.clone(), b_addr)
            .expect("send");

        let mut uac: Option<Dialog> = None;
        let mut uas: HashMap<DialogId, Dialog> = HashMap::new();
        let mut acked = false;
        let mut bye_tx: Option<TxId> = None;
        let mut bye_done = false;
        let mut a_events = Vec::new();

        for _ in 0..200 {
            for (to_b, inc) in net.deliver() {
                match (to_b, inc) {
                    // --- UAS (B) TU ---
                    (true, Incoming::Request { tx, request })
                        if request.method == Method::Invite =>
                    {
                        let tag = generate_tag(&mut fastrand::Rng::new());
                        let mut ringing = Response::for_request(&request, 180, "Ringing");
                        ringing.set_to_tag(&tag);
                        let mut ok = Response::for_request(&request, 200, "OK");
                        ok.set_to_tag(&tag);
                        ok.headers.push("Contact", "<sip:bob@198.51.100.2:5060>");
                        let d = Dialog::uas(&request, &ok).expect("uas dialog");
                        uas.insert(d.id.clone(), d);
                        let now = net.now;
                        net.b.send_response(now, tx, ringing).expect("180");
                        net.b.send_response(now, tx, ok).expect("200");
                    }
                    (true, Incoming::Ack { request, .. }) => {
                        let id = DialogId::for_incoming_request(&request).expect("ack id");
                        uas.get_mut(&id)
                            .expect("ack matches dialog")
                            .handle_request(&request)
                            .expect("ack");
                        acked = true;
                    }
                    (true, Incoming::Request { tx, request }) if request.method == Method::Bye => {
                        let id = DialogId::for_incoming_request(&request).expect("bye id");
                        let d = uas.get_mut(&id).expect("bye matches dialog");
                        d.handle_request(&request).expect("bye");
                        assert_eq!(d.state, DialogState::Terminated);
                        let now = net.now;
                        net.b
                            .send_response(now, tx, Response::for_request(&request, 200, "OK"))
                            .expect("200 BYE");
                    }
                    // --- UAC (A) TU ---
                    (false, Incoming::Response { tx, response }) if tx == inv_tx => {
                        if response.status == 180 {
                            uac = Some(Dialog::uac(&inv, &response).expect("early"));
                        } else if response.is_success() {
                            let d = uac
                                .get_or_insert_with(|| Dialog::uac(&inv, &response).expect("dlg"));
                            d.handle_response(&response).expect("2xx");
                            // ACK for every 2xx (also retransmissions, RFC 3261 §13.2.2.4)
                            let ack = d
                                .ack_for_2xx(new_via(
                                    Transport::Udp,
                                    "192.0.2.1",
                                    Some(5060),
                                    &mut fastrand::Rng::new(),
                                ))
                                .expect("ack");
                            net.a.send_stateless(b_addr, ack.to_bytes());
                            if bye_tx.is_none() {
                                let bye = d.new_request(
                                    Method::Bye,
                                    new_via(
                                        Transport::Udp,
                                        "192.0.2.1",
                                        Some(5060),
                                        &mut fastrand::Rng::new(),
                                    ),
                                );
                                let now = net.now;
                                bye_tx = Some(net.a.send_request(now, bye, b_addr).expect("bye"));
                            }
                        }
                    }
                    (false, Incoming::Response { tx, response }) if Some(tx) == bye_tx => {
                        assert_eq!(response.status, 200);
                        if let Some(d) = uac.as_mut() {
                            d.terminate();
                        }
                        bye_done = true;
                    }
                    (_, Incoming::Absorbed) => {}
                    (to_b, other) => {
                        panic!("unexpected at {}: {other:?}", if to_b { "B" } else { "A" })
                    }
                }
            }
            while let Some(e) = net.a.poll_event() {
                a_events.push(e);
            }
            while net.b.poll_event().is_some() {}
            if !net.tick() {
                break;
            }
        }
        assert!(acked, "ACK reached B; log: {:?}", net.log);
        assert!(bye_done, "BYE completed; log: {:?}", net.log);
        assert_eq!(uac.map(|d| d.state), Some(DialogState::Terminated));
        assert!(uas.values().all(|d| d.state == DialogState::Terminated));
        assert!(
            !a_events
                .iter()
                .any(|e| matches!(e, TxEvent::Timeout { .. })),
            "{a_events:?}"
        );
        // every transaction ended once the timers ran out
        assert!(net.a.is_empty() && net.b.is_empty());
        assert!(net.now - t0 < Duration::from_secs(40));
        // lost INVITE retransmitted after T1; lost 200 retransmitted by B
        assert_eq!(net.log[0], "A->B INVITE (lost)");
        assert_eq!(net.log[1], "A->B INVITE");
        assert!(
            net.log
                .iter()
                .filter(|l| l.ends_with("200") && l.starts_with("B->A"))
                .count()
                >= 2,
            "{:?}",
            net.log
        );
    }
}
