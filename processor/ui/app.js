// linecord web UI: search interactions, open one, play and inspect its recordings.
//
// Plain JavaScript, no build step and no third-party code. Every API request carries the
// token from the header field (kept in localStorage) as `Authorization: Bearer …`; that is
// also why audio and downloads are fetched as Blobs and handed to the page as object URLs
// (an <audio src> or <a href> cannot send the header).
//
// Routing lives in the URL hash, so the back button and bookmarks work:
//   #/search?dn=1001&sort=-duration&offset=50   the search page (query = the API's query)
//   #/interactions/{id}                          one interaction
'use strict';

(() => {
  const TOKEN_KEY = 'linecord.token';
  const DEFAULT_SORT = '-start';
  const DEFAULT_LIMIT = 50;
  // Query keys of GET /v1/interactions that the search page keeps in the hash.
  const SEARCH_KEYS = ['from', 'to', 'dn', 'caller', 'callee', 'min_duration_ms', 'max_duration_ms',
    'min_mos', 'max_mos', 'q', 'sort', 'limit', 'offset'];
  // Segments whose audio is fetched and decoded at the same time.
  const MEDIA_CONCURRENCY = 2;
  // What a recording's status means (shown as the status tag's tooltip).
  const STATUS_TEXT = {
    incomplete: 'Some packets were not recorded',
    recovered: 'The recorder stopped unexpectedly; every complete block was kept',
    partial: 'Writing failed part-way (e.g. the disk filled); the audio written before is kept',
    damaged: 'The file is damaged; what could be read is shown',
    failed: 'Nothing could be recorded',
  };

  const $ = (sel, root = document) => root.querySelector(sel);

  // ---------------------------------------------------------------------------------------
  // Small DOM helper: el('td', {class: 'num', text: '3'}, child, …). Text goes through
  // textContent, never innerHTML, so data from the API cannot inject markup.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') node.textContent = String(v);
      else if (k === 'class') node.className = v;
      else if (k === 'dataset') Object.assign(node.dataset, v);
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  // ---------------------------------------------------------------------------------------
  // API access

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  let memoryToken = ''; // used when localStorage is unavailable
  function token() {
    try { return localStorage.getItem(TOKEN_KEY) || memoryToken; } catch { return memoryToken; }
  }

  async function api(path, { signal, as = 'json' } = {}) {
    const t = token();
    const headers = { Accept: as === 'json' ? 'application/json' : '*/*' };
    if (t) headers.Authorization = `Bearer ${t}`;
    let res;
    try {
      res = await fetch(path, { headers, signal, credentials: 'omit' });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, 'Server unreachable. Is the processor running?');
    }
    if (!res.ok) {
      let detail = '';
      try {
        const body = await res.json();
        if (body && typeof body.error === 'string') detail = body.error;
      } catch { /* not JSON */ }
      if (res.status === 401) {
        throw new ApiError(401, t ? 'Token refused. Enter a valid API token above.'
          : 'Token refused: no token entered. Enter your API token above.');
      }
      if (res.status === 403) throw new ApiError(403, `Not allowed with this token${detail ? `: ${detail}` : '.'}`);
      if (res.status === 404) throw new ApiError(404, `Not found${detail ? `: ${detail}` : '.'}`);
      throw new ApiError(res.status, `${detail || res.statusText || 'Request failed'} (HTTP ${res.status})`);
    }
    if (as === 'blob') return res.blob();
    return res.json();
  }

  const isAbort = (e) => e && e.name === 'AbortError';

  // ---------------------------------------------------------------------------------------
  // Formatting

  const pad = (n, w = 2) => String(n).padStart(w, '0');

  function parseTime(iso) {
    if (!iso) return null;
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? null : d;
  }

  // Local date and time, "2026-11-25 10:12:03".
  function fmtDateTime(iso) {
    const d = parseTime(iso);
    if (!d) return '–';
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  // Local time of day with ms, "10:12:03.120".
  function fmtClock(iso) {
    const d = parseTime(iso);
    if (!d) return '–';
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  // "0:03", "12:41", "1:02:03".
  function fmtDuration(ms) {
    if (ms === null || ms === undefined || !Number.isFinite(ms)) return '–';
    const s = Math.round(ms / 1000);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
  }

  // Seconds with one decimal, "12.3 s" (for talk time, silence, …).
  function fmtSeconds(ms) {
    if (ms === null || ms === undefined || !Number.isFinite(ms)) return '–';
    return `${(ms / 1000).toFixed(1)} s`;
  }

  // Signed offset from a start, "+1:02.5".
  function fmtOffset(ms) {
    if (!Number.isFinite(ms)) return '';
    const sign = ms < 0 ? '−' : '+';
    const a = Math.abs(ms) / 1000;
    const m = Math.floor(a / 60);
    return `${sign}${m}:${(a - m * 60).toFixed(1).padStart(4, '0')}`;
  }

  // Packet loss is a fraction 0..1.
  function fmtLoss(f) {
    if (f === null || f === undefined || !Number.isFinite(f)) return '–';
    const pct = f * 100;
    return `${pct > 0 && pct < 0.1 ? pct.toFixed(2) : pct.toFixed(1)} %`;
  }

  function fmtMs(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return '–';
    return `${v.toFixed(1)} ms`;
  }

  function mosClass(mos) {
    if (mos === null || mos === undefined || !Number.isFinite(mos)) return '';
    return mos >= 4 ? 'mos-good' : mos >= 3.6 ? 'mos-fair' : 'mos-poor';
  }

  function mosNode(mos) {
    if (mos === null || mos === undefined || !Number.isFinite(mos)) return el('span', { class: 'muted', text: '–' });
    const label = mos >= 4 ? 'good' : mos >= 3.6 ? 'fair' : 'poor';
    return el('span', { class: `mos ${mosClass(mos)}`, title: `MOS ${mos.toFixed(2)} (${label})` }, mos.toFixed(2));
  }

  const orDash = (v) => (v === null || v === undefined || v === '' ? '–' : String(v));

  // ISO <-> the value of <input type="datetime-local"> (local time, seconds precision).
  function isoToLocalInput(iso) {
    const d = parseTime(iso);
    if (!d) return '';
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function localInputToIso(v) {
    if (!v) return '';
    const d = new Date(v); // datetime-local values parse as local time
    return Number.isNaN(d.getTime()) ? '' : d.toISOString();
  }

  // ---------------------------------------------------------------------------------------
  // Views and routing

  const views = {
    search: $('#search-view'),
    detail: $('#detail-view'),
  };
  let currentView = null;
  let routeController = null; // aborts the fetches of the page being left
  let objectUrls = []; // revoked when the interaction page is left
  let lastSearchHash = '#/search';

  function showView(name) {
    const changed = currentView !== name;
    for (const [k, v] of Object.entries(views)) v.hidden = k !== name;
    currentView = name;
    return changed;
  }

  function releaseMedia() {
    for (const a of document.querySelectorAll('#detail-body audio')) {
      a.pause();
      a.removeAttribute('src');
      a.load();
    }
    for (const u of objectUrls) URL.revokeObjectURL(u);
    objectUrls = [];
  }

  function parseHash() {
    const h = location.hash.replace(/^#/, '');
    const i = h.indexOf('?');
    const path = (i < 0 ? h : h.slice(0, i)) || '/search';
    const params = new URLSearchParams(i < 0 ? '' : h.slice(i + 1));
    return { path, params };
  }

  function route() {
    if (routeController) routeController.abort();
    routeController = new AbortController();
    const signal = routeController.signal;
    releaseMedia();
    const { path, params } = parseHash();
    const m = path.match(/^\/interactions\/([^/]+)$/);
    if (m) {
      let id;
      try { id = decodeURIComponent(m[1]); } catch { id = m[1]; }
      showDetail(id, signal);
    } else {
      lastSearchHash = location.hash || '#/search';
      showSearch(params, signal);
    }
  }

  // ---------------------------------------------------------------------------------------
  // Search page

  const form = $('#search-form');
  const F = form.elements;
  const tbody = $('#results tbody');
  const searchStatus = $('#search-status');
  const pageInfo = $('#page-info');
  const prevBtn = $('#prev-page');
  const nextBtn = $('#next-page');
  let lastPage = null; // {params, total, count}

  function paramsToForm(p) {
    F.from.value = isoToLocalInput(p.get('from'));
    F.to.value = isoToLocalInput(p.get('to'));
    F.dn.value = p.get('dn') || '';
    F.caller.value = p.get('caller') || '';
    F.callee.value = p.get('callee') || '';
    const sec = (k) => (p.get(k) && Number.isFinite(+p.get(k)) ? String(+p.get(k) / 1000) : '');
    F.min_duration.value = sec('min_duration_ms');
    F.max_duration.value = sec('max_duration_ms');
    F.min_mos.value = p.get('min_mos') || '';
    F.q.value = p.get('q') || '';
    F.sort.value = p.get('sort') || DEFAULT_SORT;
    if (!F.sort.value) F.sort.value = DEFAULT_SORT;
    const limit = p.get('limit') || String(DEFAULT_LIMIT);
    if (![...F.limit.options].some((o) => o.value === limit)) F.limit.append(el('option', { text: limit }));
    F.limit.value = limit;
  }

  // The form as hash parameters (defaults left out, so URLs stay short).
  function formToParams(base) {
    const p = new URLSearchParams();
    const set = (k, v) => { if (v !== '' && v !== null && v !== undefined) p.set(k, v); };
    set('from', localInputToIso(F.from.value));
    set('to', localInputToIso(F.to.value));
    set('dn', F.dn.value.trim());
    set('caller', F.caller.value.trim());
    set('callee', F.callee.value.trim());
    const ms = (v) => (v.trim() === '' || !Number.isFinite(+v) ? '' : String(Math.round(+v * 1000)));
    set('min_duration_ms', ms(F.min_duration.value));
    set('max_duration_ms', ms(F.max_duration.value));
    set('min_mos', F.min_mos.value.trim());
    if (base && base.get('max_mos')) set('max_mos', base.get('max_mos')); // no field; kept from the URL
    set('q', F.q.value.trim());
    if (F.sort.value !== DEFAULT_SORT) set('sort', F.sort.value);
    if (F.limit.value !== String(DEFAULT_LIMIT)) set('limit', F.limit.value);
    return p;
  }

  function go(hash) {
    if (location.hash === hash) route(); // same URL: hashchange would not fire
    else location.hash = hash;
  }

  function searchHash(p) {
    const s = p.toString();
    return s ? `#/search?${s}` : '#/search';
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    go(searchHash(formToParams(parseHash().params)));
  });
  $('#reset-button').addEventListener('click', () => {
    form.reset();
    go('#/search');
  });
  prevBtn.addEventListener('click', () => page(-1));
  nextBtn.addEventListener('click', () => page(+1));

  function page(dir) {
    if (!lastPage) return;
    const p = new URLSearchParams(lastPage.params);
    const limit = +(p.get('limit') || DEFAULT_LIMIT);
    const offset = Math.max(0, +(p.get('offset') || 0) + dir * limit);
    if (offset) p.set('offset', String(offset)); else p.delete('offset');
    go(searchHash(p));
  }

  // Opening a row: the first cell holds a real link (keyboard, middle click); a click
  // anywhere else on the row follows it too.
  tbody.addEventListener('click', (e) => {
    if (e.target.closest('a')) return;
    const tr = e.target.closest('tr[data-id]');
    if (tr && !window.getSelection().toString()) location.hash = `#/interactions/${encodeURIComponent(tr.dataset.id)}`;
  });

  async function showSearch(params, signal) {
    const switched = showView('search');
    document.title = 'Interactions · linecord';
    paramsToForm(params);
    if (switched) $('#search-title').focus({ preventScroll: true });
    if (!token()) {
      tbody.replaceChildren();
      setStatus(searchStatus, 'Enter the API token above to search recordings.', 'info');
      pageInfo.textContent = '';
      prevBtn.disabled = nextBtn.disabled = true;
      lastPage = null;
      return;
    }
    const q = new URLSearchParams();
    for (const k of SEARCH_KEYS) if (params.get(k)) q.set(k, params.get(k));
    if (!q.has('limit')) q.set('limit', String(DEFAULT_LIMIT));
    setStatus(searchStatus, 'Searching…', 'busy');
    $('#results').setAttribute('aria-busy', 'true');
    try {
      const res = await api(`/v1/interactions?${q}`, { signal });
      renderResults(res, params);
    } catch (e) {
      if (isAbort(e)) return;
      tbody.replaceChildren();
      lastPage = null;
      pageInfo.textContent = '';
      prevBtn.disabled = nextBtn.disabled = true;
      setStatus(searchStatus, e.message, 'error');
    } finally {
      if (!signal.aborted) $('#results').removeAttribute('aria-busy');
    }
  }

  function renderResults(res, params) {
    const items = Array.isArray(res.items) ? res.items : [];
    const total = Number.isFinite(res.total) ? res.total : items.length;
    const offset = +(params.get('offset') || 0);
    const frag = document.createDocumentFragment();
    for (const it of items) {
      const href = `#/interactions/${encodeURIComponent(it.id)}`;
      const dns = Array.isArray(it.dns) ? it.dns.join(', ') : '';
      frag.append(el('tr', { dataset: { id: it.id } },
        el('td', {}, el('a', { href, title: `Open interaction ${it.id}` },
          el('time', { datetime: it.start, text: fmtDateTime(it.start) })),
        it.legal_hold ? el('span', { class: 'tag', title: 'Under legal hold', text: 'hold' }) : null),
        el('td', { class: 'num', text: fmtDuration(it.duration_ms) }),
        el('td', { text: orDash(it.caller) }),
        el('td', { text: orDash(it.callee) }),
        el('td', { text: dns || '–' }),
        el('td', { class: 'num', text: orDash(it.segments) }),
        el('td', { class: 'num' }, mosNode(it.mos)),
        el('td', { class: 'num', text: fmtLoss(it.packet_loss) }),
      ));
    }
    tbody.replaceChildren(frag);
    lastPage = { params: params.toString(), total, count: items.length };
    if (!items.length) {
      setStatus(searchStatus, total && offset ? 'No more results on this page.' : 'No interactions match these filters.', 'info');
    } else {
      setStatus(searchStatus, `${total} interaction${total === 1 ? '' : 's'}`, 'ok');
    }
    pageInfo.textContent = items.length ? `${offset + 1}–${offset + items.length} of ${total}` : '';
    prevBtn.disabled = offset <= 0;
    nextBtn.disabled = offset + items.length >= total;
  }

  function setStatus(node, text, kind) {
    node.textContent = text;
    node.className = `status ${kind || ''}`;
  }

  // ---------------------------------------------------------------------------------------
  // Interaction page

  const detailBody = $('#detail-body');
  const detailStatus = $('#detail-status');
  const detailTitle = $('#detail-title');

  async function showDetail(id, signal) {
    const switched = showView('detail');
    document.title = 'Interaction · linecord';
    $('#back-link').href = lastSearchHash;
    detailTitle.textContent = 'Interaction';
    detailBody.replaceChildren();
    if (switched) detailTitle.focus({ preventScroll: true });
    window.scrollTo(0, 0);
    if (!token()) {
      setStatus(detailStatus, 'Enter the API token above to open recordings.', 'info');
      return;
    }
    setStatus(detailStatus, 'Loading…', 'busy');
    let data;
    try {
      data = await api(`/v1/interactions/${encodeURIComponent(id)}`, { signal });
    } catch (e) {
      if (!isAbort(e)) setStatus(detailStatus, e.message, 'error');
      return;
    }
    if (signal.aborted) return;
    setStatus(detailStatus, '', '');
    renderDetail(data, signal);
  }

  function renderDetail(data, signal) {
    const it = data.interaction || {};
    const segments = Array.isArray(data.segments) ? data.segments : [];
    const events = Array.isArray(data.events) ? data.events : [];
    const who = [it.caller, it.callee].filter(Boolean).join(' → ');
    detailTitle.textContent = who ? `Call ${who}` : 'Interaction';
    document.title = `${who || 'Interaction'} · linecord`;

    const facts = el('dl', { class: 'facts' },
      fact('Start', el('time', { datetime: it.start, text: fmtDateTime(it.start) })),
      fact('End', it.end ? el('time', { datetime: it.end, text: fmtDateTime(it.end) }) : '–'),
      fact('Duration', fmtDuration(it.duration_ms)),
      fact('Caller', orDash(it.caller)),
      fact('Callee', orDash(it.callee)),
      fact('DNs', Array.isArray(it.dns) && it.dns.length ? it.dns.join(', ') : '–'),
      fact('Segments', orDash(it.segments)),
      fact('Recorded', fmtDuration(it.recorded_ms)),
      fact('MOS', mosNode(it.mos)),
      fact('Packet loss', fmtLoss(it.packet_loss)),
      fact('Legal hold', it.legal_hold ? 'yes' : 'no'),
      fact('Id', el('code', { text: orDash(it.id) }), 'wide'),
    );

    const segSection = el('section', { class: 'segments', 'aria-labelledby': 'segments-title' },
      el('h2', { id: 'segments-title', text: `Recordings (${segments.length})` }));
    if (!segments.length) segSection.append(el('p', { class: 'muted', text: 'No recordings in this interaction.' }));
    const loaders = [];
    segments.forEach((seg, i) => {
      const { node, load } = segmentNode(seg, i, it, signal);
      segSection.append(node);
      loaders.push(load);
    });

    const tl = el('section', { class: 'events', 'aria-labelledby': 'events-title' },
      el('h2', { id: 'events-title', text: `Events (${events.length})` }),
      timelineNode(events, it));

    detailBody.replaceChildren(facts, segSection, tl);
    runLimited(loaders, MEDIA_CONCURRENCY, signal);
  }

  function fact(term, value, cls) {
    return el('div', { class: cls }, el('dt', { text: term }), el('dd', {}, value));
  }

  async function runLimited(tasks, n, signal) {
    let next = 0;
    const worker = async () => {
      while (next < tasks.length && !signal.aborted) {
        const t = tasks[next++];
        await t();
      }
    };
    await Promise.all(Array.from({ length: Math.min(n, tasks.length) }, worker));
  }

  function timelineNode(events, it) {
    if (!events.length) return el('p', { class: 'muted', text: 'No call events recorded.' });
    const t0 = parseTime(it.start);
    const list = el('ol', { class: 'timeline' });
    for (const ev of events) {
      const t = parseTime(ev.time);
      const why = [ev.reason, ev.status_code ? `SIP ${ev.status_code}` : null].filter(Boolean).join(' · ');
      const kind = String(ev.kind || 'event');
      list.append(el('li', { dataset: { kind } },
        el('time', { datetime: ev.time, title: fmtDateTime(ev.time), text: fmtClock(ev.time) }),
        el('span', { class: 'offset muted', text: t && t0 ? fmtOffset(t - t0) : '' }),
        el('span', { class: `kind kind-${kind.replace(/[^a-z_]/gi, '')}`, text: kind.replace(/_/g, ' ') }),
        el('span', { class: 'switch', title: 'Switch', text: orDash(ev.switch) }),
        el('span', { class: 'reason', text: why }),
      ));
    }
    return list;
  }

  function segmentNode(seg, i, it, signal) {
    const rid = String(seg.recording_id || `segment-${i + 1}`);
    const a = seg.analysis || {};
    const parties = seg.parties || {};
    const pair = (arr, k) => (Array.isArray(arr) ? arr[k] : undefined);

    const canvas = el('canvas', {
      class: 'waveform', dataset: { recordingId: rid }, role: 'img',
      'aria-label': `Waveform of recording ${i + 1}: caller on top, callee below (loading)`,
    });
    const playhead = el('div', { class: 'playhead', 'aria-hidden': 'true' });
    const audio = el('audio', {
      controls: true, preload: 'metadata', dataset: { recordingId: rid },
      'aria-label': `Recording ${i + 1} audio`,
    });
    const mediaStatus = el('p', { class: 'media-status status busy', role: 'status', text: 'Loading audio…' });
    const lcrLink = el('a', {
      class: 'button', href: seg.download_url || '#', download: `${rid}.lcr`,
      dataset: { recordingId: rid },
    }, 'Download original (.lcr)');
    const wavLink = el('a', { class: 'button', href: '#', download: `${rid}.wav`, 'aria-disabled': 'true' }, 'Download WAV');
    let wavBlob = null;

    lcrLink.addEventListener('click', (e) => {
      e.preventDefault();
      if (!seg.download_url) return;
      downloadWithToken(seg.download_url, `${rid}.lcr`, lcrLink, mediaStatus);
    });
    wavLink.addEventListener('click', (e) => {
      e.preventDefault();
      if (wavBlob) saveBlob(wavBlob, `${rid}.wav`);
    });

    const quality = el('table', { class: 'quality' },
      el('caption', { text: 'Quality' }),
      el('thead', {}, el('tr', {}, el('td'), el('th', { scope: 'col', text: 'Caller' }), el('th', { scope: 'col', text: 'Callee' }))),
      el('tbody', {},
        qrow('Talk time', fmtSeconds(pair(a.talk_ms, 0)), fmtSeconds(pair(a.talk_ms, 1))),
        qrow('Packet loss', fmtLoss(pair(a.packet_loss, 0)), fmtLoss(pair(a.packet_loss, 1))),
        qrow('Jitter', fmtMs(pair(a.jitter_ms, 0)), fmtMs(pair(a.jitter_ms, 1))),
        qrow('Silence', fmtSeconds(a.silence_ms)),
        qrow('Overtalk', fmtSeconds(a.overtalk_ms)),
        qrow('MOS', mosNode(a.mos)),
      ));

    const node = el('article', { class: 'segment', dataset: { recordingId: rid }, 'aria-labelledby': `seg-${i}-title` },
      el('h3', { id: `seg-${i}-title` },
        `Recording ${i + 1}`,
        el('span', { class: 'muted sub' },
          ` ${fmtDateTime(seg.start)} · ${fmtDuration(seg.duration_ms)}`,
          seg.switch ? ` · ${seg.switch}` : ''),
        seg.status && seg.status !== 'complete'
          ? el('span', { class: `tag status-${seg.status}`, title: STATUS_TEXT[seg.status] || seg.status, text: seg.status })
          : null),
      seg.status_note ? el('p', { class: 'status-note', text: seg.status_note }) : null,
      el('div', { class: 'wave' },
        el('div', { class: 'lanes', 'aria-hidden': 'true' }, el('span', { text: 'Caller' }), el('span', { text: 'Callee' })),
        el('div', { class: 'wave-box', title: 'Click to play from here' }, canvas, playhead)),
      audio,
      mediaStatus,
      el('div', { class: 'seg-grid' },
        el('dl', { class: 'facts small' },
          fact('Caller', orDash(parties.caller)),
          fact('Callee', orDash(parties.callee)),
          fact('DN', orDash(parties.dn)),
          fact('Status', orDash(seg.status)),
          fact('Switch', orDash(seg.switch)),
          fact('Recording id', el('code', { text: rid }), 'wide')),
        quality),
      el('p', { class: 'downloads' }, lcrLink, ' ', wavLink),
    );

    // Playhead and click-to-seek.
    let raf = 0;
    const movePlayhead = () => {
      const d = audio.duration;
      playhead.style.left = Number.isFinite(d) && d > 0 ? `${(audio.currentTime / d) * 100}%` : '0';
      playhead.hidden = !(audio.currentTime > 0);
    };
    const tick = () => { movePlayhead(); if (!audio.paused) raf = requestAnimationFrame(tick); };
    playhead.hidden = true;
    audio.addEventListener('play', () => { cancelAnimationFrame(raf); raf = requestAnimationFrame(tick); });
    audio.addEventListener('pause', movePlayhead);
    audio.addEventListener('seeked', movePlayhead);
    canvas.parentElement.addEventListener('click', (e) => {
      const d = audio.duration;
      if (!Number.isFinite(d) || d <= 0) return;
      const r = canvas.getBoundingClientRect();
      audio.currentTime = Math.min(d, Math.max(0, ((e.clientX - r.left) / r.width) * d));
      movePlayhead();
      audio.play().catch(() => {});
    });

    const load = async () => {
      if (!seg.audio_url) {
        setStatus(mediaStatus, 'No audio for this recording.', 'info');
        canvas.setAttribute('aria-label', `Recording ${i + 1}: no audio`);
        return;
      }
      let blob;
      try {
        blob = await api(seg.audio_url, { signal, as: 'blob' });
      } catch (e) {
        if (!isAbort(e)) setStatus(mediaStatus, `Audio: ${e.message}`, 'error');
        return;
      }
      if (signal.aborted) return;
      wavBlob = blob;
      wavLink.removeAttribute('aria-disabled');
      const url = URL.createObjectURL(blob);
      objectUrls.push(url);
      audio.src = url;
      try {
        const buf = await decodeWav(await blob.arrayBuffer());
        if (signal.aborted) return;
        drawWhenSized(canvas, buf, signal);
        canvas.setAttribute('aria-label',
          `Waveform of recording ${i + 1}, ${buf.duration.toFixed(1)} s: caller on top, callee below`);
        setStatus(mediaStatus, '', '');
      } catch (e) {
        if (isAbort(e)) return;
        setStatus(mediaStatus, `The audio could not be decoded for the waveform (${e.message || e}).`, 'error');
      }
    };
    return { node, load };
  }

  function qrow(label, a, b) {
    return b === undefined
      ? el('tr', {}, el('th', { scope: 'row', text: label }), el('td', { colspan: 2 }, a))
      : el('tr', {}, el('th', { scope: 'row', text: label }), el('td', {}, a), el('td', {}, b));
  }

  async function downloadWithToken(url, name, link, statusNode) {
    if (link.getAttribute('aria-busy') === 'true') return;
    link.setAttribute('aria-busy', 'true');
    try {
      saveBlob(await api(url, { as: 'blob' }), name);
    } catch (e) {
      if (!isAbort(e)) setStatus(statusNode, `Download: ${e.message}`, 'error');
    } finally {
      link.removeAttribute('aria-busy');
    }
  }

  function saveBlob(blob, name) {
    const u = URL.createObjectURL(blob);
    const a = el('a', { href: u, download: name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(u), 60_000);
  }

  // ---------------------------------------------------------------------------------------
  // Audio decoding and the waveform

  // The WAV's own sample rate (so decoding does not resample), from its `fmt ` chunk.
  function wavSampleRate(ab) {
    const v = new DataView(ab);
    if (v.byteLength < 12 || v.getUint32(0, false) !== 0x52494646 /* RIFF */) return 0;
    let off = 12;
    while (off + 8 <= v.byteLength) {
      const id = v.getUint32(off, false);
      const size = v.getUint32(off + 4, true);
      if (id === 0x666d7420 /* 'fmt ' */ && off + 16 <= v.byteLength) return v.getUint32(off + 12, true);
      off += 8 + size + (size & 1);
    }
    return 0;
  }

  async function decodeWav(ab) {
    const Offline = window.OfflineAudioContext || window.webkitOfflineAudioContext;
    if (!Offline) throw new Error('this browser has no Web Audio');
    let rate = wavSampleRate(ab);
    if (!(rate >= 3000 && rate <= 384000)) rate = 48000;
    const ctx = new Offline(2, 1, rate);
    return ctx.decodeAudioData(ab);
  }

  // Min/max of each pixel column, per channel: Float32Array [min0, max0, min1, max1, …].
  function peaks(data, columns) {
    const out = new Float32Array(columns * 2);
    const per = data.length / columns;
    for (let x = 0; x < columns; x++) {
      const a = Math.floor(x * per);
      const b = Math.max(a + 1, Math.min(data.length, Math.floor((x + 1) * per)));
      let lo = 1;
      let hi = -1;
      for (let j = a; j < b; j++) {
        const s = data[j];
        if (s < lo) lo = s;
        if (s > hi) hi = s;
      }
      if (lo > hi) { lo = 0; hi = 0; }
      out[2 * x] = lo;
      out[2 * x + 1] = hi;
    }
    return out;
  }

  function drawWhenSized(canvas, buf, signal) {
    let lastW = 0;
    const redraw = () => {
      if (signal.aborted || !canvas.isConnected) return;
      const w = canvas.clientWidth;
      if (!w || w === lastW) return;
      lastW = w;
      drawWaveform(canvas, buf);
    };
    redraw();
    if ('ResizeObserver' in window) {
      const ro = new ResizeObserver(redraw);
      ro.observe(canvas);
      signal.addEventListener('abort', () => ro.disconnect(), { once: true });
    }
  }

  function drawWaveform(canvas, buf) {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * dpr));
    const h = Math.max(2, Math.round(canvas.clientHeight * dpr));
    canvas.width = w;
    canvas.height = h;
    const g = canvas.getContext('2d');
    g.clearRect(0, 0, w, h);
    const css = getComputedStyle(canvas);
    const colors = [css.getPropertyValue('--wave-caller').trim() || '#2563eb',
      css.getPropertyValue('--wave-callee').trim() || '#059669'];
    const laneH = h / 2;
    const lanes = Math.min(2, buf.numberOfChannels);
    for (let ch = 0; ch < lanes; ch++) {
      const p = peaks(buf.getChannelData(ch), w);
      const mid = laneH * ch + laneH / 2;
      const amp = laneH / 2 - dpr;
      g.fillStyle = colors[ch];
      for (let x = 0; x < w; x++) {
        const y1 = mid - p[2 * x + 1] * amp;
        const y2 = mid - p[2 * x] * amp;
        g.fillRect(x, y1, 1, Math.max(dpr, y2 - y1));
      }
    }
    canvas.dataset.drawn = 'true';
    canvas.dataset.channels = String(buf.numberOfChannels);
  }

  // ---------------------------------------------------------------------------------------
  // Token field

  const tokenForm = $('#token-form');
  const tokenInput = $('#token');
  const tokenState = $('#token-state');

  function showTokenState() {
    tokenState.textContent = token() ? 'token set' : 'no token';
  }

  tokenInput.value = token();
  showTokenState();
  tokenForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const v = tokenInput.value.trim();
    memoryToken = v;
    try {
      if (v) localStorage.setItem(TOKEN_KEY, v); else localStorage.removeItem(TOKEN_KEY);
    } catch { /* storage disabled: the token lasts until reload */ }
    showTokenState();
    route(); // reload the current page with the new token
  });

  window.addEventListener('hashchange', route);
  route();
})();
