#!/usr/bin/env bash
# The test topology (docs/architecture.md, "Test topology"): party A, party B and the recorder
# in their own network namespaces, joined by veth pairs to a bridge in a fourth namespace.
# Addresses come from 198.18.0.0/15 (RFC 2544 benchmarking range).
#
#   lc-a:   a0   198.18.0.10/24  2001:2::10/64 ─┐
#   lc-b:   b0   198.18.0.20/24  2001:2::20/64 ─┼─ lc-net: br0 (bridge)
#   lc-rec: rec0 198.18.0.1/24   2001:2::1/64  ─┘  rec0 has N RX/TX queues (default 2)
#
# IPv6 addresses come from 2001:2::/48 (RFC 5180, benchmarking).
#
# Usage: scripts/netns.sh up [QUEUES] | down | status
# `up` first removes anything left by an earlier run; `down` removes everything `up` made and
# never fails. Needs root. Names can be prefixed with LC_NETNS_PREFIX (default "lc").
set -euo pipefail

P="${LC_NETNS_PREFIX:-lc}"
NS_A="$P-a" NS_B="$P-b" NS_REC="$P-rec" NS_NET="$P-net"
ADDR_A=198.18.0.10 ADDR_B=198.18.0.20 ADDR_REC=198.18.0.1
ADDR6_A=2001:2::10 ADDR6_B=2001:2::20 ADDR6_REC=2001:2::1

down() {
  for ns in "$NS_A" "$NS_B" "$NS_REC" "$NS_NET"; do
    ip netns del "$ns" 2>/dev/null || true
  done
}

up() {
  local queues="${1:-2}"
  down
  for ns in "$NS_A" "$NS_B" "$NS_REC" "$NS_NET"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
  done
  ip -n "$NS_NET" link add br0 type bridge
  # A bridge, not a firewall: with br_netfilter loaded every bridged frame would also walk
  # the iptables hooks (a per-packet cost that no real switch adds). Per namespace.
  for t in iptables ip6tables arptables; do
    ip netns exec "$NS_NET" sysctl -qw "net.bridge.bridge-nf-call-$t=0" 2>/dev/null || true
  done
  ip -n "$NS_NET" link set br0 up
  # veth pairs are created inside the bridge namespace, then one end moves to the host's.
  ip -n "$NS_NET" link add a0p type veth peer name a0 netns "$NS_A"
  ip -n "$NS_NET" link add b0p type veth peer name b0 netns "$NS_B"
  ip -n "$NS_NET" link add rec0p numtxqueues "$queues" numrxqueues "$queues" \
    type veth peer name rec0 netns "$NS_REC" numtxqueues "$queues" numrxqueues "$queues"
  for p in a0p b0p rec0p; do
    ip -n "$NS_NET" link set "$p" master br0
    ip -n "$NS_NET" link set "$p" up
  done
  ip -n "$NS_A" addr add "$ADDR_A/24" dev a0
  ip -n "$NS_B" addr add "$ADDR_B/24" dev b0
  ip -n "$NS_REC" addr add "$ADDR_REC/24" dev rec0
  # nodad: usable at once (duplicate address detection would delay it ~1 s).
  ip -n "$NS_A" addr add "$ADDR6_A/64" dev a0 nodad
  ip -n "$NS_B" addr add "$ADDR6_B/64" dev b0 nodad
  ip -n "$NS_REC" addr add "$ADDR6_REC/64" dev rec0 nodad
  ip -n "$NS_A" link set a0 up
  ip -n "$NS_B" link set b0 up
  ip -n "$NS_REC" link set rec0 up
  # veth offloads the UDP checksum by default: frames then carry only a partial checksum,
  # which a real wire never does and which the AF_XDP path (it rewrites frames) must not see.
  ip netns exec "$NS_A" ethtool -K a0 tx off >/dev/null
  ip netns exec "$NS_B" ethtool -K b0 tx off >/dev/null
  ip netns exec "$NS_REC" ethtool -K rec0 tx off >/dev/null
  # Wait until A reaches the recorder (the bridge learns, duplicate address detection).
  for _ in $(seq 1 50); do
    if ip netns exec "$NS_A" ping -c1 -W1 "$ADDR_REC" >/dev/null 2>&1 &&
       ip netns exec "$NS_B" ping -c1 -W1 "$ADDR_REC" >/dev/null 2>&1; then
      echo "netns: up ($NS_A $ADDR_A, $NS_B $ADDR_B, $NS_REC $ADDR_REC on rec0 with $queues queues)"
      return 0
    fi
    sleep 0.1
  done
  echo "netns: the topology came up but A/B cannot reach the recorder" >&2
  [ -n "${LC_NETNS_KEEP_BROKEN:-}" ] || down
  return 1
}

status() {
  for ns in "$NS_A" "$NS_B" "$NS_REC" "$NS_NET"; do
    if ip netns list | grep -qw "$ns"; then
      echo "$ns:"; ip -n "$ns" -br addr | sed 's/^/  /'
    else
      echo "$ns: absent"
    fi
  done
}

if [ "$(id -u)" -ne 0 ]; then
  echo "netns.sh needs root (network namespaces)" >&2
  exit 2
fi
case "${1:-}" in
  up) up "${2:-2}" ;;
  down) down; echo "netns: down" ;;
  status) status ;;
  *) echo "usage: $0 up [QUEUES] | down | status" >&2; exit 2 ;;
esac
