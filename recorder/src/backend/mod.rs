//! Packet I/O backends: thin shells that move datagrams between the network and the
//! [`crate::media::MediaCore`].

pub mod mmsg;
pub mod udp;
pub mod xdp_prog;
pub mod xsk;
