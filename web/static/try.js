// try.js — "Try a session": opens a session with drover.js, sends the
// reference worker's commands and logs every frame with round-trip times.
import { DroverSession, defaultURL } from './drover.js';
import { h, apiURL, pageToken, setText, fmtMillis, fmtBytes, fmtInt } from './ui.js';

const $ = (id) => document.getElementById(id);
const MAX_LOG = 1000;

const endpoint = defaultURL(document.baseURI);
setText($('endpoint'), endpoint);

// The task data of the reference worker's commands, from a command form's
// inputs. Every command is {"command": NAME, …arguments}; see worker/commands.go.
const commands = {
  echo: (f) => ({ command: 'echo', data: f.data }),
  set: (f) => ({ command: 'set', key: f.key, value: f.value }),
  get: (f) => ({ command: 'get', key: f.key }),
  pid: () => ({ command: 'pid' }),
  sleep: (f) => ({ command: 'sleep', ms: int(f.ms) }),
  stream: (f) => ({ command: 'stream', bytes: int(f.bytes) }),
  results: (f) => ({ command: 'results', n: int(f.n) }),
  fail: () => ({ command: 'fail' }),
  crash: () => ({ command: 'crash' }),
};

function int(v) {
  const n = Number.parseInt(v, 10);
  return Number.isFinite(n) && n >= 0 ? n : 0;
}

let session = null;
let opening = null; // AbortController while connecting or queued
let lastSentID = null;
const stats = { sent: 0, ok: 0, failed: 0, total: 0 };

// ---- log ----

const log = $('log');
let logCount = 0;

function clock() {
  const d = new Date();
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

// addLog appends one line: dir is 'out', 'in' or 'note'.
function addLog(dir, type, body, kind = type) {
  const arrow = { out: '→', in: '←', note: '•' }[dir];
  const li = h('li', { class: `k-${kind}` },
    h('span', { class: 't', text: clock() }),
    h('span', { class: `dir-${dir}`, text: arrow, title: dir === 'out' ? 'sent' : dir === 'in' ? 'received' : null }),
    h('span', { class: 'type', text: type }),
    h('span', { class: 'body', text: body }));
  const follow = $('follow').checked;
  log.append(li);
  logCount++;
  while (log.childElementCount > MAX_LOG) log.firstElementChild.remove();
  setText($('log-count'), fmtInt(logCount));
  if (follow) log.scrollTop = log.scrollHeight;
  return li;
}

function abbreviate(text, max = 400) {
  return text.length > max ? `${text.slice(0, max)}… (${fmtInt(text.length)} chars)` : text;
}

function onFrame(ev) {
  const { dir, text, frame, binary } = ev.detail;
  if (binary) {
    const bytes = new Uint8Array(binary, 0, Math.min(8, binary.byteLength));
    const head = [...bytes].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    addLog('in', 'binary', `${fmtInt(binary.byteLength)} bytes (${fmtBytes(binary.byteLength)})${head ? `  ${head}…` : ''}`, 'binary');
    return;
  }
  if (dir === 'out' && frame && frame.type === 'task') lastSentID = frame.id;
  const type = frame ? frame.type : 'invalid';
  addLog(dir, type, abbreviate(text), frame ? type : 'error');
}

$('clear').addEventListener('click', () => {
  log.replaceChildren();
  logCount = 0;
  setText($('log-count'), '0');
});

// ---- session ----

function render() {
  const state = session ? session.state : 'closed';
  const pill = $('state');
  pill.className = `pill state-${state}`;
  setText(pill, state);
  const live = session && state !== 'closed';
  $('open').disabled = Boolean(live);
  $('cancel').hidden = !opening;
  $('logout').disabled = !live || Boolean(opening);
  $('commands').disabled = state !== 'open';
  $('pool').disabled = Boolean(live);
  $('wait').disabled = Boolean(live);
  $('labels').disabled = Boolean(live);
  setText($('session'), session?.session ?? '–');
  setText($('instance'), session?.instance ?? '–');
  setText($('resume'), session?.resumeToken ?? '–');
  $('resume').title = session?.resumeToken ?? '';
  setText($('position'), session?.position ?? '–');
}

function parseLabels(text) {
  const labels = {};
  for (const part of text.split(',')) {
    const s = part.trim();
    if (!s) continue;
    const i = s.indexOf('=');
    if (i <= 0) throw new Error(`label "${s}" is not key=value`);
    labels[s.slice(0, i).trim()] = s.slice(i + 1).trim();
  }
  return labels;
}

$('connect').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  if (session && session.state !== 'closed') return;
  let labels;
  try {
    labels = parseLabels($('labels').value);
  } catch (e) {
    addLog('note', 'error', e.message, 'error');
    return;
  }
  const pool = $('pool').value.trim();
  opening = new AbortController();
  const s = new DroverSession(endpoint, {
    pool: pool || undefined,
    wait: $('wait').checked,
    labels,
    signal: opening.signal,
    token: pageToken() || undefined,
  });
  session = s;
  s.addEventListener('frame', onFrame);
  s.addEventListener('statechange', render);
  s.addEventListener('queued', render);
  s.addEventListener('reconnecting', (e) => {
    const { attempt, delay, code } = e.detail;
    addLog('note', 'resume', `connection dropped (${code}); attempt ${attempt} in ${delay} ms`, 'event');
  });
  s.addEventListener('resumed', () => {
    addLog('note', 'resume', `resumed session ${s.session}; tasks in flight were rejected`, 'event');
    render();
  });
  s.addEventListener('error', (e) => addLog('note', 'error', `${e.detail.code}: ${e.detail.message}`, 'error'));
  s.addEventListener('close', (e) => {
    const { code, reason, error } = e.detail;
    const why = error ? `${error.code}: ${error.message}` : reason || 'closed';
    addLog('note', 'closed', `session over (close ${code}) — ${why}`, error ? 'error' : 'note');
    render();
  });
  addLog('note', 'open', `${endpoint} pool=${pool || '(default)'}${$('wait').checked ? '' : ' wait=false'}`, 'note');
  render();
  try {
    await s.connect();
  } catch {
    // The close event has logged why.
  } finally {
    opening = null;
    render();
  }
});

