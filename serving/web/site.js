// The site page of `fedge node` (docs/SERVING.md, "The site page"): log in
// with an API key, read a CSV of well data in the browser, show statistics and
// a histogram per numeric column, and chat with the node's model through its
// own OpenAI API (/v1/chat/completions, streamed). Every request goes to this
// node (relative URLs; the page's Content-Security-Policy allows no other
// destination), and the CSV itself is never sent: only its summary, in the
// chat's system message.
'use strict';

const KEY_STORAGE = 'fedge.apiKey';
const MAX_CSV_BYTES = 64 * 1024 * 1024;  // beyond this a browser tab strains; the node's tools read bigger files
const PARSE_SLICE_CHARS = 256 * 1024;    // parsed between yields to the event loop, so the page stays responsive
const MAX_TRACKED_TEXT_VALUES = 10000;   // distinct values counted per text column
const HISTOGRAM_BINS = 20;
// Cells that mean "no value" in exported spreadsheets; counted as empty, so a
// numeric column with gaps stays numeric.
const MISSING_MARKERS = new Set(['na', 'n/a', 'nan', 'null', 'none', '-']);
const NUMBER_PATTERN = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/;

const state = {
  key: '',           // the API key in use ('' when the node asks for none)
  model: '',         // the node's base model id, from GET /v1/models
  summary: '',       // the loaded CSV's summary for the system message
  history: [],       // the chat's turns: {role, content}
  abort: null,       // AbortController of the answer being streamed
  parseGeneration: 0, // a newer file cancels the parse of an older one
  refresher: 0        // the interval that refreshes the node's status
};

const $ = (id) => document.getElementById(id);

function setStatus(id, text, kind = '') {
  const el = $(id);
  el.textContent = text;
  el.className = 'status' + (kind ? ' ' + kind : '');
}

// ---- The node's API ---------------------------------------------------------

function headers(extra = {}) {
  const h = { ...extra };
  if (state.key) h.Authorization = 'Bearer ' + state.key;
  return h;
}

function api(path, options = {}) {
  return fetch(path, { ...options, headers: headers(options.headers), cache: 'no-store', credentials: 'omit' });
}

