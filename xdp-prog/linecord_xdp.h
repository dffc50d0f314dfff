/* ABI shared by the XDP program (linecord_xdp.c) and the recorder's loader
 * (recorder/src/backend/xdp_prog.rs): map names, sizes, value types and the counter layout.
 * The recorder's build (recorder/build.rs) generates its Rust constants from this file
 * (LINECORD_* defines, the linecord_* value typedefs, enum linecord_counter), so there is no
 * copy by hand; the loader checks every map's name, size and value size against them when it
 * loads the program, so a mismatch fails at start-up, not in traffic.
 *
 * build.rs reads only these forms, one per line:
 *   #define LINECORD_<NAME> <decimal>          -> const <NAME>: u32
 *   #define LINECORD_MAP_<NAME> <identifier>   -> const MAP_<NAME>: &str (a map's name)
 *   typedef __u<N> linecord_<name>;            -> type <Name> = u<N>
 *   LC_<NAME> = <decimal>, in enum linecord_counter -> const LC_<NAME>: u32
 * with the comment after it (on the same line) as the doc comment. */
#ifndef LINECORD_XDP_H
#define LINECORD_XDP_H

#include <linux/types.h>

/* Entries of the media-port map: one per UDP port. */
#define LINECORD_PORTS 65536
/* Entries of the XSKMAP: the most RX queues an interface can have here. */
#define LINECORD_MAX_QUEUES 256

/* Name of the map of active media ports (index: UDP port). */
#define LINECORD_MAP_PORTS media_ports
/* Name of the XSKMAP (index: RX queue, value: AF_XDP socket). */
#define LINECORD_MAP_XSKS xsks
/* Name of the per-CPU counter array (index: enum linecord_counter). */
#define LINECORD_MAP_COUNTERS counters

/* Value of a media-port entry: non-zero = an active media port of the recorder. */
typedef __u8 linecord_port_value;
/* Value of one per-CPU counter. */
typedef __u64 linecord_counter_value;

/* Per-CPU counters, indexes into the `counters` array map. */
enum linecord_counter {
	LC_REDIRECTED = 0, /* Media packets handed to bpf_redirect_map. */
	LC_PASSED = 1, /* Everything else: left to the kernel. */
	LC_PARSE_ERRORS = 2, /* Truncated or malformed headers (passed too). */
	LC_COUNTERS = 3, /* Number of counters. */
};

#endif
