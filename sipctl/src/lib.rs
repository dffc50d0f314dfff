//! linecord's SIP server: a B2BUA that decides what to record and drives the recorder over NG.
//!
//! The SIP layers ([`sip`]), the directory, routing rules and configuration are sans-IO:
//! they take input and `now` and return what to do; the daemon wraps them in sockets.

pub mod api;
pub mod audio;
pub mod b2bua;
pub mod config;
pub mod daemon;
pub mod directory;
pub mod dns;
pub mod media;
pub mod routing;
pub mod sip;
pub mod tls;