// The message of an OpenAI-style error body, else the status line.
async function errorMessage(res) {
  try {
    const body = await res.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch (_) { /* not JSON */ }
  return `HTTP ${res.status} ${res.statusText}`;
}

// ---- Logging in ---------------------------------------------------------------

// Asks GET /v1/models with `key` ('' for none): the node's answer says
// whether the key is good (or not needed) and lists the adapters served.
async function tryKey(key) {
  state.key = key;
  const res = await api('v1/models');
  if (res.ok) return { ok: true, models: await res.json() };
  return { ok: false, status: res.status, message: await errorMessage(res) };
}

function showLogin(message) {
  state.key = '';
  $('app').hidden = true;
  $('logout').hidden = true;
  $('login-section').hidden = false;
  $('start-status').hidden = true;
  $('node-info').textContent = '';
  setStatus('login-status', message, message ? 'bad' : '');
  $('api-key').focus();
}

const REFRESH_MS = 20000;  // the adapters change with each round: the header and selector follow

async function enterApp(models) {
  $('login-section').hidden = true;
  $('start-status').hidden = true;
  $('app').hidden = false;
  $('logout').hidden = !state.key;
  fillAdapters(models, null);
  await refreshNode();
  clearInterval(state.refresher);
  state.refresher = setInterval(refreshNode, REFRESH_MS);
}

// The adapter selector: the node's default, what /v1/models lists (global,
// and local where the node exposes it, with their versions), the slots /health
// names that have no adapter yet (disabled), and the base model alone. The
// selection survives a refresh while its option does.
function fillAdapters(models, health) {
  const select = $('adapter');
  const selected = select.value;
  select.replaceChildren();
  const add = (value, label, disabled = false) => {
    const option = document.createElement('option');
    option.value = value;
    option.textContent = label;
    option.disabled = disabled;
    select.append(option);
  };
  const entries = (models && models.data) || [];
  const base = entries.find((m) => m.fedge && m.fedge.adapter === 'default') || entries[0];
  state.model = base ? base.id : '';
  add('default', 'node default');
  const listed = new Set();
  for (const m of entries) {
    const adapter = m.fedge && m.fedge.adapter;
    if (adapter !== 'global' && adapter !== 'local') continue;
    listed.add(adapter);
    add(adapter, `${adapter} adapter v${m.fedge.adapter_version}`);
  }
  for (const name of Object.keys((health && health.adapters) || {}))
    if (!listed.has(name)) add(name, `${name} adapter (none installed yet)`, true);
  add('none', 'base model, no adapter');
  const keep = [...select.options].find((o) => o.value === selected && !o.disabled);
  if (keep) select.value = selected;
}

// The header line and the adapter selector, from GET /health and /v1/models.
async function refreshNode() {
  if ($('app').hidden) return;
  try {
    const [healthRes, modelsRes] = await Promise.all([api('health'), api('v1/models')]);
    if (modelsRes.status === 401) {
      onLogout();
      setStatus('login-status', `The node no longer accepts this key: ${await errorMessage(modelsRes)}`, 'bad');
      return;
    }
    if (!healthRes.ok || !modelsRes.ok) return;
    const [h, models] = [await healthRes.json(), await modelsRes.json()];
    fillAdapters(models, h);
    const parts = [`model ${h.model || state.model}`];
    for (const [name, a] of Object.entries(h.adapters || {}))
      parts.push(a.installed ? `${name} adapter v${a.version}` : `no ${name} adapter yet`);
    for (const [k, v] of Object.entries(h.node || {})) parts.push(`${k} ${v}`);
    $('node-info').textContent = parts.join(' · ');
  } catch (_) { /* the node is restarting or unreachable: the next refresh tries again */ }
}

async function onLogin(event) {
  event.preventDefault();
  const key = $('api-key').value.trim();
  if (!key) return;
  $('login-button').disabled = true;
  setStatus('login-status', 'Checking the key…');
  try {
    const r = await tryKey(key);
    if (r.ok) {
      sessionStorage.setItem(KEY_STORAGE, key);
      $('api-key').value = '';
      setStatus('login-status', '');
      await enterApp(r.models);
    } else {
      state.key = '';
      setStatus('login-status', `The node refused this key (HTTP ${r.status}): ${r.message}`, 'bad');
    }
  } catch (e) {
    state.key = '';
    setStatus('login-status', `Cannot reach the node: ${e.message}`, 'bad');
  } finally {
    $('login-button').disabled = false;
  }
}

function onLogout() {
  clearInterval(state.refresher);
  sessionStorage.removeItem(KEY_STORAGE);
  stopAnswer();
  showLogin('');
}

// ---- Reading the CSV (RFC 4180) ---------------------------------------------------

// An incremental RFC 4180 reader: fields split by commas, records by CRLF
// (LF or a lone CR too); a field in double quotes may hold commas, line
// breaks and "" for a quote. feed() reads a slice of the text at a time, so
// the caller can yield between slices; records come out through onRecord.
// Lenient where spreadsheets are: a quote inside an unquoted field is kept,
// text after a closing quote is appended (and counted), blank lines are no
// records, an unclosed quote runs to the end (and is reported).
const FIELD_START = 0, UNQUOTED = 1, QUOTED = 2, AFTER_QUOTE = 3;

class CsvReader {
  constructor(text, onRecord) {
    this.text = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;  // a byte order mark
    this.onRecord = onRecord;
    this.pos = 0;
    this.mode = FIELD_START;
    this.field = '';
    this.record = [];
    this.line = 1;
    this.quoteLine = 0;        // where the last quoted field opened
    this.unterminated = false;
    this.strayAfterQuote = 0;  // fields with text after their closing quote
  }

  // Reads up to `chars` more characters; false once the text is done.
  feed(chars) {
    const text = this.text;
    const end = Math.min(text.length, this.pos + chars);
    let i = this.pos;
    while (i < end) {
      if (this.mode === QUOTED) {
        let q = text.indexOf('"', i);
        if (q < 0 || q >= end) q = end;
        this.addQuotedText(i, q);
        if (q === end) { i = end; continue; }
        if (text.charCodeAt(q + 1) === 34) { this.field += '"'; i = q + 2; }  // "" is a quote
        else { this.mode = AFTER_QUOTE; i = q + 1; }
        continue;
      }
      const c = text.charCodeAt(i);
      if (c === 44) { this.endField(); i += 1; continue; }  // ,
      if (c === 10 || c === 13) {  // LF, CR or CRLF
        this.endRecord();
        i += c === 13 && text.charCodeAt(i + 1) === 10 ? 2 : 1;
        this.line += 1;
        continue;
      }
      if (c === 34 && this.mode === FIELD_START) { this.mode = QUOTED; this.quoteLine = this.line; i += 1; continue; }
      if (this.mode === AFTER_QUOTE) this.strayAfterQuote += 1;
      this.mode = UNQUOTED;
      let j = i + 1;  // the run up to the next comma or line break
      while (j < end) {
        const d = text.charCodeAt(j);
        if (d === 44 || d === 10 || d === 13) break;
        j += 1;
      }
      this.field += text.slice(i, j);
      i = j;
    }
    this.pos = i;
    if (i < text.length) return true;
    this.finish();
    return false;
  }

  addQuotedText(from, to) {
    const run = this.text.slice(from, to);
    for (let k = run.indexOf('\n'); k >= 0; k = run.indexOf('\n', k + 1)) this.line += 1;
    this.field += run;
  }

  endField() {
    this.record.push(this.field);
    this.field = '';
    this.mode = FIELD_START;
  }

  endRecord() {
    const blank = this.record.length === 0 && this.field === '' && this.mode === FIELD_START;
    this.endField();
    if (!blank) this.onRecord(this.record);
    this.record = [];
  }

  finish() {
    this.unterminated = this.mode === QUOTED;
    if (this.record.length > 0 || this.field !== '' || this.mode !== FIELD_START) this.endRecord();
  }
}

// What one column holds, gathered cell by cell.
class ColumnTally {
  constructor(name) {
    this.name = name;
    this.numbers = [];
    this.empty = 0;
    this.textCount = 0;
    this.textValues = new Map();  // value -> count, at most MAX_TRACKED_TEXT_VALUES
    this.moreText = false;        // distinct values beyond the ones tracked
    this.firstText = '';
  }

  add(cell) {
    const value = cell.trim();
    if (value === '' || MISSING_MARKERS.has(value.toLowerCase())) { this.empty += 1; return; }
    if (NUMBER_PATTERN.test(value)) {
      const x = Number(value);
      if (Number.isFinite(x)) { this.numbers.push(x); return; }
    }
    this.textCount += 1;
    if (!this.firstText) this.firstText = value;
    const seen = this.textValues.get(value);
    if (seen !== undefined) this.textValues.set(value, seen + 1);
    else if (this.textValues.size < MAX_TRACKED_TEXT_VALUES) this.textValues.set(value, 1);
    else this.moreText = true;
  }

  // Numeric: at least one number and nothing else (empty cells aside).
  get numeric() { return this.numbers.length > 0 && this.textCount === 0; }
}

// count, mean, min, max and the sample standard deviation (n - 1, as
// spreadsheets' STDEV and pandas' describe()), two passes for accuracy.
function columnStats(xs) {
  const n = xs.length;
  let sum = 0, min = Infinity, max = -Infinity;
  for (const x of xs) {
    sum += x;
    if (x < min) min = x;
    if (x > max) max = x;
  }
  const mean = sum / n;
  let squares = 0;
  for (const x of xs) squares += (x - mean) * (x - mean);
  const std = n > 1 ? Math.sqrt(squares / (n - 1)) : NaN;
  return { count: n, mean, min, max, std };
}

// Counts in HISTOGRAM_BINS equal bins from min to max (max in the last bin);
// one bin when all values are equal.
function histogram(xs, min, max) {
  const bins = max > min ? HISTOGRAM_BINS : 1;
  const counts = new Array(bins).fill(0);
  const width = (max - min) / bins;
  for (const x of xs) {
    const b = bins === 1 ? 0 : Math.min(bins - 1, Math.floor((x - min) / width));
    counts[b] += 1;
  }
  return { counts, width };
}

// Numbers as the table shows them: integers whole, others to 3 decimals
// (3 significant digits below 0.001), no trailing zeros.
function formatNumber(v) {
  if (!Number.isFinite(v)) return '–';
  if (Number.isInteger(v)) return String(v);
  if (Math.abs(v) < 0.001) return String(Number(v.toPrecision(3)));
  return String(Number(v.toFixed(3)));
}

// Shorter still, for the system message: 4 significant digits.
function shortNumber(v) {
  if (!Number.isFinite(v)) return 'n/a';
  if (Number.isInteger(v) && Math.abs(v) < 1e6) return String(v);
  return String(Number(v.toPrecision(4)));
}

function yieldToBrowser() {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

async function onFileChosen() {
  const file = $('csv-file').files[0];
  if (!file) return;
  const generation = ++state.parseGeneration;
  clearResults();
  if (file.size > MAX_CSV_BYTES) {
    setStatus('csv-status', `${file.name} is ${(file.size / 1048576).toFixed(1)} MB; this page reads files up to ` +
              `${MAX_CSV_BYTES / 1048576} MB. Split it, or summarise it on the node.`, 'bad');
    return;
  }
  setStatus('csv-status', `Reading ${file.name}…`);
  const startedMs = performance.now();
  let text;
  try {
    text = await file.text();
  } catch (e) {
    setStatus('csv-status', `Cannot read ${file.name}: ${e.message}`, 'bad');
    return;
  }
  if (generation !== state.parseGeneration) return;
  const result = await parseCsv(text, generation);
  if (!result) return;  // a newer file took over
  showResults(file.name, result);
  $('csv-status').dataset.readMs = String(Math.round(performance.now() - startedMs));
}

function clearResults() {
  $('stats-table').hidden = true;
  $('text-table').hidden = true;
  $('stats-table').tBodies[0].replaceChildren();
  $('text-table').tBodies[0].replaceChildren();
  $('charts').replaceChildren();
  $('csv-warnings').replaceChildren();
  $('csv-progress').hidden = true;
  state.summary = '';
  updateSystemMessage();
}

// Parses the text slice by slice, yielding between slices (a 5 MB file takes a
// few dozen slices), into one ColumnTally per header column. Returns null when
// a newer file was chosen meanwhile.
async function parseCsv(text, generation) {
  const progress = $('csv-progress');
  progress.hidden = false;
  let columns = null;
  let rows = 0, shortRows = 0, longRows = 0;
  const reader = new CsvReader(text, (record) => {
    if (!columns) {
      columns = record.map((name, i) => new ColumnTally(name.trim() || `column ${i + 1}`));
      return;
    }
    rows += 1;
    if (record.length < columns.length) shortRows += 1;
    if (record.length > columns.length) longRows += 1;
    for (let i = 0; i < columns.length; ++i) columns[i].add(i < record.length ? record[i] : '');
  });
  while (reader.feed(PARSE_SLICE_CHARS)) {
    progress.value = reader.pos / reader.text.length;
    await yieldToBrowser();
    if (generation !== state.parseGeneration) return null;
  }
  progress.hidden = true;
  const warnings = [];
  if (shortRows) warnings.push(`${shortRows} rows have fewer fields than the header; their missing cells count as empty.`);
  if (longRows) warnings.push(`${longRows} rows have more fields than the header; the extra fields are ignored.`);
  if (reader.unterminated)
    warnings.push(`A quoted field opened on line ${reader.quoteLine} is never closed; it runs to the end of the file.`);
  if (reader.strayAfterQuote)
    warnings.push(`${reader.strayAfterQuote} quoted fields have text after their closing quote; it is kept.`);
  for (const c of columns || [])
    if (c.numbers.length > 0 && c.textCount > 0)
      warnings.push(`Column "${c.name}" mixes ${c.numbers.length} numbers with ${c.textCount} other values ` +
                    `(e.g. "${c.firstText}"), so it is shown as text.`);
  return { columns: columns || [], rows, warnings };
}

function cell(text, value) {
  const td = document.createElement('td');
  td.textContent = text;
  if (value !== undefined) td.dataset.value = String(value);
  return td;
}

function showResults(name, { columns, rows, warnings }) {
  if (columns.length === 0) {
    setStatus('csv-status', `${name} is empty: a CSV needs a header row and rows of data.`, 'bad');
    return;
  }
  const numeric = columns.filter((c) => c.numeric);
  const other = columns.filter((c) => !c.numeric);
  setStatus('csv-status', `${name}: ${rows} rows, ${columns.length} columns (${numeric.length} numeric).`, 'good');
  for (const w of warnings) {
    const li = document.createElement('li');
    li.textContent = w;
    $('csv-warnings').append(li);
  }
  const statsBody = $('stats-table').tBodies[0];
  const stats = new Map();
  for (const c of numeric) {
    const s = columnStats(c.numbers);
    stats.set(c, s);
    const tr = document.createElement('tr');
    tr.dataset.column = c.name;
    tr.append(cell(c.name), cell(String(s.count), s.count), cell(formatNumber(s.mean), s.mean),
              cell(formatNumber(s.min), s.min), cell(formatNumber(s.max), s.max),
              cell(formatNumber(s.std), Number.isFinite(s.std) ? s.std : ''), cell(String(c.empty), c.empty));
    statsBody.append(tr);
    $('charts').append(chart(c.name, c.numbers, s));
  }
  $('stats-table').hidden = numeric.length === 0;
  const textBody = $('text-table').tBodies[0];
  for (const c of other) {
    const tr = document.createElement('tr');
    tr.dataset.column = c.name;
    const top = mostFrequent(c);
    tr.append(cell(c.name), cell(String(c.textCount + c.numbers.length)),
              cell(c.moreText ? `over ${MAX_TRACKED_TEXT_VALUES}` : String(c.textValues.size)),
              cell(top ? `${clip(top[0], 80)} (${top[1]})` : ''), cell(String(c.empty)));
    textBody.append(tr);
  }
  $('text-table').hidden = other.length === 0;
  state.summary = summaryText(name, rows, columns, stats);
  updateSystemMessage();
}

function mostFrequent(column) {
  let best = null;
  for (const entry of column.textValues) if (!best || entry[1] > best[1]) best = entry;
  return best;
}

// ---- Charts (SVG, drawn here) ------------------------------------------------------

const SVG_NS = 'http://www.w3.org/2000/svg';

function svgElement(tag, attributes, text) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attributes)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

// A histogram of one column: HISTOGRAM_BINS bars over [min, max], each with
// its count in data-count and a tooltip with its range.
function chart(name, xs, s) {
  const { counts, width } = histogram(xs, s.min, s.max);
  const W = 320, H = 160, left = 36, right = 8, top = 8, bottom = 24;
  const plotW = W - left - right, plotH = H - top - bottom;
  const peak = Math.max(...counts);
  const svg = svgElement('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img',
                                  'aria-label': `Histogram of ${name}` });
  svg.append(svgElement('line', { class: 'axis', x1: left, y1: top + plotH, x2: left + plotW, y2: top + plotH }));
  svg.append(svgElement('line', { class: 'axis', x1: left, y1: top, x2: left, y2: top + plotH }));
  const barW = plotW / counts.length;
  counts.forEach((count, b) => {
    const h = peak > 0 ? (count / peak) * plotH : 0;
    const rect = svgElement('rect', { class: 'bar', x: (left + b * barW + 0.5).toFixed(2),
                                      y: (top + plotH - h).toFixed(2), width: Math.max(0.5, barW - 1).toFixed(2),
                                      height: h.toFixed(2), 'data-count': count });
    const lo = s.min + b * width, hi = counts.length === 1 ? s.max : lo + width;
    rect.append(svgElement('title', {}, `${formatNumber(lo)} – ${formatNumber(hi)}: ${count}`));
    svg.append(rect);
  });
  svg.append(svgElement('text', { x: left, y: H - 8, 'text-anchor': 'start' }, formatNumber(s.min)));
  svg.append(svgElement('text', { x: left + plotW, y: H - 8, 'text-anchor': 'end' }, formatNumber(s.max)));
  svg.append(svgElement('text', { x: left - 4, y: top + 8, 'text-anchor': 'end' }, String(peak)));
  svg.append(svgElement('text', { x: left - 4, y: top + plotH, 'text-anchor': 'end' }, '0'));
  const figure = document.createElement('figure');
  figure.className = 'chart';
  figure.dataset.column = name;
  const caption = document.createElement('figcaption');
  caption.textContent = `${name} (${s.count} values)`;
  figure.append(caption, svg);
  return figure;
}

