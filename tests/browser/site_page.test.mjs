// The site page of `fedge node` in headless Chromium (docs/SERVING.md, "The
// site page"): a real node (the tiny preset, an API key file), the page
// opened from it, a wrong key refused and the right one let in, the site's
// production.csv from `fedge data synth` uploaded and its statistics and
// histograms checked against values computed here, a hand-written CSV with
// RFC 4180 quoting, empty cells and text columns, a 5 MB CSV read without
// blocking the page, a streamed chat answer through /v1/chat/completions that
// carries the CSV's summary, no request beyond the node and no CSV row in any
// request, and a node without keys on loopback that needs no login.
// Run by scripts/test-browser.sh with FEDGE_BIN, CHROMIUM and ARTIFACTS.
import { chromium } from 'playwright-core';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';

const FEDGE_BIN = process.env.FEDGE_BIN;
const CHROMIUM = process.env.CHROMIUM;
const ARTIFACTS = process.env.ARTIFACTS;
for (const [name, value] of Object.entries({ FEDGE_BIN, CHROMIUM, ARTIFACTS }))
  if (!value) throw new Error(`${name} is not set (scripts/test-browser.sh sets it)`);
fs.mkdirSync(ARTIFACTS, { recursive: true });

const API_KEY = 'sk-fedge-site-page-browser-test-0123456789abcdef01234567';
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'fedge-site-page-'));
const nodes = [];
let browser = null;

// ---- The node ------------------------------------------------------------------

// Starts `fedge node` in its own folder with serve.http on a free loopback
// port (and the key file when `withKey`); resolves to its base URL once it logs
// that it serves.
async function startNode(name, { withKey, trainFile, globalAdapter = '', exposeLocal = false }) {
  const dir = path.join(work, name);
  fs.mkdirSync(path.join(dir, 'keys'), { recursive: true });
  if (globalAdapter) {
    // A global adapter from an earlier round, as a restarted node finds it.
    fs.mkdirSync(path.join(dir, 'state', 'global'), { recursive: true });
    fs.copyFileSync(path.join(globalAdapter, 'adapter_model.safetensors'),
                    path.join(dir, 'state', 'global', 'adapter_model.safetensors'));
    fs.writeFileSync(path.join(dir, 'state', 'global', 'fedge_version.txt'), '3\n');
  }
  let keyLine = '';
  if (withKey) {
    fs.writeFileSync(path.join(dir, 'keys', 'api_keys.txt'), `${API_KEY} site-page-test\n`, { mode: 0o600 });
    keyLine = 'api_keys = "keys/api_keys.txt"';
  }
  fs.writeFileSync(path.join(dir, 'node.toml'), `[node]
id = 1
insecure = true
state_dir = "state"
[coordinator]
endpoint = "tcp://127.0.0.1:9"
[model]
path = "tiny"
threads = 1
[data]
train = "${trainFile}"
seq_len = 64
[serve]
http = "127.0.0.1:0"
expose_local_adapter = ${exposeLocal}
${keyLine}
`);
  const log = path.join(dir, 'node.log');
  const out = fs.openSync(log, 'w');
  const child = spawn(FEDGE_BIN, ['--threads', '1', 'node', '--config', 'node.toml'],
                      { cwd: dir, stdio: ['ignore', out, out] });
  nodes.push({ child, log });
  const marker = /OpenAI-compatible API on (http:\/\/127\.0\.0\.1:\d+)/;
  for (let i = 0; i < 600; ++i) {
    const text = fs.readFileSync(log, 'utf8');
    const m = marker.exec(text);
    if (m) return m[1];
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`fedge node did not start serving; its log:\n${fs.readFileSync(log, 'utf8')}`);
}

// ---- What the page should show, computed here -------------------------------------------

// The synthetic CSV has no quotes: a split is an independent reader of it.
function readSimpleCsv(text) {
  const lines = text.trim().split('\n');
  const header = lines[0].split(',');
  const rows = lines.slice(1).map((line) => line.split(','));
  return { header, rows };
}

