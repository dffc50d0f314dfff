//! Load generator and measurement harness for media relays that speak rtpengine's NG
//! protocol: linecord's `recorder` (either backend) and rtpengine itself, measured with the
//! same load in the same run (docs/benchmarks.md).
//!
//! A run measures every target once per round, in interleaved rounds ([`rounds`]: medians,
//! ranges and ratios within rounds); the per-packet budget comes from criterion's estimates
//! ([`budget`]).
//!
//! The pure parts ([`measure`], [`packet`], [`report`], [`rounds`]) are unit-tested; [`traffic`] is the
//! generator (one thread per party, each in its party's network namespace, batched
//! `sendmmsg`/`recvmmsg`), [`calls`] sets calls up over NG, [`procfs`] reads the relay's CPU
//! and memory.

pub mod budget;
pub mod calls;
pub mod measure;
pub mod netns;
pub mod packet;
pub mod procfs;
pub mod recorded;
pub mod report;
pub mod rounds;
pub mod traffic;
