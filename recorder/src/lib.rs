//! linecord's media server as a library: the sans-IO cores and the I/O shells around them.
//!
//! - [`media`]: the packet-level core (RTP parsing, statistics, the endpoint table and the
//!   per-packet decision), used unchanged by every backend.
//! - [`control`]: the NG protocol state machine and the call table (offer/answer/delete,
//!   query), driven with explicit time.
//! - [`ports`]: media port pair allocation.
//! - [`backend`]: packet I/O shells (`udp`: kernel sockets with recvmmsg/sendmmsg).
//! - [`config`], [`daemon`]: the binary's configuration and its control thread.

pub mod backend;
pub mod config;
pub mod control;
pub mod daemon;
pub mod media;
pub mod ports;
pub mod recording;
pub mod tools;
