// End-to-end test of the processor web UI in headless Chromium.
//
//   node ui.test.mjs BASE_URL TOKEN EXPECTED_ID EXPECTED_SECONDS
//
// Opens BASE_URL, enters TOKEN, searches, finds the interaction EXPECTED_ID in the result
// table, opens it, and checks: the first recording's <audio> loads (loadedmetadata) with a
// duration within ±0.5 s of EXPECTED_SECONDS, its waveform canvas has been drawn with
// visible signal, and the event timeline lists events. Then checks the error paths (an
// unknown interaction says "not found", a wrong token says "token refused").
//
// Environment: CHROMIUM (default /usr/bin/chromium); SCREENSHOT=path.png saves the
// interaction page there and the search page beside it (path-search.png). Exits 0 on
// success, 1 with a message naming the failed step otherwise; the whole run is bounded
// (TEST_TIMEOUT_MS, default 55 s).
import { chromium } from 'playwright-core';

const [baseUrl, token, expectedId, expectedSecondsText] = process.argv.slice(2);
if (!baseUrl || !token || !expectedId || !expectedSecondsText) {
  console.error('usage: node ui.test.mjs BASE_URL TOKEN EXPECTED_ID EXPECTED_SECONDS');
  process.exit(2);
}
const expectedSeconds = Number(expectedSecondsText);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const screenshot = process.env.SCREENSHOT || '';
const totalTimeout = Number(process.env.TEST_TIMEOUT_MS || 55_000);
const STEP = 15_000;

let browser = null;
let step = 'start';
const pageErrors = [];
const consoleErrors = [];

function fail(message) {
  const err = new Error(message);
  err.isCheck = true;
  throw err;
}
const log = (m) => console.log(`ui-test: ${m}`);

const watchdog = setTimeout(async () => {
  console.error(`ui-test: FAILED: timed out after ${totalTimeout} ms during step "${step}"`);
  try { await browser?.close(); } catch { /* ignore */ }
  process.exit(1);
}, totalTimeout);