// Sample standard deviation (n - 1), two passes, as docs/SERVING.md documents.
function expectedStats(values) {
  const n = values.length;
  const mean = values.reduce((a, b) => a + b, 0) / n;
  const std = Math.sqrt(values.reduce((a, x) => a + (x - mean) ** 2, 0) / (n - 1));
  const min = values.reduce((a, b) => (b < a ? b : a)), max = values.reduce((a, b) => (b > a ? b : a));
  return { count: n, mean, min, max, std };
}

// 20 equal bins from min to max, max in the last one (docs/SERVING.md).
function expectedHistogram(values, min, max) {
  const counts = new Array(20).fill(0);
  for (const x of values) counts[Math.min(19, Math.floor((x - min) / ((max - min) / 20)))] += 1;
  return counts;
}

// The page's number format (docs/SERVING.md): integers whole, else 3
// decimals without trailing zeros.
function shown(v) {
  if (Number.isInteger(v)) return String(v);
  if (Math.abs(v) < 0.001) return String(Number(v.toPrecision(3)));
  return String(Number(v.toFixed(3)));
}

// The stats table's rows as {column: {count: {text, value}, ...}}.
async function statsTable(page) {
  return page.$$eval('#stats-table tbody tr', (rows) => Object.fromEntries(rows.map((tr) => {
    const cells = [...tr.cells];
    const names = ['column', 'count', 'mean', 'min', 'max', 'std', 'empty'];
    return [tr.dataset.column, Object.fromEntries(cells.map((td, i) => [names[i],
      { text: td.textContent, value: td.dataset.value === undefined ? null : Number(td.dataset.value) }]))];
  })));
}

function checkColumn(table, column, values, empty) {
  const got = table[column];
  assert.ok(got, `the stats table has no row for ${column}: ${JSON.stringify(Object.keys(table))}`);
  const want = expectedStats(values);
  for (const field of ['count', 'mean', 'min', 'max']) {
    assert.equal(got[field].value, want[field], `${column} ${field}`);
    assert.equal(got[field].text, shown(want[field]), `${column} ${field} as shown`);
  }
  // The same formula, summed in the same order: equal to the last bits
  // barring a different rounding of the square root's argument.
  assert.ok(Math.abs(got.std.value - want.std) <= 1e-12 * want.std, `${column} std ${got.std.value} vs ${want.std}`);
  assert.equal(got.std.text, shown(want.std), `${column} std as shown`);
  assert.equal(got.empty.value, empty, `${column} empty cells`);
}

async function uploadCsv(page, file) {
  await page.setInputFiles('#csv-file', file);
  await page.waitForSelector('#csv-status.good, #csv-status.bad', { timeout: 30000 });
  const status = await page.textContent('#csv-status');
  assert.ok(await page.$('#csv-status.good'), `the page could not read the CSV: ${status}`);
  return status;
}

// ---- The test --------------------------------------------------------------------------