// ---- The summary for the model ---------------------------------------------------------

const MAX_SUMMARY_COLUMNS = 24;  // a small model's context holds a few hundred tokens

function summaryText(name, rows, columns, stats) {
  const lines = [`The operator loaded ${name}: ${rows} rows, ${columns.length} columns.`];
  const numeric = columns.filter((c) => c.numeric).slice(0, MAX_SUMMARY_COLUMNS);
  if (numeric.length) {
    lines.push('Numeric columns (count, mean, min, max, std):');
    for (const c of numeric) {
      const s = stats.get(c);
      lines.push(`${c.name}: ${s.count}, ${shortNumber(s.mean)}, ${shortNumber(s.min)}, ${shortNumber(s.max)}, ` +
                 `${shortNumber(s.std)}`);
    }
  }
  const other = columns.filter((c) => !c.numeric).slice(0, MAX_SUMMARY_COLUMNS);
  if (other.length) {
    const parts = other.map((c) => {
      const top = mostFrequent(c);
      const distinct = c.moreText ? `over ${MAX_TRACKED_TEXT_VALUES}` : String(c.textValues.size);
      return `${c.name} (${distinct} distinct${top ? `, e.g. ${clip(top[0], 40)}` : ''})`;
    });
    lines.push(`Other columns: ${parts.join('; ')}.`);
  }
  const left = columns.length - numeric.length - other.length;
  if (left > 0) lines.push(`(${left} more columns not listed.)`);
  return lines.join('\n');
}

