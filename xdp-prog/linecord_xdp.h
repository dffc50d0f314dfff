/* ABI shared by the XDP program (linecord_xdp.c) and the recorder's loader
 * (recorder/src/backend/xdp_prog.rs): map names, sizes and the counter layout. The loader
 * checks every map's size against these values when it loads the program, so a mismatch
 * fails at start-up, not in traffic. */
#ifndef LINECORD_XDP_H
#define LINECORD_XDP_H

/* One entry per UDP port: non-zero = an active media port of the recorder. */
#define LINECORD_PORTS 65536
/* XSKMAP size: the most RX queues an interface can have here. */
#define LINECORD_MAX_QUEUES 256

/* Per-CPU counters, indexes into the `counters` array map. */
enum linecord_counter {
	LC_REDIRECTED = 0, /* media packets handed to bpf_redirect_map */
	LC_PASSED = 1,     /* everything else: left to the kernel */
	LC_PARSE_ERRORS = 2, /* truncated or malformed headers (passed too) */
	LC_COUNTERS = 3,
};

#endif
