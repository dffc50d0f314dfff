#!/usr/bin/env bash
# Installs what linecord needs to build, run and test on a fresh Debian machine. Idempotent:
# packages already present are not fetched again, apt-get update runs only when something is
# missing. Run as root (or with sudo available).
set -euo pipefail

# Debian packages the build, the demo and the tests use (one per line, with what it is for).
APT_PACKAGES=(
  iproute2     # ip netns / veth for the test topology
  procps       # pgrep/ps used by scripts
  tshark       # reads exported pcaps in the recording tests
  iputils-ping # reachability checks of the netns topology
  ethtool      # turns veth checksum offload off in the netns topology
  clang        # compiles xdp-prog/ for -target bpf
  llvm         # llvm-objdump/llvm-strip for the BPF object
  libbpf-dev   # bpf_helpers.h for xdp-prog/
  linux-libc-dev # kernel UAPI headers (linux/bpf.h, asm/types.h)
  sip-tester   # sipp: the SIP caller and callee of the sipctl end-to-end tests and demo
  baresip-core # baresip: a real phone (SIP over TLS, hold/resume) in the sipctl end-to-end tests
  nats-server  # the scale-out processor queue (NATS JetStream) in the processor tests
  postgresql   # the scale-out index in the processor tests
  chromium     # headless browser for the web UI test
  nodejs       # runs the browser test (playwright-core from npm; this nodejs brings npm)
  dnsmasq-base # DNS server (NAPTR/SRV/A) of the sipctl RFC 3263 tests (binary only, no service)
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found. Install the Rust toolchain (https://rustup.rs, Rust >= 1.95) and re-run." >&2
  exit 1
fi
echo "setup: ok ($(cargo --version))"