// One line of at most `max` characters (a cell may hold line breaks and pages of text).
function clip(text, max) {
  const line = text.replace(/\s+/g, ' ');
  return line.length > max ? line.slice(0, max - 1) + '…' : line;
}

function systemMessage() {
  if (!state.summary || !$('include-summary').checked) return '';
  return 'You answer questions about oil-well production data.\n' + state.summary;
}

function updateSystemMessage() {
  const text = systemMessage();
  $('system-message').textContent = text || '(none: load a CSV, or tick "give the model the CSV summary")';
}

// ---- Chat through /v1/chat/completions (streamed) -------------------------------------------

function addMessage(role, text) {
  const div = document.createElement('div');
  div.className = `message ${role}`;
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = text;
  div.append(body);
  $('chat-log').append(div);
  div.scrollIntoView({ block: 'end' });
  return div;
}

function chatRequestBody() {
  const messages = [];
  const system = systemMessage();
  if (system) messages.push({ role: 'system', content: system });
  messages.push(...state.history);
  const body = { model: state.model, messages, stream: true };
  const adapter = $('adapter').value;
  if (adapter !== 'default') body.adapter = adapter;
  const temperature = Number($('temperature').value);
  if ($('temperature').value !== '' && Number.isFinite(temperature)) body.temperature = temperature;
  const maxTokens = Number($('max-tokens').value);
  if (Number.isInteger(maxTokens) && maxTokens > 0) body.max_tokens = maxTokens;
  return body;
}

