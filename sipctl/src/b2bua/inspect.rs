//! What every request goes through before a call sees it (RFC 3261 §8.2: method, scheme,
//! Require, body and Accept), the dialog lookup of in-dialog requests, and the registrar.

use super::*;

impl B2bua {
    /// RFC 3261 §8.2: method inspection (out of dialog), then the Request-URI scheme, then
    /// Require, then the dialog or the method's handler (which inspect the body).
    pub(super) fn on_request(&mut self, now: Now, tx: TxId, req: Request, source: Peer) {
        let to_tag = req.to_tag();
        if to_tag.is_none() {
            // §8.2.1: a method sipctl does not know gets 501, one it knows but does not take
            // outside a dialog 405; both list what it takes (RFC 4475 §3.1.1.2, §3.1.1.5).
            let status = match &req.method {
                Method::Invite | Method::Register | Method::Options | Method::Bye => None,
                Method::Other(_) => Some(501),
                _ => Some(405),
            };
            if let Some(status) = status {
                let mut resp = Response::for_request(&req, status, reason_phrase(status));
                resp.headers.push("Allow", ALLOW);
                return self.send_response(now, tx, resp);
            }
        }
        // §8.2.2.1: a Request-URI scheme sipctl does not serve (RFC 4475 §3.3.2, §3.3.3).
        if !SCHEMES.contains(&req.uri.scheme.as_str()) {
            return self.respond(now, tx, &req, 416, None);
        }
        // §8.2.2.3: of what a request can require sipctl supports only session timers
        // (RFC 4028, when on); it sends no reliable provisional responses (no 100rel towards
        // the caller). Proxy-Require is for proxies and ignored (RFC 4475 §3.3.5).
        let timers = self.config.session_timer.is_some();
        let unsupported: Vec<String> = req
            .headers
            .values("Require")
            .into_iter()
            .filter(|t| !(timers && t.trim().eq_ignore_ascii_case("timer")))
            .map(str::to_owned)
            .collect();
        if !unsupported.is_empty() {
            let mut resp = Response::for_request(&req, 420, reason_phrase(420));
            resp.headers.push("Unsupported", unsupported.join(", "));
            return self.send_response(now, tx, resp);
        }
        if to_tag.is_some() {
            // RFC 3261 §12.2.2: the dialog table finds the dialog (Call-ID, To and From tags),
            // checks the CSeq order and applies the request; 481 or 500 when it does not fit.
            match self.dialogs.route_request(&req) {
                Ok((_, owner)) if owner.pending => {
                    // A transfer target that has not answered yet: the transfer is the op.
                    let mut resp = Response::for_request(&req, 491, "Request Pending");
                    resp.headers.push("Retry-After", 1);
                    self.send_response(now, tx, resp);
                }
                Ok((_, owner)) => self.on_in_dialog(now, owner.call, owner.side, tx, req),
                Err(unrouted) => self.respond(now, tx, &req, unrouted.status(), None),
            }
            return;
        }
        match req.method {
            Method::Invite => self.on_invite(now, tx, req, source),
            Method::Register => self.on_register(now, tx, &req),
            Method::Options => {
                // §11.2: Allow and Accept; RFC 4475 §3.3.11: Max-Forwards 0 only stops
                // forwarding, the endpoint answers.
                let mut resp = Response::for_request(&req, 200, "OK");
                resp.set_to_tag(&generate_tag(&mut self.rng));
                resp.headers.push("Allow", ALLOW);
                resp.headers.push("Accept", "application/sdp");
                self.send_response(now, tx, resp);
            }
            _ => self.respond(now, tx, &req, 481, None),
        }
    }

    /// What an INVITE's body and Accept header rule out before anything else is done with
    /// it (RFC 3261 §8.2.3): a body that is not SDP, or in an encoding other than identity,
    /// gets 415 with Accept / Accept-Encoding (RFC 4475 §3.3.6); an Accept that leaves no
    /// room for an SDP answer gets 406 (RFC 4475 §3.3.15). An empty body passes (it is handled
    /// by the caller: 488 for an initial INVITE, a session refresh in a dialog).
    pub(super) fn invite_body_refusal(req: &Request) -> Option<Response> {
        if !req.body.is_empty() {
            let encoding = req.headers.values("Content-Encoding");
            if encoding.iter().any(|e| !e.eq_ignore_ascii_case("identity")) {
                let mut resp = Response::for_request(req, 415, reason_phrase(415));
                resp.headers.push("Accept-Encoding", "identity");
                return Some(resp);
            }
            if !req.content_type().is_some_and(is_sdp_type) {
                let mut resp = Response::for_request(req, 415, reason_phrase(415));
                resp.headers.push("Accept", "application/sdp");
                return Some(resp);
            }
        }
        let accept = req.headers.values("Accept");
        if req.headers.contains("Accept") && !accept.iter().any(|a| accepts_sdp(a)) {
            let mut resp = Response::for_request(req, 406, reason_phrase(406));
            resp.headers.push(
                "Warning",
                "399 sipctl \"the answer is application/sdp, which Accept does not list\"",
            );
            return Some(resp);
        }
        None
    }

    pub(super) fn on_register(&mut self, now: Now, tx: TxId, req: &Request) {
        let Some(to) = req.to_addr() else {
            return self.respond(now, tx, req, 400, None);
        };
        // RFC 3261 §10.2 / RFC 4475 §3.3.4: the address-of-record is a SIP or SIPS URI.
        if !matches!(to.uri.scheme.as_str(), "sip" | "sips") {
            return self.respond(now, tx, req, 400, None);
        }
        let Some(number) = to.uri.user.clone() else {
            return self.respond(now, tx, req, 404, None);
        };
        let expires_header = req
            .headers
            .get("Expires")
            .and_then(|e| e.trim().parse::<u32>().ok());
        let contact = req.contact();
        let expires = contact
            .as_ref()
            .and_then(|c| {
                c.param("expires")
                    .and_then(|p| p.value.as_deref())
                    .and_then(|v| v.parse().ok())
            })
            .or(expires_header)
            .unwrap_or(3600);
        let Some(contact) = contact else {
            // A query: answer with the current binding.
            let mut resp = Response::for_request(req, 200, "OK");
            resp.set_to_tag(&generate_tag(&mut self.rng));
            if let Some(r) = self.directory.registration(&number, now.unix_ms / 1000) {
                resp.headers.push("Contact", format!("<{}>", r.contact));
            }
            return self.send_response(now, tx, resp);
        };
        match self.directory.register(
            &number,
            &contact.uri.to_string(),
            expires,
            now.unix_ms / 1000,
        ) {
            Ok(granted) => {
                let mut resp = Response::for_request(req, 200, "OK");
                resp.set_to_tag(&generate_tag(&mut self.rng));
                if granted > 0 {
                    resp.headers
                        .push("Contact", format!("<{}>;expires={granted}", contact.uri));
                }
                self.send_response(now, tx, resp);
            }
            Err(crate::directory::DirectoryError::UnknownDn(_)) => {
                self.respond(now, tx, req, 404, None)
            }
            Err(_) => self.respond(now, tx, req, 400, None),
        }
    }

    pub(super) fn trusted(&self, ip: IpAddr) -> bool {
        self.config.trusted_peers.iter().any(|n| n.contains(ip))
    }
}