async function main() {
  const started = Date.now();
  // The site's data as the project generates it.
  const dataDir = path.join(work, 'data');
  execFileSync(FEDGE_BIN, ['data', 'synth', '--out', dataDir, '--sites', '1', '--days', '40', '--wells', '5',
                           '--public-records', '10', '--seed', '7'], { stdio: 'pipe' });
  const siteDir = path.join(dataDir, 'site_00');
  const csvPath = path.join(siteDir, 'production.csv');
  const csvText = fs.readFileSync(csvPath, 'utf8');
  const csv = readSimpleCsv(csvText);
  assert.deepEqual(csv.header, ['date', 'well', 'liquid_bbl', 'gas_mcf', 'water_bbl']);
  assert.equal(csv.rows.length, 200);

  const adapterDir = path.join(work, 'adapter');
  execFileSync(FEDGE_BIN, ['adapter', 'init', '--model', 'tiny', '--out', adapterDir], { stdio: 'pipe' });
  const url = await startNode('keyed', { withKey: true, trainFile: path.join(siteDir, 'train.jsonl'),
                                         globalAdapter: adapterDir, exposeLocal: true });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const problems = [];  // console errors (a CSP violation is one) and uncaught exceptions
  page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
  page.on('pageerror', (e) => problems.push(String(e)));
  const requests = [];
  page.on('request', (r) => requests.push({ url: r.url(), method: r.method(), body: r.postData() || '' }));

  // The page loads without a key and asks for one.
  const response = await page.goto(url + '/');
  assert.equal(response.status(), 200);
  assert.match(response.headers()['content-security-policy'], /default-src 'self'/);
  await page.waitForSelector('#login-section:not([hidden])');
  assert.equal(await page.isVisible('#app'), false);

  // A wrong key is refused, and not kept.
  await page.fill('#api-key', API_KEY.slice(0, -1) + 'x');
  await page.click('#login-button');
  await page.waitForSelector('#login-status.bad');
  assert.match(await page.textContent('#login-status'), /refused this key \(HTTP 401\)/);
  assert.equal(await page.isVisible('#app'), false);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('fedge.apiKey')), null);
  await page.screenshot({ path: path.join(ARTIFACTS, 'site_page_login_refused.png') });

  // The right key lets the operator in; the tab keeps it for a reload.
  await page.fill('#api-key', API_KEY);
  await page.click('#login-button');
  await page.waitForSelector('#app:not([hidden])');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('fedge.apiKey')), API_KEY);
  await page.reload();
  await page.waitForSelector('#app:not([hidden])');
  // The global adapter v3 the node serves, the local slot it exposes (no adapter yet).
  await page.waitForFunction(() => document.getElementById('node-info').textContent.includes('model'));
  assert.equal(await page.textContent('#node-info'), 'model node-1 · global adapter v3 · no local adapter yet');
  assert.deepEqual(await page.$$eval('#adapter option', (os) => os.map((o) => [o.value, o.textContent, o.disabled])),
                   [['default', 'node default', false], ['global', 'global adapter v3', false],
                    ['local', 'local adapter (none installed yet)', true], ['none', 'base model, no adapter', false]]);

  // The site's production.csv: three numeric columns, two text ones.
  const status = await uploadCsv(page, csvPath);
  assert.equal(status, 'production.csv: 200 rows, 5 columns (3 numeric).');
  const table = await statsTable(page);
  assert.deepEqual(Object.keys(table), ['liquid_bbl', 'gas_mcf', 'water_bbl']);
  for (const [i, column] of csv.header.entries()) {
    if (i < 2) continue;
    const values = csv.rows.map((r) => Number(r[i]));
    checkColumn(table, column, values, 0);
    const want = expectedStats(values);
    const bars = await page.$$eval(`figure.chart[data-column="${column}"] rect.bar`,
                                   (rs) => rs.map((r) => [Number(r.dataset.count), Number(r.getAttribute('height'))]));
    assert.deepEqual(bars.map((b) => b[0]), expectedHistogram(values, want.min, want.max), `${column} histogram`);
    assert.ok(bars.some((b) => b[1] > 50), `${column}: the tallest bar is drawn (heights ${bars.map((b) => b[1])})`);
  }
  const textColumns = await page.$$eval('#text-table tbody tr', (rows) => rows.map((tr) => tr.dataset.column));
  assert.deepEqual(textColumns, ['date', 'well']);
  const wells = new Set(csv.rows.map((r) => r[1]));
  assert.equal(await page.textContent('#text-table tr[data-column="well"] td:nth-child(3)'), String(wells.size));
  const chartBox = await page.locator('figure.chart[data-column="liquid_bbl"] svg').boundingBox();
  assert.ok(chartBox && chartBox.width > 200 && chartBox.height > 80, `the chart is laid out: ${JSON.stringify(chartBox)}`);

  // The model is asked through the node's API, with the summary; the answer streams in.
  // The page's default temperature (0.7): greedy decoding of the untrained
  // tiny model repeats a special token that has no text.
  await page.fill('#max-tokens', '24');
  await page.selectOption('#adapter', 'global');
  await page.fill('#chat-input', 'Which well produced the most liquid?');
  await page.click('#chat-send');
  await page.waitForSelector('.message.assistant[data-done="true"]', { timeout: 60000 });
  const answer = await page.$eval('.message.assistant', (m) => ({ text: m.querySelector('.text').textContent,
    chunks: Number(m.dataset.chunks), finish: m.dataset.finish, failed: m.classList.contains('failed'),
    meta: m.querySelector('.meta') ? m.querySelector('.meta').textContent : '' }));
  assert.equal(answer.failed, false, `the chat failed: ${await page.textContent('#chat-status')}`);
  assert.ok(answer.chunks >= 2 && answer.text.length >= 2, `a streamed answer: ${JSON.stringify(answer)}`);
  assert.ok(['stop', 'length'].includes(answer.finish), `finish ${answer.finish}`);
  assert.equal(answer.meta, `global v3 · ${answer.finish}`, 'the answer names the adapter that served it');
  const chat = requests.filter((r) => r.url === url + '/v1/chat/completions');
  assert.equal(chat.length, 1);
  const body = JSON.parse(chat[0].body);
  assert.equal(body.stream, true);
  assert.equal(body.temperature, 0.7);
  assert.equal(body.max_tokens, 24);
  assert.equal(body.adapter, 'global');
  assert.equal(body.messages[0].role, 'system');
  const liquid = expectedStats(csv.rows.map((r) => Number(r[2])));
  assert.ok(body.messages[0].content.includes(`liquid_bbl: 200, ${Number(liquid.mean.toPrecision(4))}, ${liquid.min}, ${liquid.max}`),
            `the system message carries the summary: ${body.messages[0].content}`);
  assert.deepEqual(body.messages.slice(1), [{ role: 'user', content: 'Which well produced the most liquid?' }]);
  await page.screenshot({ path: path.join(ARTIFACTS, 'site_page.png'), fullPage: true });

  // A hand-written CSV: quoted commas, quotes and a line break, CRLF, empty
  // and "NA" cells, a text column, a column mixing numbers and text.
  const tricky = 'well,"note, free text",liquid_bbl,pressure_psi,status,mixed\r\n' +
                 '"AB-01","said ""fine"", then left",120,1500.5,ok,1\r\n' +
                 'AB-02,"two\nlines",,1499.25,NA,2\n' +
                 'AB-03,,80,n/a,shut-in,x\n' +
                 '\n' +
                 'AB-04,plain,100.75,1501,ok';
  const trickyPath = path.join(work, 'tricky.csv');
  fs.writeFileSync(trickyPath, tricky);
  assert.equal(await uploadCsv(page, trickyPath), 'tricky.csv: 4 rows, 6 columns (2 numeric).');
  const trickyTable = await statsTable(page);
  assert.deepEqual(Object.keys(trickyTable), ['liquid_bbl', 'pressure_psi']);
  checkColumn(trickyTable, 'liquid_bbl', [120, 80, 100.75], 1);
  checkColumn(trickyTable, 'pressure_psi', [1500.5, 1499.25, 1501], 1);
  assert.equal(trickyTable.liquid_bbl.std.value, Math.sqrt(800.375 / 2));
  assert.deepEqual(await page.$$eval('#text-table tbody tr', (rows) => rows.map((tr) => tr.dataset.column)),
                   ['well', 'note, free text', 'status', 'mixed']);
  assert.equal(await page.textContent('#text-table tr[data-column="status"] td:nth-child(4)'), 'ok (2)');
  assert.match(await page.textContent('#csv-warnings'), /Column "mixed" mixes 2 numbers with 1 other values/);
  assert.match(await page.textContent("#csv-warnings"), /1 rows have fewer fields than the header/);

  // The page's reader gives the same records whatever its slice size, so a
  // quote, CRLF or "" split between two slices reads as in one.
  const sliced = await page.evaluate((text) => {
    const read = (slice) => {
      const records = [];
      const reader = new CsvReader(text, (r) => records.push(r));
      while (reader.feed(slice));
      return JSON.stringify([records, reader.unterminated, reader.strayAfterQuote]);
    };
    return [1, 2, 3, 5, 7, 64, 1 << 20].map(read);
  }, tricky + '\r\n"x""\r\ny",2,"q"tail\r\n"open,\n');
  for (const r of sliced) assert.equal(r, sliced[sliced.length - 1], 'records independent of the slice size');
  const [records, unterminated, stray] = JSON.parse(sliced[0]);
  assert.equal(records.length, 7);  // the header, 4 rows (the blank line is none), 2 more
  assert.deepEqual(records[1], ['AB-01', 'said "fine", then left', '120', '1500.5', 'ok', '1']);
  assert.deepEqual(records[2], ['AB-02', 'two\nlines', '', '1499.25', 'NA', '2']);
  assert.deepEqual(records[5], ['x"\r\ny', '2', 'qtail']);
  assert.deepEqual(records[6], ['open,\n']);
  assert.equal(unterminated, true);
  assert.equal(stray, 1);

  // 5 MB: read in slices, the page's timers run meanwhile.
  let big = 'well,liquid_bbl,gas_mcf\n';
  const bigLiquid = [], bigGas = [];
  for (let i = 0; big.length < 5 * 1024 * 1024; ++i) {
    const liquid = (i * 7919) % 1000 + (i % 4) * 0.25, gas = (i * 104729) % 5003;
    bigLiquid.push(liquid);
    bigGas.push(gas);
    big += `W-${i % 97},${liquid},${gas}\n`;
  }
  await page.evaluate(() => { window.ticks = 0; window.ticker = setInterval(() => { window.ticks += 1; }, 5); });
  const t0 = Date.now();
  const bigPath = path.join(work, 'big.csv');  // a path: the browser reads it itself, no copy through the driver
  fs.writeFileSync(bigPath, big);
  await page.setInputFiles('#csv-file', bigPath);
  await page.waitForSelector('#csv-status.good', { timeout: 60000 });
  const bigSeconds = (Date.now() - t0) / 1000;
  const pageSeconds = Number(await page.getAttribute('#csv-status', 'data-read-ms')) / 1000;
  const ticks = await page.evaluate(() => { clearInterval(window.ticker); return window.ticks; });
  assert.ok(ticks >= 3, `the page's timers ran while it read 5 MB (${ticks} ticks in ${bigSeconds} s)`);
  const bigTable = await statsTable(page);
  checkColumn(bigTable, 'liquid_bbl', bigLiquid, 0);
  checkColumn(bigTable, 'gas_mcf', bigGas, 0);
  console.log(`site_page: 5 MB CSV (${bigLiquid.length} rows) read by the page in ${pageSeconds.toFixed(2)} s ` +
              `(${bigSeconds.toFixed(2)} s as the test saw it), ${ticks} timer ticks meanwhile`);

  // Nothing left this origin, and no request carried a row of any CSV.
  const origin = new URL(url).origin;
  for (const r of requests) assert.equal(new URL(r.url).origin, origin, `a request beyond the node: ${r.url}`);
  for (const r of requests)
    for (const row of [csv.rows[0].join(','), '"AB-01","said', 'W-5,'])
      assert.ok(!r.body.includes(row), `a request carried CSV rows: ${r.method} ${r.url}`);
  // The browser logs each refused request (the probe without a key and the
  // wrong key: 401s the page expects); nothing else may appear.
  assert.deepEqual(problems.filter((p) => !/status of 401/.test(p)), [], 'console errors or exceptions on the page');
  assert.equal(problems.length, 2, `two refusals logged: ${JSON.stringify(problems)}`);

  // Logging out forgets the key.
  await page.click('#logout');
  await page.waitForSelector('#login-section:not([hidden])');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('fedge.apiKey')), null);

  // On loopback without serve.api_keys, the node needs no key and the page no login.
  const openUrl = await startNode('open', { withKey: false, trainFile: path.join(siteDir, 'train.jsonl') });
  const open = await browser.newPage();
  await open.goto(openUrl + '/site');
  await open.waitForSelector('#app:not([hidden])');
  assert.equal(await open.isVisible('#login-section'), false);
  assert.equal(await open.isVisible('#logout'), false);
  console.log(`site_page: passed in ${((Date.now() - started) / 1000).toFixed(1)} s; screenshot ${path.join(ARTIFACTS, 'site_page.png')}`);
}

async function cleanup() {
  if (browser) await browser.close().catch(() => {});
  for (const { child } of nodes) if (child.exitCode === null) child.kill('SIGTERM');
  await Promise.all(nodes.map(({ child }) => child.exitCode !== null ? null
    : new Promise((r) => { child.on('exit', r); setTimeout(r, 5000); })));
}

try {
  await main();
  await cleanup();
  fs.rmSync(work, { recursive: true, force: true });
} catch (e) {
  console.error('site_page: FAILED:', e);
  for (const { log } of nodes) {
    console.error(`---- ${log} (last 20 lines)`);
    console.error(fs.readFileSync(log, 'utf8').split('\n').slice(-20).join('\n'));
  }
  await cleanup();
  console.error(`(work folder kept: ${work})`);
  process.exit(1);
}