// Reads the server-sent events of a streamed answer, calling onChunk with
// each parsed `data:` object until [DONE].
async function readEvents(res, onChunk) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split('\n')) {
        if (!line.startsWith('data:')) continue;
        const data = line.slice(5).trim();
        if (data === '[DONE]') return;
        onChunk(JSON.parse(data));
      }
    }
  }
}

async function onSend(event) {
  event.preventDefault();
  const question = $('chat-input').value.trim();
  if (!question || state.abort) return;
  $('chat-input').value = '';
  state.history.push({ role: 'user', content: question });
  addMessage('user', question);
  const answer = addMessage('assistant', '');
  const text = answer.querySelector('.text');
  answer.dataset.chunks = '0';
  answer.dataset.done = 'false';
  state.abort = new AbortController();
  $('chat-send').disabled = true;
  $('chat-stop').disabled = false;
  setStatus('chat-status', 'The model is answering…');
  let reply = '', meta = null, finish = '';
  try {
    const res = await api('v1/chat/completions', {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(chatRequestBody()), signal: state.abort.signal
    });
    if (!res.ok) throw new Error(`${await errorMessage(res)} (HTTP ${res.status})`);
    await readEvents(res, (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.fedge) meta = chunk.fedge;
      for (const choice of chunk.choices || []) {
        const piece = choice.delta && choice.delta.content;
        if (piece) {
          reply += piece;
          text.textContent = reply;
          answer.dataset.chunks = String(Number(answer.dataset.chunks) + 1);
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    });
    state.history.push({ role: 'assistant', content: reply });
    answer.dataset.finish = finish;
    setStatus('chat-status', '');
  } catch (e) {
    if (e.name === 'AbortError') {
      state.history.push({ role: 'assistant', content: reply });
      answer.dataset.finish = 'stopped';
      setStatus('chat-status', 'Stopped.');
    } else {
      // The question goes again with the next one only if it was answered.
      state.history.pop();
      answer.classList.add('failed');
      text.textContent = reply || '(no answer)';
      setStatus('chat-status', `The node could not answer: ${e.message}` +
                (/context/.test(e.message) ? ' Clear the chat or untick the CSV summary to make room.' : ''), 'bad');
    }
  } finally {
    if (meta) {
      const span = document.createElement('span');
      span.className = 'meta';
      span.textContent = `${meta.adapter}${meta.adapter_version ? ' v' + meta.adapter_version : ''}` +
                         (finish ? ` · ${finish}` : '');
      answer.append(span);
    }
    answer.dataset.done = 'true';
    state.abort = null;
    $('chat-send').disabled = false;
    $('chat-stop').disabled = true;
  }
}

function stopAnswer() {
  if (state.abort) state.abort.abort();
}

function clearChat() {
  stopAnswer();
  state.history = [];
  $('chat-log').replaceChildren();
  setStatus('chat-status', '');
}

// ---- Start ------------------------------------------------------------------------------

async function start() {
  $('login-form').addEventListener('submit', onLogin);
  $('logout').addEventListener('click', onLogout);
  $('csv-file').addEventListener('change', onFileChosen);
  $('chat-form').addEventListener('submit', onSend);
  $('chat-stop').addEventListener('click', stopAnswer);
  $('chat-clear').addEventListener('click', clearChat);
  $('include-summary').addEventListener('change', updateSystemMessage);
  $('chat-input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); $('chat-form').requestSubmit(); }
  });
  updateSystemMessage();
  // A key from earlier in this tab, else none: a node on loopback without
  // serve.api_keys answers without one.
  const saved = sessionStorage.getItem(KEY_STORAGE) || '';
  try {
    const r = await tryKey(saved);
    if (r.ok) return enterApp(r.models);
    if (saved) sessionStorage.removeItem(KEY_STORAGE);
    showLogin(saved ? `The saved key was refused: ${r.message}` : '');
  } catch (e) {
    setStatus('start-status', `Cannot reach the node: ${e.message}`, 'bad');
  }
}

start();
