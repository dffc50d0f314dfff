//! Packet I/O backends: thin shells that move datagrams between the network and the
//! [`crate::media::MediaCore`].

pub mod neigh;
pub mod netlink;
pub mod udp;
pub mod xdp;
pub mod xdp_prog;
pub mod xdp_sink;
pub mod xsk;
