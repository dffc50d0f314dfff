//! The XDP program (`xdp-prog/linecord_xdp.c`, compiled by `build.rs` and embedded): loading,
//! attaching, the media-port map and the counters.
//!
//! The program redirects UDP packets whose destination port is marked in `media_ports` to
//! the AF_XDP socket of the receiving queue (`xsks`); everything else passes to the kernel.
//! Attaching uses a BPF link, which the kernel removes when the process ends, so a crashed
//! recorder leaves no program behind; dropping [`XdpProgram`] detaches it.

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use aya::maps::{Array, MapData, PerCpuArray, XskMap};
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};

/// `LINECORD_PORTS` of `xdp-prog/linecord_xdp.h`.
const PORTS: u32 = 65_536;
/// `LINECORD_MAX_QUEUES`.
const MAX_QUEUES: u32 = 256;
/// `LC_COUNTERS` (`enum linecord_counter`).
const COUNTERS: u32 = 3;

/// The compiled program. `include_bytes!` gives no alignment guarantee and the ELF parser
/// wants 8; a heap copy is aligned for any type.
static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/linecord_xdp.o"));

/// Why the program could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum XdpProgError {
    /// The object did not load (verifier, BTF, permissions).
    #[error("loading the XDP program: {0}")]
    Load(String),
    /// Neither native nor generic attach worked.
    #[error("attaching the XDP program to {interface}: {reason}")]
    Attach {
        /// Interface name.
        interface: String,
        /// What the kernel said.
        reason: String,
    },
    /// A map is missing or has an unexpected type.
    #[error("XDP program map {0}: {1}")]
    Map(&'static str, String),
    /// A map update failed.
    #[error("updating {0}: {1}")]
    Update(&'static str, String),
}

/// How the program runs on the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (fast path).
    Native,
    /// In the kernel's generic path (any driver, slower).
    Generic,
}

/// Packet counters of the program, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpCounters {
    /// Media packets handed to `bpf_redirect_map`.
    pub redirected: u64,
    /// Packets left to the kernel.
    pub passed: u64,
    /// Malformed or truncated headers (passed too).
    pub parse_errors: u64,
}

/// A loaded and attached program.
pub struct XdpProgram {
    // Field order matters for drop: the maps' fds close before the program (and its link).
    ports: Array<MapData, u8>,
    xsks: XskMap<MapData>,
    counters: PerCpuArray<MapData, u64>,
    _bpf: Ebpf,
    mode: AttachMode,
    interface: String,
}

fn aligned_object() -> Vec<u8> {
    OBJECT.to_vec()
}

/// A raw fd for [`XdpProgram::set_socket`] (the socket itself lives on its worker thread).
pub struct RawFdRef(pub i32);

impl AsRawFd for RawFdRef {
    fn as_raw_fd(&self) -> i32 {
        self.0
    }
}

impl XdpProgram {
    /// Loads the program and attaches it to `interface`: native mode first, generic mode
    /// (with a warning naming the reason) if the driver refuses. Only UDP to `local` (when
    /// given) on an active media port is steered; `None` means any address of the host.
    pub fn attach(interface: &str, local: Option<IpAddr>) -> Result<XdpProgram, XdpProgError> {
        let object = aligned_object();
        // Network byte order, as the program compares it with the header field.
        let ip4: u32 = match local {
            Some(IpAddr::V4(a)) => u32::from_ne_bytes(a.octets()),
            _ => 0,
        };
        let ip6: [u8; 16] = match local {
            Some(IpAddr::V6(a)) => a.octets(),
            _ => [0; 16],
        };
        // Two words in memory order, as the program reads the header.
        let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]));
        let (ip6_hi, ip6_lo) = (word(&ip6[..8]), word(&ip6[8..]));
        let mut bpf = EbpfLoader::new()
            .override_global("local_ip4", &ip4, true)
            .override_global("local_ip6_hi", &ip6_hi, true)
            .override_global("local_ip6_lo", &ip6_lo, true)
            .load(&object)
            .map_err(|e| XdpProgError::Load(format!("{e:#}")))?;
        let prog: &mut Xdp = bpf
            .program_mut("linecord_xdp")
            .ok_or_else(|| XdpProgError::Load("program linecord_xdp not in the object".into()))?
            .try_into()
            .map_err(|e| XdpProgError::Load(format!("{e}")))?;
        prog.load()
            .map_err(|e| XdpProgError::Load(format!("{e:#}")))?;
        let mode = match prog.attach(interface, XdpMode::Driver) {
            Ok(_) => AttachMode::Native,
            Err(native) => {
                tracing::warn!(
                    interface,
                    reason = %native,
                    "native XDP refused by the driver; using generic XDP (slower)"
                );
                prog.attach(interface, XdpMode::Skb)
                    .map_err(|e| XdpProgError::Attach {
                        interface: interface.into(),
                        reason: format!("native: {native}; generic: {e}"),
                    })?;
                AttachMode::Generic
            }
        };
        let take = |bpf: &mut Ebpf, name: &'static str| {
            bpf.take_map(name)
                .ok_or_else(|| XdpProgError::Map(name, "missing".into()))
        };
        let ports = Array::try_from(take(&mut bpf, "media_ports")?)
            .map_err(|e| XdpProgError::Map("media_ports", e.to_string()))?;
        let xsks = XskMap::try_from(take(&mut bpf, "xsks")?)
            .map_err(|e| XdpProgError::Map("xsks", e.to_string()))?;
        let counters = PerCpuArray::try_from(take(&mut bpf, "counters")?)
            .map_err(|e| XdpProgError::Map("counters", e.to_string()))?;
        // The kernel/user ABI: map sizes must be what this loader was built for (one header,
        // linecord_xdp.h, defines both); a mismatch fails here, not in traffic.
        for (name, got, want) in [
            ("media_ports", ports.len(), PORTS),
            ("xsks", xsks.len(), MAX_QUEUES),
            ("counters", counters.len(), COUNTERS),
        ] {
            if got != want {
                return Err(XdpProgError::Map(
                    name,
                    format!("has {got} entries, the loader expects {want} (stale xdp-prog build?)"),
                ));
            }
        }
        tracing::info!(interface, ?mode, "XDP program attached");
        Ok(XdpProgram {
            ports,
            xsks,
            counters,
            _bpf: bpf,
            mode,
            interface: interface.into(),
        })
    }

    /// How the program runs.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// The interface it is attached to.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// Marks `port` as an active media port (its packets go to the AF_XDP sockets) or not.
    pub fn set_media_port(&mut self, port: u16, active: bool) -> Result<(), XdpProgError> {
        self.ports
            .set(u32::from(port), u8::from(active), 0)
            .map_err(|e| XdpProgError::Update("media_ports", e.to_string()))
    }

    /// Puts the AF_XDP socket of RX queue `queue` into the redirect map.
    pub fn set_socket(&mut self, queue: u32, socket: &impl AsRawFd) -> Result<(), XdpProgError> {
        self.xsks
            .set(queue, socket.as_raw_fd(), 0)
            .map_err(|e| XdpProgError::Update("xsks", e.to_string()))
    }

    /// The program's counters.
    pub fn counters(&self) -> XdpCounters {
        let sum = |i: u32| -> u64 {
            self.counters
                .get(&i, 0)
                .map(|per_cpu| per_cpu.iter().sum())
                .unwrap_or(0)
        };
        XdpCounters {
            redirected: sum(0),
            passed: sum(1),
            parse_errors: sum(2),
        }
    }
}
