//! The targets, by the part of linecord whose input they decode.

mod jobs;
mod media;
mod ng;
mod recfile;
mod sdp;
mod sip;

use std::time::Duration;

use crate::{Bound, Target};

const MS: Duration = Duration::from_millis(1);
const NS: Duration = Duration::from_nanos(1);

/// A parser: a few KiB fixed, at most 64 bytes live and 256 allocated per input byte.
const PARSER: Bound = Bound {
    peak_fixed: 64 << 10,
    peak_per_byte: 64,
    total_fixed: 256 << 10,
    total_per_byte: 256,
    time_fixed: MS.saturating_mul(50),
    time_per_byte: NS.saturating_mul(2_000),
};

/// A recording: lz4 blocks decompress up to 255 times their size, and the reader keeps a
/// copy of the file; export adds one minute of WAV at most (1.9 MB written, not kept).
const RECORDING: Bound = Bound {
    peak_fixed: 4 << 20,
    peak_per_byte: 600,
    total_fixed: 16 << 20,
    total_per_byte: 2_000,
    time_fixed: MS.saturating_mul(200),
    time_per_byte: NS.saturating_mul(20_000),
};

/// Every target, in the order `scripts/fuzz.sh` runs them.
pub static TARGETS: &[Target] = &[
    Target {
        name: "sip_message",
        what: "sipctl's SIP message parser and header views (UDP datagrams)",
        run: sip::message,
        max_len: 65_535,
        bound: PARSER,
    },
    Target {
        name: "sip_framer",
        what: "sipctl's TCP stream framer, fed in pieces, and the messages it cuts",
        run: sip::framer,
        max_len: 200_000,
        bound: PARSER,
    },
    Target {
        name: "sip_b2bua",
        what: "the sans-IO B2BUA on message sequences, with a fake recorder and a called phone",
        run: sip::b2bua,
        max_len: 65_535,
        bound: Bound {
            // The transaction layer, dialogs and the NG client of a few calls.
            peak_fixed: 2 << 20,
            total_fixed: 8 << 20,
            total_per_byte: 2_048,
            ..PARSER
        },
    },
    Target {
        name: "bencode",
        what: "the NG protocol's bencode decoder, and re-encoding of what it decodes",
        run: ng::bencode,
        max_len: 65_535,
        bound: PARSER,
    },
    Target {
        name: "ng_request",
        what: "NG datagrams: cookie, bencode, typed request",
        run: ng::request,
        max_len: 65_535,
        bound: PARSER,
    },
    Target {
        name: "ng_controller",
        what: "the recorder's NG controller and call table on a request sequence (no sockets)",
        run: ng::controller,
        max_len: 65_535,
        bound: Bound {
            // The port pool (5 000 pairs) and the reply cache's index are the fixed cost.
            peak_fixed: 1 << 20,
            total_fixed: 2 << 20,
            ..PARSER
        },
    },
    Target {
        name: "sdp",
        what: "SDP parsing, inspection and the relay's rewrite (output must parse again)",
        run: sdp::parse_and_rewrite,
        max_len: 65_535,
        bound: Bound {
            // A parsed media description costs ~1.5 KB and an `m=` line can be ~20 bytes: up
            // to ~80 bytes per input byte (found by this target: 772 835 B for 9 965 bytes),
            // at most ~5 MB for the largest SDP the parser takes. The recorder refuses more
            // than 16 media lines or 16 KB (`--max-media-per-call`, `--max-sdp-size`) before
            // parsing.
            peak_per_byte: 128,
            total_per_byte: 512,
            ..PARSER
        },
    },
    Target {
        name: "media_frame",
        what: "Ethernet/VLAN/IPv4/IPv6/UDP frame parser of the AF_XDP path, and its rewrite",
        run: media::frame,
        max_len: 9_000,
        bound: PARSER,
    },
    Target {
        name: "media_core",
        what: "the media core (latching, RTP stats, DTMF, recording blocks) on a packet sequence",
        run: media::core,
        max_len: 65_535,
        bound: Bound {
            // The recording buffer pool (1 MiB budget) is part of the fixed cost.
            peak_fixed: 2 << 20,
            total_fixed: 4 << 20,
            ..PARSER
        },
    },
    Target {
        name: "lcr_read",
        what: "the .lcr reader: recovery of every complete block, records, streams, stats",
        run: recfile::read,
        max_len: 262_144,
        bound: RECORDING,
    },
    Target {
        name: "lcr_export",
        what: "WAV (capped at one minute) and pcap export of a .lcr",
        run: recfile::export,
        max_len: 262_144,
        bound: RECORDING,
    },
    Target {
        name: "job",
        what: "processor-queue jobs (recording and event JSON from the spool or JetStream)",
        run: jobs::job,
        max_len: 65_535,
        bound: PARSER,
    },
];