async function run() {
  step = 'launch chromium';
  browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--autoplay-policy=no-user-gesture-required'],
    timeout: STEP,
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP);
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });

  step = 'open the UI';
  const resp = await page.goto(baseUrl, { waitUntil: 'load' });
  if (!resp || !resp.ok()) fail(`GET ${baseUrl} answered ${resp ? resp.status() : 'nothing'}`);
  await page.waitForSelector('#token', { state: 'visible' });

  step = 'enter the token';
  await page.fill('#token', token);
  await page.click('#token-form button[type=submit]');

  step = 'search';
  await page.waitForSelector('#search-view:not([hidden])');
  // Filters that still match the call, so the server's parsing of each is exercised.
  const local = (d) => new Date(d.getTime() - d.getTimezoneOffset() * 60_000).toISOString().slice(0, 19);
  await page.fill('#f-from', local(new Date(Date.now() - 30 * 86_400_000)));
  await page.fill('#f-to', local(new Date(Date.now() + 86_400_000)));
  await page.fill('#f-min-dur', '0');
  await page.fill('#f-max-dur', String(Math.ceil(expectedSeconds) + 3600));
  await page.selectOption('#f-sort', '-duration');
  await page.click('#search-button');
  await page.waitForFunction(() => /[?&]from=/.test(location.hash) && /sort=-duration/.test(location.hash));
  const rowSel = `#results tbody tr[data-id="${expectedId}"]`;
  try {
    await page.waitForSelector(rowSel);
  } catch {
    const status = (await page.textContent('#search-status'))?.trim();
    const ids = await page.$$eval('#results tbody tr', (rows) => rows.map((r) => r.dataset.id));
    fail(`interaction ${expectedId} not in the result table (status: "${status}", rows: ${JSON.stringify(ids)})`);
  }
  const cells = await page.$$eval(`${rowSel} td`, (tds) => tds.map((td) => td.textContent.trim()));
  if (cells.length !== 8) fail(`result row has ${cells.length} cells, expected 8: ${JSON.stringify(cells)}`);
  log(`result row: ${cells.join(' | ')}`);
  if (screenshot) await page.screenshot({ path: screenshot.replace(/(\.png)?$/i, '-search.png'), fullPage: true });

  step = 'open the interaction';
  await page.click(`${rowSel} td:nth-child(3)`); // a cell, not the link: the row itself opens
  await page.waitForFunction((id) => location.hash === `#/interactions/${encodeURIComponent(id)}`, expectedId);
  await page.waitForSelector('#detail-view:not([hidden]) .segment');

  step = 'wait for the audio to load';
  const audioSel = '#detail-body audio[data-recording-id]';
  await page.waitForSelector(audioSel, { state: 'attached' });
  let duration;
  try {
    duration = await page.$eval(audioSel, (a) => new Promise((resolve, reject) => {
      const done = () => resolve(a.duration);
      if (a.readyState >= 1 && Number.isFinite(a.duration)) return done();
      a.addEventListener('loadedmetadata', done, { once: true });
      a.addEventListener('error', () => reject(new Error(`media error ${a.error && a.error.code}`)), { once: true });
    }));
  } catch (e) {
    const status = await page.$eval('#detail-body .media-status', (n) => n.textContent.trim()).catch(() => '');
    fail(`audio did not load: ${e.message.split('\n')[0]}${status ? ` (page says: "${status}")` : ''}`);
  }
  if (!Number.isFinite(duration) || Math.abs(duration - expectedSeconds) > 0.5) {
    fail(`audio duration ${duration} s, expected ${expectedSeconds} ± 0.5 s`);
  }
  log(`audio duration ${duration.toFixed(3)} s (expected ${expectedSeconds})`);

  step = 'check the waveform';
  const canvasSel = '#detail-body canvas.waveform';
  try {
    await page.waitForSelector(`${canvasSel}[data-drawn="true"]`, { state: 'attached' });
  } catch {
    const status = await page.$eval('#detail-body .media-status', (n) => n.textContent.trim()).catch(() => '');
    fail(`waveform never drawn${status ? ` (page says: "${status}")` : ''}`);
  }
  const wave = await page.$eval(canvasSel, (c) => {
    const g = c.getContext('2d');
    const { data } = g.getImageData(0, 0, c.width, c.height);
    const lanes = [0, 0];
    for (let y = 0; y < c.height; y++) {
      for (let x = 0; x < c.width; x++) if (data[(y * c.width + x) * 4 + 3] > 0) lanes[y < c.height / 2 ? 0 : 1]++;
    }
    return { w: c.width, h: c.height, lanes };
  });
  // Silence would draw one flat line per lane (about w pixels each); speech covers far more.
  const painted = wave.lanes[0] + wave.lanes[1];
  if (painted < wave.w * 4) {
    fail(`waveform canvas looks blank: ${painted} painted pixels on ${wave.w}x${wave.h} (lanes ${wave.lanes})`);
  }
  log(`waveform ${wave.w}x${wave.h}, painted pixels caller ${wave.lanes[0]}, callee ${wave.lanes[1]}`);

  step = 'check the timeline';
  const events = await page.$$eval('#detail-body ol.timeline li', (lis) => lis.map((li) => ({
    kind: li.dataset.kind, time: li.querySelector('time')?.textContent.trim(),
  })));
  if (!events.length) fail('the event timeline lists no events');
  if (events.some((e) => !e.kind || !e.time)) fail(`timeline entries without kind or time: ${JSON.stringify(events)}`);
  log(`timeline: ${events.map((e) => `${e.time} ${e.kind}`).join(', ')}`);

  step = 'check the quality figures';
  const quality = await page.$$eval('#detail-body .segment table.quality tbody tr', (trs) => trs.length);
  if (quality < 6) fail(`quality table has ${quality} rows, expected 6`);

  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });

  step = 'back to the results';
  await page.goBack();
  await page.waitForSelector(rowSel);

  step = 'unknown interaction says not found';
  await page.evaluate(() => { location.hash = '#/interactions/no-such-interaction'; });
  await page.waitForFunction(() => /not found/i.test(document.querySelector('#detail-status')?.textContent || ''))
    .catch(async () => fail(`no "not found" message; status: "${await page.textContent('#detail-status')}"`));

  step = 'wrong token says token refused';
  await page.fill('#token', `${token}-wrong`);
  await page.click('#token-form button[type=submit]');
  await page.waitForFunction(() => /token refused/i.test(document.querySelector('#detail-status')?.textContent || ''))
    .catch(async () => fail(`no "token refused" message; status: "${await page.textContent('#detail-status')}"`));

  if (pageErrors.length) fail(`uncaught errors in the page: ${pageErrors.join('; ')}`);
  // 401/404 responses above log "Failed to load resource" on purpose; anything else counts.
  const unexpected = consoleErrors.filter((m) => !/status of (401|404)/.test(m));
  if (unexpected.length) fail(`console errors: ${unexpected.join('; ')}`);
}

try {
  await run();
  log('PASSED');
  await browser?.close();
  clearTimeout(watchdog);
  process.exit(0);
} catch (e) {
  const msg = e.isCheck ? e.message : (e.stack || String(e)).split('\n').slice(0, 4).join('\n');
  console.error(`ui-test: FAILED during step "${step}": ${msg}`);
  if (pageErrors.length) console.error(`ui-test: page errors: ${pageErrors.join('; ')}`);
  try { await browser?.close(); } catch { /* ignore */ }
  process.exit(1);
}
