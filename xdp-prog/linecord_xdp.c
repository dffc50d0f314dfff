// SPDX-License-Identifier: GPL-2.0 OR MIT
/* linecord's XDP program: steer UDP packets addressed to an active media port on the
 * recorder's media address to the AF_XDP socket of the receiving queue; everything else (ARP, SIP, SSH, the
 * NG control port, other UDP) goes on to the kernel with XDP_PASS.
 *
 * Parses Ethernet, up to two 802.1Q/802.1ad tags, IPv4 (no fragments) and IPv6 (no extension
 * headers: media never uses them), UDP, exactly as the worker's parser (media::frame::parse)
 * does: a frame that parser would refuse is passed to the kernel, never redirected to be
 * dropped (recorder/tests/xdp_parser.rs runs both on the same frames). With a media address
 * of one family configured, the other family is passed. The recorder keeps `media_ports` current as it
 * allocates and frees ports, and puts one socket per RX queue in `xsks`. If a queue has no
 * socket, bpf_redirect_map falls back to XDP_PASS, so the kernel path still works. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "linecord_xdp.h"

/* Load-time settings (the loader fills them in before loading): the recorder's media
 * address. All zero = any address of the host. */
const volatile __u32 local_ip4 = 0;          /* network byte order */
/* The IPv6 address as two 64-bit words in memory order (compared word by word: a byte loop
 * with per-byte flags makes the verifier explore too many paths). */
const volatile __u64 local_ip6_hi = 0;
const volatile __u64 local_ip6_lo = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LINECORD_PORTS);
	__type(key, __u32);
	__type(value, linecord_port_value);
} LINECORD_MAP_PORTS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, LINECORD_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} LINECORD_MAP_XSKS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LC_COUNTERS);
	__type(key, __u32);
	__type(value, linecord_counter_value);
} LINECORD_MAP_COUNTERS SEC(".maps");

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

static __always_inline int count(__u32 which, int action)
{
	linecord_counter_value *c = bpf_map_lookup_elem(&LINECORD_MAP_COUNTERS, &which);
	if (c)
		*c += 1;
	return action;
}

SEC("xdp")
int linecord_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct udphdr *udp;
	__u16 proto;
	void *l3;

	if ((void *)(eth + 1) > end)
		return count(LC_PARSE_ERRORS, XDP_PASS);
	proto = eth->h_proto;
	l3 = eth + 1;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		struct vlan_hdr *vlan = l3;
		if ((void *)(vlan + 1) > end)
			return count(LC_PARSE_ERRORS, XDP_PASS);
		proto = vlan->proto;
		l3 = vlan + 1;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl < 5)
			return count(LC_PARSE_ERRORS, XDP_PASS);
		if (!local_ip4 && (local_ip6_hi | local_ip6_lo))
			return count(LC_PASSED, XDP_PASS);
		if (ip->protocol != IPPROTO_UDP)
			return count(LC_PASSED, XDP_PASS);
		/* Fragments (MF set or an offset) are left to the kernel to reassemble. */
		if (ip->frag_off & bpf_htons(0x3fff))
			return count(LC_PASSED, XDP_PASS);
		if (local_ip4 && ip->daddr != local_ip4)
			return count(LC_PASSED, XDP_PASS);
		udp = (void *)ip + ip->ihl * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > end)
			return count(LC_PARSE_ERRORS, XDP_PASS);
		if (ip6->nexthdr != IPPROTO_UDP)
			return count(LC_PASSED, XDP_PASS);
		if (local_ip4 && !(local_ip6_hi | local_ip6_lo))
			return count(LC_PASSED, XDP_PASS);
		if (local_ip6_hi | local_ip6_lo) {
			__u64 hi, lo;
			__builtin_memcpy(&hi, &ip6->daddr, 8);
			__builtin_memcpy(&lo, (__u8 *)&ip6->daddr + 8, 8);
			if (hi != local_ip6_hi || lo != local_ip6_lo)
				return count(LC_PASSED, XDP_PASS);
		}
		udp = (void *)(ip6 + 1);
	} else {
		return count(LC_PASSED, XDP_PASS);
	}
	if ((void *)(udp + 1) > end)
		return count(LC_PARSE_ERRORS, XDP_PASS);
	/* RFC 768: the length covers header and data; one that is shorter than the header or
	 * runs past the frame is refused by the worker's parser, so it is not steered. */
	__u16 udp_len = bpf_ntohs(udp->len);
	if (udp_len < sizeof(*udp) || (void *)udp + udp_len > end)
		return count(LC_PARSE_ERRORS, XDP_PASS);

	__u32 port = bpf_ntohs(udp->dest);
	linecord_port_value *active = bpf_map_lookup_elem(&LINECORD_MAP_PORTS, &port);
	if (!active || !*active)
		return count(LC_PASSED, XDP_PASS);
	count(LC_REDIRECTED, 0);
	return bpf_redirect_map(&LINECORD_MAP_XSKS, ctx->rx_queue_index, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
