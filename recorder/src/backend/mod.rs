//! Packet I/O backends: thin shells that move datagrams between the network and the
//! [`crate::media::MediaCore`]. The worker loop, its commands and counters are shared
//! ([`worker`]); each backend (`udp`, `xdp`, `xdp_sink`) adds only its I/O steps.

pub mod neigh;
pub mod netlink;
pub mod udp;
pub mod worker;
pub mod xdp;
pub mod xdp_prog;
pub mod xdp_sink;
pub mod xsk;
