// A stand-in for the processor's HTTP API, for working on the web UI without a processor:
// serves processor/ui/ as the processor does (`/`, `/ui/app.js`, `/ui/style.css`) and
// canned interactions following the API contract, with generated stereo WAV audio.
//
//   node mock-server.mjs [PORT] [TOKEN]       (defaults: 8089, "dev-token"; PORT 0 = any)
//
// Prints "listening on http://127.0.0.1:PORT" once ready. The search honours the filters
// roughly (enough to exercise the UI); `/v1/interactions/{id}` 404s for unknown ids and
// every /v1 request 401s without `Authorization: Bearer TOKEN`.
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const uiDir = join(here, '..', '..', 'ui');
const port = Number(process.argv[2] ?? 8089);
const token = process.argv[3] ?? 'dev-token';

// Stereo 16-bit PCM WAV, 8 kHz: "speech" as amplitude-modulated tones, caller (left) talking
// first, callee (right) answering, a little overtalk in between.
function makeWav(seconds, seed = 1) {
  const rate = 8000;
  const n = Math.round(seconds * rate);
  const buf = Buffer.alloc(44 + n * 4);
  buf.write('RIFF', 0); buf.writeUInt32LE(36 + n * 4, 4); buf.write('WAVE', 8);
  buf.write('fmt ', 12); buf.writeUInt32LE(16, 16); buf.writeUInt16LE(1, 20); buf.writeUInt16LE(2, 22);
  buf.writeUInt32LE(rate, 24); buf.writeUInt32LE(rate * 4, 28); buf.writeUInt16LE(4, 32); buf.writeUInt16LE(16, 34);
  buf.write('data', 36); buf.writeUInt32LE(n * 4, 40);
  const talk = (t, start, end) => (t >= start && t < end ? Math.sin(Math.PI * (t - start) / (end - start)) : 0);
  for (let i = 0; i < n; i++) {
    const t = i / rate;
    const syll = 0.55 + 0.45 * Math.sin(2 * Math.PI * (3 + seed) * t);
    const l = talk(t, 0.1, seconds * 0.5) * syll * Math.sin(2 * Math.PI * 220 * t) * 0.7;
    const r = talk(t, seconds * 0.45, seconds - 0.1) * syll * Math.sin(2 * Math.PI * 330 * t) * 0.6;
    buf.writeInt16LE(Math.round(l * 32767), 44 + i * 4);
    buf.writeInt16LE(Math.round(r * 32767), 46 + i * 4);
  }
  return buf;
}

const iso = (ms) => new Date(ms).toISOString();
// Three hours ago (whole seconds + 120 ms), so date filters relative to "now" match.
const base = Math.floor(Date.now() / 1000) * 1000 - 3 * 3600e3 + 120;

function interaction(id, startMs, seconds, caller, callee, dn, mos, loss, extra = {}) {
  const rid = `${id.slice(0, 8)}-0000-7000-8000-00000000000${extra.n ?? 1}`;
  const dur = seconds * 1000;
  const seg = {
    recording_id: rid, start: iso(startMs), end: iso(startMs + dur), duration_ms: dur,
    status: extra.status ?? 'complete', switch: 'sipctl-1',
    parties: { caller, callee, dn },
    analysis: {
      talk_ms: [Math.round(dur * 0.45), Math.round(dur * 0.5)], silence_ms: Math.round(dur * 0.1),
      overtalk_ms: Math.round(dur * 0.05), packet_loss: [loss, 0], jitter_ms: [1.5, 2.25], mos,
    },
    audio_url: `/v1/recordings/${rid}/audio`, download_url: `/v1/recordings/${rid}/file`,
  };
  const ev = (dt, kind, seq, reason = null, status_code = null) =>
    ({ time: iso(startMs + dt), kind, switch: 'sipctl-1', seq, reason, status_code });
  return {
    item: {
      id, start: iso(startMs), end: iso(startMs + dur), duration_ms: dur, caller, callee, dns: [dn],
      segments: 1, recorded_ms: dur, mos, packet_loss: loss, legal_hold: !!extra.hold,
    },
    segments: [seg],
    events: [
      ev(-900, 'created', 0), ev(-700, 'ringing', 1), ev(-10, 'answered', 2, null, 200),
      ev(0, 'recording_started', 3), ev(dur, 'recording_stopped', 4),
      ev(dur + 5, 'released', 5, 'BYE from callee', 200),
    ],
    wav: makeWav(seconds, extra.n ?? 1),
    rid,
  };
}

const calls = [
  interaction('01a211f9-f2b8-7a3c-8d41-5e6f708192a3', base, 3, '+4930123456', '1001', '1001', 4.32, 0),
  interaction('01a21200-0000-7a3c-8d41-000000000002', base + 3600e3, 12, '+4940555000', '1002', '1002', 3.71, 0.021, { n: 2 }),
  interaction('01a21300-0000-7a3c-8d41-000000000003', base + 7200e3, 7, '+4989777', '1001', '1001', 2.9, 0.084, { n: 3, hold: true, status: 'incomplete' }),
];

