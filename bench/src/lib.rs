//! Load generator and measurement harness for media relays that speak rtpengine's NG
//! protocol: linecord's `recorder` (either backend) and rtpengine itself, measured with the
//! same load in the same run (docs/benchmarks.md).
//!
//! The pure parts ([`measure`], [`packet`], [`report`]) are unit-tested; [`traffic`] is the
//! generator (one thread per party, each in its party's network namespace, batched
//! `sendmmsg`/`recvmmsg`), [`calls`] sets calls up over NG, [`procfs`] reads the relay's CPU
//! and memory.

pub mod calls;
pub mod measure;
pub mod netns;
pub mod packet;
pub mod procfs;
pub mod recorded;
pub mod report;
pub mod traffic;