$('cancel').addEventListener('click', () => opening?.abort());

$('logout').addEventListener('click', async () => {
  if (!session) return;
  await session.logout();
  render();
});

// ---- tasks ----

function send(data) {
  if (!session || session.state !== 'open') return;
  $('raw').value = JSON.stringify(data);
  const started = performance.now();
  lastSentID = null;
  const p = session.execute(data);
  const id = lastSentID;
  stats.sent++;
  renderStats();
  p.then(
    (results) => {
      const ms = performance.now() - started;
      stats.ok++;
      stats.total += ms;
      renderStats(ms);
      const n = results.length;
      addLog('note', 'rtt', `task ${id} done · ${n} result${n === 1 ? '' : 's'} · ${fmtMillis(ms)}`, 'summary');
    },
    (err) => {
      const ms = performance.now() - started;
      stats.failed++;
      renderStats(ms);
      const li = addLog('note', 'rtt', `task ${id ?? '?'} ${err.code ?? 'error'}: ${err.message} · ${fmtMillis(ms)}`, 'summary');
      li.classList.add('failed');
    });
}

function renderStats(last) {
  setText($('st-sent'), fmtInt(stats.sent));
  setText($('st-ok'), fmtInt(stats.ok));
  setText($('st-failed'), fmtInt(stats.failed));
  if (last !== undefined) setText($('st-last'), fmtMillis(last));
  if (stats.ok) setText($('st-avg'), fmtMillis(stats.total / stats.ok));
}

for (const form of document.querySelectorAll('form.command')) {
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const make = commands[form.dataset.cmd];
    send(make(Object.fromEntries(new FormData(form))));
  });
}

$('raw-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  let data;
  try {
    data = JSON.parse($('raw').value);
  } catch (e) {
    addLog('note', 'error', `task data is not JSON: ${e.message}`, 'error');
    return;
  }
  send(data);
});

// ---- pools from /status, for the pool picker ----

async function loadPools() {
  try {
    const res = await fetch(apiURL('status'), { cache: 'no-store' });
    if (!res.ok) return;
    const st = await res.json();
    const names = (Array.isArray(st.pools) ? st.pools : []).map((p) => p && p.name).filter((n) => typeof n === 'string');
    $('pools').replaceChildren(...names.map((n) => h('option', { value: n })));
    if (names.length && !names.includes($('pool').value)) $('pool').value = names[0];
  } catch {
    // The picker stays free text.
  }
}

// Leaving the page ends the session at once rather than after the grace window.
window.addEventListener('pagehide', () => {
  if (session && session.state !== 'closed') session.logout();
});

addLog('note', 'ready', 'Open a session, then send commands. Frames you send (→) and receive (←) appear here.', 'note');
render();
loadPools();