function json(res, status, body) {
  const s = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s) });
  res.end(s);
}

function search(q) {
  let list = calls.map((c) => c.item);
  const num = (k) => (q.get(k) !== null && q.get(k) !== '' ? Number(q.get(k)) : null);
  const has = (v, s) => String(v ?? '').toLowerCase().includes(s.toLowerCase());
  if (q.get('from')) list = list.filter((i) => i.start >= new Date(q.get('from')).toISOString());
  if (q.get('to')) list = list.filter((i) => i.start <= new Date(q.get('to')).toISOString());
  if (q.get('dn')) list = list.filter((i) => i.dns.includes(q.get('dn')));
  if (q.get('caller')) list = list.filter((i) => has(i.caller, q.get('caller')));
  if (q.get('callee')) list = list.filter((i) => has(i.callee, q.get('callee')));
  if (num('min_duration_ms') !== null) list = list.filter((i) => i.duration_ms >= num('min_duration_ms'));
  if (num('max_duration_ms') !== null) list = list.filter((i) => i.duration_ms <= num('max_duration_ms'));
  if (num('min_mos') !== null) list = list.filter((i) => i.mos !== null && i.mos >= num('min_mos'));
  if (num('max_mos') !== null) list = list.filter((i) => i.mos !== null && i.mos <= num('max_mos'));
  if (q.get('q')) list = list.filter((i) => has([i.caller, i.callee, ...i.dns].join(' '), q.get('q')));
  const sort = q.get('sort') || '-start';
  const key = { start: (i) => i.start, duration: (i) => i.duration_ms, mos: (i) => i.mos ?? Infinity }[sort.replace('-', '')];
  if (!key) return null;
  list.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0) * (sort.startsWith('-') ? -1 : 1));
  const limit = Math.min(500, Number(q.get('limit') || 50));
  const offset = Number(q.get('offset') || 0);
  return { total: list.length, items: list.slice(offset, offset + limit) };
}

function sendBytes(req, res, bytes, type, name) {
  const headers = { 'content-type': type, 'accept-ranges': 'bytes' };
  if (name) headers['content-disposition'] = `attachment; filename="${name}"`;
  const m = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range || '');
  if (m) {
    const start = m[1] ? Number(m[1]) : bytes.length - Number(m[2]);
    const end = m[1] && m[2] ? Math.min(Number(m[2]), bytes.length - 1) : bytes.length - 1;
    if (start >= bytes.length || start > end) {
      res.writeHead(416, { 'content-range': `bytes */${bytes.length}` });
      return res.end();
    }
    res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${end}/${bytes.length}`, 'content-length': end - start + 1 });
    return res.end(bytes.subarray(start, end + 1));
  }
  res.writeHead(200, { ...headers, 'content-length': bytes.length });
  res.end(bytes);
}

const files = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/index.html': ['index.html', 'text/html; charset=utf-8'],
  '/ui/app.js': ['app.js', 'text/javascript; charset=utf-8'],
  '/ui/style.css': ['style.css', 'text/css; charset=utf-8'],
};

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const p = url.pathname;
  if (files[p]) {
    const [f, type] = files[p];
    const body = readFileSync(join(uiDir, f)); // read per request: edits show on reload
    res.writeHead(200, { 'content-type': type, 'cache-control': 'no-cache' });
    return res.end(body);
  }
  if (!p.startsWith('/v1/')) return json(res, 404, { error: 'no such page' });
  if (req.headers.authorization !== `Bearer ${token}`) return json(res, 401, { error: 'missing or unknown token' });
  if (p === '/v1/interactions') {
    const r = search(url.searchParams);
    return r ? json(res, 200, r) : json(res, 400, { error: 'bad sort' });
  }
  let m = /^\/v1\/interactions\/([^/]+)$/.exec(p);
  if (m) {
    const c = calls.find((x) => x.item.id === decodeURIComponent(m[1]));
    return c ? json(res, 200, { interaction: c.item, segments: c.segments, events: c.events })
      : json(res, 404, { error: 'no such interaction' });
  }
  m = /^\/v1\/recordings\/([^/]+)\/(audio|file)$/.exec(p);
  if (m) {
    const c = calls.find((x) => x.rid === m[1]);
    if (!c) return json(res, 404, { error: 'no such recording' });
    if (m[2] === 'audio') return sendBytes(req, res, c.wav, 'audio/wav');
    return sendBytes(req, res, Buffer.from(`LCR mock file of ${c.rid}\n`), 'application/octet-stream', `${c.rid}.lcr`);
  }
  json(res, 404, { error: 'not found' });
});

server.listen(port, '127.0.0.1', () => {
  const a = server.address();
  console.log(`listening on http://127.0.0.1:${a.port}`);
  console.log(`token: ${token}; interactions: ${calls.map((c) => c.item.id).join(', ')}`);
});
