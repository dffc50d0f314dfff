//! The sans-IO media core shared by every packet backend: RTP/RTCP parsing, reception
//! statistics, the per-worker endpoint table that decides where each packet goes, recording
//! taps, and (for frame-level backends such as AF_XDP) Ethernet/IP/UDP parsing and in-place
//! header rewriting with incremental checksums.
//!
//! Backends (`udp` now, `xdp` later) feed it `(bytes, local port, source, now)` and carry out
//! the [`core::Action`] it returns; they never look inside packets themselves.

pub mod core;
pub mod frame;
pub mod record;
pub mod rtp;
pub mod stats;

pub use self::core::{
    Action, Component, CoreCounters, CoreEvent, DropReason, EndpointConfig, Latching, MediaCore,
};
pub use stats::{StatsSnapshot, StreamStats};
