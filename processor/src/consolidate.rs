//! Consolidation: recordings and call events with the same global call id, from any number
//! of switches and recorders, arriving in any order and possibly more than once, become one
//! interaction with its segments and a timeline.
//!
//! Everything here is a pure function of the rows known for a call, so the result does not
//! depend on arrival order: a repository stores rows idempotently (keyed by
//! `recording_id` / `event_id`) and calls [`consolidate`] again whenever a row of the call
//! changes. The join rules follow `docs/processor-queue.md`:
//!
//! * an event belongs to the interaction `global_call_id`;
//! * a recording belongs to the interaction of an event whose `recording.recording_id` is
//!   its `recording_id`, else of an event whose `recording.ng_call_id` is its `call_id`, else
//!   (no such event yet) to the interaction named by its own `call_id` — `sipctl` uses the
//!   global call id as the NG call-id, so the two agree once the events arrive.

use std::collections::BTreeSet;

use crate::model::{EventRow, InteractionRow, RecordingRow};

/// What `sipctl` (or another controller) put into the NG `metadata` of a recording:
/// `caller=..;callee=..;dn=..;switch=..` (`agent=` is taken as the DN too). Unknown keys
/// are ignored, empty values are absent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    /// `caller=`.
    pub caller: Option<String>,
    /// `callee=`.
    pub callee: Option<String>,
    /// `dn=` (or `agent=`).
    pub dn: Option<String>,
    /// `switch=`.
    pub switch: Option<String>,
}

/// Parses `key=value;key=value` metadata (see [`Metadata`]).
pub fn parse_metadata(text: &str) -> Metadata {
    let mut m = Metadata::default();
    for part in text.split(';') {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        let slot = match k.trim().to_ascii_lowercase().as_str() {
            "caller" => &mut m.caller,
            "callee" => &mut m.callee,
            "dn" => &mut m.dn,
            "agent" => {
                if m.dn.is_some() {
                    continue;
                }
                &mut m.dn
            }
            "switch" => &mut m.switch,
            _ => continue,
        };
        *slot = Some(v.to_owned());
    }
    m
}

/// Order of events in a timeline: time, then `seq`, then switch and id (so equal times
/// still sort the same way everywhere).
fn event_key(e: &EventRow) -> (u64, u64, &str, &str) {
    (e.time_ms, e.seq, e.switch.as_str(), e.event_id.as_str())
}

/// The events sorted for a timeline (`event_key`) with duplicates (same `event_id`)
/// dropped.
pub fn timeline(events: &[EventRow]) -> Vec<EventRow> {
    let mut v: Vec<EventRow> = events.to_vec();
    v.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    v.dedup_by(|a, b| a.event_id == b.event_id);
    v.sort_by(|a, b| event_key(a).cmp(&event_key(b)));
    v
}

/// Which interaction a recording belongs to, given the events that name it (by
/// `recording_id` or by `ng_call_id`; others are ignored). See the module documentation.
pub fn interaction_id_for(recording_id: &str, call_id: &str, events: &[EventRow]) -> String {
    let by_id = events
        .iter()
        .filter(|e| e.recording_id.as_deref() == Some(recording_id))
        .min_by(|a, b| event_key(a).cmp(&event_key(b)));
    let by_call = || {
        events
            .iter()
            .filter(|e| e.ng_call_id.as_deref() == Some(call_id))
            .min_by(|a, b| event_key(a).cmp(&event_key(b)))
    };
    by_id
        .or_else(by_call)
        .map_or_else(|| call_id.to_owned(), |e| e.global_call_id.clone())
}

/// The events of the interaction that concern one recording: those naming its
/// `recording_id`, else those naming its NG call-id.
fn events_of<'a>(rec: &RecordingRow, events: &'a [EventRow]) -> Vec<&'a EventRow> {
    let by_id: Vec<&EventRow> = events
        .iter()
        .filter(|e| e.recording_id.as_deref() == Some(rec.recording_id.as_str()))
        .collect();
    if !by_id.is_empty() {
        return by_id;
    }
    events
        .iter()
        .filter(|e| e.ng_call_id.as_deref() == Some(rec.call_id.as_str()))
        .collect()
}

/// Parties and switch of a segment: the recording's metadata first, then the events that
/// concern it, then any event of the interaction (earliest first).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SegmentParties {
    /// Caller number.
    pub caller: Option<String>,
    /// Callee number.
    pub callee: Option<String>,
    /// Agent DN.
    pub dn: Option<String>,
    /// Switch name.
    pub switch: Option<String>,
}

/// See [`SegmentParties`]. `events` should be the interaction's [`timeline`].
pub fn segment_parties(rec: &RecordingRow, events: &[EventRow]) -> SegmentParties {
    let own = events_of(rec, events);
    let pick = |f: &dyn Fn(&EventRow) -> Option<String>| {
        own.iter()
            .find_map(|e| f(e))
            .or_else(|| events.iter().find_map(f))
    };
    SegmentParties {
        caller: rec.caller.clone().or_else(|| pick(&|e| e.caller.clone())),
        callee: rec.callee.clone().or_else(|| pick(&|e| e.callee.clone())),
        dn: rec.dn.clone().or_else(|| pick(&|e| e.agent_dn.clone())),
        switch: rec
            .switch
            .clone()
            .or_else(|| pick(&|e| Some(e.switch.clone()))),
    }
}

/// Builds the interaction `id` from all its events and recordings (any order, duplicates
/// allowed). `None` when there is nothing left of it.
///
/// * start: earliest event time or recording start; end: latest `released` event or
///   recording end (`None` while there is neither);
/// * caller/callee: from the first event that has them, else from the first recording's
///   metadata;
/// * DNs: every event's `agent_dn` and every recording's metadata DN;
/// * quality: the worst recording MOS; packet loss over all recordings' RTP packets;
/// * legal hold: any recording under hold.
pub fn consolidate(
    id: &str,
    events: &[EventRow],
    recordings: &[RecordingRow],
) -> Option<InteractionRow> {
    let events = timeline(events);
    let mut recs: Vec<&RecordingRow> = recordings.iter().collect();
    recs.sort_by(|a, b| {
        (a.start_ms, a.recording_id.as_str()).cmp(&(b.start_ms, b.recording_id.as_str()))
    });
    recs.dedup_by(|a, b| a.recording_id == b.recording_id);
    if events.is_empty() && recs.is_empty() {
        return None;
    }
    let start_ms = events
        .iter()
        .map(|e| e.time_ms)
        .chain(recs.iter().map(|r| r.start_ms))
        .min()
        .unwrap_or(0);
    let end_ms = events
        .iter()
        .filter(|e| e.kind == "released")
        .map(|e| e.time_ms)
        .chain(recs.iter().map(|r| r.end_ms))
        .max();
    let duration_ms = end_ms.map_or(0, |e| e.saturating_sub(start_ms));
    let caller = events
        .iter()
        .find_map(|e| e.caller.clone())
        .or_else(|| recs.iter().find_map(|r| r.caller.clone()));
    let callee = events
        .iter()
        .find_map(|e| e.callee.clone())
        .or_else(|| recs.iter().find_map(|r| r.callee.clone()));
    let dns: BTreeSet<String> = events
        .iter()
        .filter_map(|e| e.agent_dn.clone())
        .chain(recs.iter().filter_map(|r| r.dn.clone()))
        .filter(|d| !d.is_empty())
        .collect();
    let mos = recs
        .iter()
        .filter_map(|r| r.analysis.mos)
        .min_by(|a, b| a.total_cmp(b));
    let expected: u64 = recs.iter().map(|r| r.analysis.packets_expected).sum();
    let lost: u64 = recs.iter().map(|r| r.analysis.packets_lost).sum();
    let packet_loss = (expected > 0).then(|| lost as f64 / expected as f64);

    let mut text: Vec<String> = vec![id.to_owned()];
    text.extend(caller.iter().cloned());
    text.extend(callee.iter().cloned());
    text.extend(dns.iter().cloned());
    for e in &events {
        text.push(e.switch.clone());
        text.push(e.party_text.clone());
    }
    for r in &recs {
        text.extend(r.metadata.iter().cloned());
        text.extend(r.switch.iter().cloned());
        // `q=partial`, `q=damaged`, … find interactions with such a recording.
        text.push(r.status.clone());
    }
    text.sort();
    text.dedup();
    Some(InteractionRow {
        id: id.to_owned(),
        start_ms,
        end_ms,
        duration_ms,
        caller,
        callee,
        dns: dns.into_iter().collect(),
        segments: u32::try_from(recs.len()).unwrap_or(u32::MAX),
        recorded_ms: recs.iter().map(|r| r.duration_ms).sum(),
        mos,
        packet_loss,
        legal_hold: recs.iter().any(|r| r.legal_hold),
        search_text: text.join(" ").to_lowercase(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::Analysis;

    pub(crate) fn ev(id: &str, switch: &str, seq: u64, kind: &str, t: u64) -> EventRow {
        EventRow {
            event_id: id.into(),
            global_call_id: "g1".into(),
            switch: switch.into(),
            switch_call_id: format!("{switch}-c"),
            kind: kind.into(),
            time_ms: t,
            seq,
            ng_call_id: Some("g1".into()),
            recording_id: None,
            caller: Some("+4930123".into()),
            callee: Some("1001".into()),
            agent_dn: Some(if switch == "sw2" { "2002" } else { "1001" }.into()),
            status_code: None,
            reason: None,
            party_text: "+4930123 1001 alice".into(),
        }
    }

    pub(crate) fn rec(id: &str, call_id: &str, start: u64, end: u64, mos: f64) -> RecordingRow {
        RecordingRow {
            recording_id: id.into(),
            call_id: call_id.into(),
            start_ms: start,
            end_ms: end,
            duration_ms: end - start,
            status: "complete".into(),
            metadata: Some("caller=+4930123;callee=1001;dn=1001;switch=sw1".into()),
            caller: Some("+4930123".into()),
            callee: Some("1001".into()),
            dn: Some("1001".into()),
            switch: Some("sw1".into()),
            analysis: Analysis {
                mos: Some(mos),
                packets_expected: 100,
                packets_lost: 2,
                ..Analysis::default()
            },
            ..RecordingRow::default()
        }
    }

    #[test]
    fn metadata_is_parsed() {
        let m = parse_metadata("caller=100;callee=2001;dn=;switch=sw1;rule=x");
        assert_eq!(m.caller.as_deref(), Some("100"));
        assert_eq!(m.callee.as_deref(), Some("2001"));
        assert_eq!(m.dn, None);
        assert_eq!(m.switch.as_deref(), Some("sw1"));
        assert_eq!(
            parse_metadata("agent=1001;queue=sales").dn.as_deref(),
            Some("1001")
        );
        assert_eq!(
            parse_metadata("dn=7;agent=1001").dn.as_deref(),
            Some("7"),
            "dn= wins over agent="
        );
        assert_eq!(parse_metadata("garbage;;=x"), Metadata::default());
    }

    #[test]
    fn arrival_order_and_duplicates_do_not_matter() {
        let events = vec![
            ev("e1", "sw1", 0, "created", 1000),
            ev("e2", "sw1", 1, "answered", 2000),
            ev("e3", "sw2", 0, "created", 1500),
            ev("e4", "sw2", 1, "released", 9000),
            ev("e5", "sw1", 2, "released", 9500),
        ];
        let recs = vec![
            rec("r1", "g1", 2000, 5000, 4.2),
            rec("r2", "g1", 5000, 9000, 3.1),
        ];
        let want = consolidate("g1", &events, &recs).expect("interaction");
        assert_eq!(want.start_ms, 1000);
        assert_eq!(want.end_ms, Some(9500));
        assert_eq!(want.duration_ms, 8500);
        assert_eq!(want.segments, 2);
        assert_eq!(want.recorded_ms, 7000);
        assert_eq!(want.mos, Some(3.1));
        assert_eq!(want.packet_loss, Some(0.02));
        assert_eq!(want.dns, ["1001", "2002"], "DNs of both switches");
        assert_eq!(want.caller.as_deref(), Some("+4930123"));
        assert!(want.search_text.contains("alice"));
        // Every rotation and the reverse, with duplicates, give the same interaction.
        for k in 0..events.len() {
            let mut e = events.clone();
            e.rotate_left(k);
            e.push(events[k].clone());
            let mut r = recs.clone();
            r.rotate_left(k % 2);
            r.push(recs[k % 2].clone());
            assert_eq!(
                consolidate("g1", &e, &r).as_ref(),
                Some(&want),
                "rotation {k}"
            );
            e.reverse();
            r.reverse();
            assert_eq!(
                consolidate("g1", &e, &r).as_ref(),
                Some(&want),
                "reversed {k}"
            );
        }
    }

    #[test]
    fn timeline_orders_by_time_then_seq_across_switches() {
        let events = vec![
            ev("b", "sw2", 1, "answered", 2000),
            ev("a", "sw1", 1, "ringing", 1000),
            ev("c", "sw1", 0, "created", 1000),
            ev("a", "sw1", 1, "ringing", 1000),
            ev("d", "sw2", 0, "created", 1500),
        ];
        let ids: Vec<String> = timeline(&events).into_iter().map(|e| e.event_id).collect();
        assert_eq!(ids, ["c", "a", "d", "b"]);
    }

    #[test]
    fn recordings_join_by_recording_id_then_ng_call_id() {
        let mut e1 = ev("e1", "sw1", 3, "recording_started", 10);
        e1.global_call_id = "G".into();
        e1.ng_call_id = Some("ng-1".into());
        let mut e2 = ev("e2", "sw2", 0, "recording_started", 5);
        e2.global_call_id = "H".into();
        e2.ng_call_id = Some("ng-2".into());
        e2.recording_id = Some("r9".into());
        let events = [e1, e2];
        assert_eq!(interaction_id_for("r1", "ng-1", &events), "G");
        assert_eq!(interaction_id_for("r9", "ng-1", &events), "H", "id wins");
        assert_eq!(interaction_id_for("r2", "other", &events), "other");
        assert_eq!(interaction_id_for("r2", "other", &[]), "other");
    }

    #[test]
    fn segment_parties_fall_back_to_events() {
        let mut r = rec("r1", "g1", 0, 1, 4.0);
        r.caller = None;
        r.dn = None;
        r.switch = None;
        let events = timeline(&[ev("e1", "sw2", 0, "created", 5)]);
        let p = segment_parties(&r, &events);
        assert_eq!(p.caller.as_deref(), Some("+4930123"));
        assert_eq!(p.callee.as_deref(), Some("1001"));
        assert_eq!(p.dn.as_deref(), Some("2002"));
        assert_eq!(p.switch.as_deref(), Some("sw2"));
        assert_eq!(segment_parties(&r, &[]).switch, None);
    }

    #[test]
    fn nothing_left_is_no_interaction() {
        assert_eq!(consolidate("x", &[], &[]), None);
        let only_events =
            consolidate("g1", &[ev("e1", "sw1", 0, "created", 7)], &[]).expect("interaction");
        assert_eq!(only_events.end_ms, None);
        assert_eq!(only_events.duration_ms, 0);
        assert_eq!(only_events.mos, None);
        assert_eq!(only_events.packet_loss, None);
    }
}
