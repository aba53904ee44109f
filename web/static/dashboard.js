// dashboard.js — polls the manager's /status and /health every second, and
// at once when the manager's event stream (/events: farms and sessions of
// every manager sharing its store) reports a change, and renders them. Tables are updated in place, row by row and cell by cell, so
// that a selection (a session id being copied) survives the next poll.
import { h, apiURL, setText, fmtDuration, fmtPercent, fmtInt, secondsSince } from './ui.js';

const POLL_MS = 1000;
const TIMEOUT_MS = 3000;

const $ = (id) => document.getElementById(id);

// Table renders rows keyed by id into a container.
// columns: [{label, value(row, now) → string, pill?(row) → class, num?, mono?}]
class Table {
  constructor(container, { columns, key, empty }) {
    this.columns = columns;
    this.key = key;
    this.rows = new Map();
    this.tbody = h('tbody');
    this.emptyRow = h('tr', { class: 'empty' }, h('td', { colspan: columns.length, text: empty }));
    const head = h('tr', {}, ...columns.map((c) => h('th', { class: c.num ? 'num' : null, scope: 'col', text: c.label })));
    container.replaceChildren(h('table', {}, h('thead', {}, head), this.tbody));
    this.tbody.append(this.emptyRow);
  }

  update(rows, now) {
    if (rows.length === 0) {
      this.rows.clear();
      if (this.tbody.childNodes.length !== 1 || this.tbody.firstChild !== this.emptyRow) {
        this.tbody.replaceChildren(this.emptyRow);
      }
      return;
    }
    this.emptyRow.remove();
    const seen = new Map();
    rows.forEach((row, i) => {
      let k = String(this.key(row));
      if (seen.has(k)) k = `${k}#${i}`; // malformed data: keep every row
      let tr = this.rows.get(k);
      if (!tr) {
        tr = h('tr', {}, ...this.columns.map((c) => h('td', { class: [c.num && 'num', c.mono && 'mono'].filter(Boolean).join(' ') || null })));
      }
      seen.set(k, tr);
      const at = this.tbody.children[i];
      if (at !== tr) this.tbody.insertBefore(tr, at ?? null);
      this.columns.forEach((c, j) => fillCell(tr.children[j], c, row, now));
    });
    for (const [k, tr] of this.rows) if (!seen.has(k)) tr.remove();
    this.rows = seen;
  }
}

function fillCell(td, col, row, now) {
  const text = col.value(row, now);
  const pill = col.pill ? col.pill(row) : null;
  if (!pill) {
    setText(td, text);
    return;
  }
  let span = td.firstElementChild;
  if (!span) {
    span = h('span');
    td.replaceChildren(span);
  }
  const cls = `pill ${pill}`;
  if (span.className !== cls) span.className = cls;
  setText(span, text);
}

const str = (v) => (v == null || v === '' ? '–' : String(v));
const safeClass = (v) => String(v).toLowerCase().replace(/[^a-z0-9_-]/g, '');

const tables = {
  farms: new Table($('farms'), {
    key: (f) => f.id,
    empty: 'No farms registered.',
    columns: [
      { label: 'Farm', value: (f) => (f.name && f.name !== f.id ? `${f.name} (${f.id})` : str(f.id)), mono: true },
      { label: 'State', value: farmState, pill: (f) => `state-${farmState(f)}` },
      { label: 'Slots', value: (f) => fmtInt(f.slots), num: true },
      { label: 'Free', value: (f) => fmtInt(f.free), num: true },
      { label: 'Pools', value: (f) => (Array.isArray(f.pools) && f.pools.length ? f.pools.join(', ') : '–') },
      { label: 'Last seen', value: (f, now) => ago(f.last_seen, now), num: true },
    ],
  }),
  pools: new Table($('pools'), {
    key: (p) => p.name,
    empty: 'No pools.',
    columns: [
      { label: 'Pool', value: (p) => str(p.name), mono: true },
      { label: 'Instances', value: (p) => fmtInt(p.instances), num: true },
      { label: 'Idle', value: (p) => fmtInt(p.idle), num: true },
      { label: 'Busy', value: (p) => fmtInt(p.busy), num: true },
      { label: 'Starting', value: (p) => fmtInt(p.starting), num: true },
      { label: 'Warm', value: (p) => fmtInt(p.warm), num: true },
      { label: 'Release', value: (p) => str(p.release) },
    ],
  }),
  sessions: new Table($('sessions'), {
    key: (s) => s.id,
    empty: 'No sessions.',
    columns: [
      { label: 'Session', value: (s) => str(s.id), mono: true },
      { label: 'State', value: (s) => str(s.state), pill: (s) => `state-${safeClass(s.state)}` },
      { label: 'User', value: (s) => str(s.user) },
      { label: 'Pool', value: (s) => str(s.pool), mono: true },
      { label: 'Instance', value: (s) => str(s.instance), mono: true },
      { label: 'Age', value: (s) => fmtDuration(s.age_seconds), num: true },
      { label: 'Tasks in flight', value: (s) => fmtInt(s.tasks_in_flight), num: true },
    ],
  }),
  queue: new Table($('queue'), {
    key: (q) => q.session,
    empty: 'Nobody is waiting.',
    columns: [
      { label: '#', value: (q) => fmtInt(q.position), num: true },
      { label: 'Session', value: (q) => str(q.session), mono: true },
      { label: 'Pool', value: (q) => str(q.pool), mono: true },
      { label: 'Waiting', value: (q) => fmtDuration(q.waiting_seconds), num: true },
    ],
  }),
  instances: new Table($('instances'), {
    key: (i) => i.id,
    empty: 'No instances.',
    columns: [
      { label: 'Instance', value: (i) => str(i.id), mono: true },
      { label: 'State', value: (i) => str(i.state), pill: (i) => `state-${safeClass(i.state)}` },
      { label: 'Pool', value: (i) => str(i.pool), mono: true },
      { label: 'Farm', value: (i) => str(i.farm), mono: true },
      { label: 'PID / container', value: (i) => (i.pid ? String(i.pid) : str(i.container)), mono: true },
      { label: 'Session', value: (i) => str(i.session), mono: true },
      { label: 'Age', value: (i, now) => fmtDuration(secondsSince(i.started, now)), num: true },
    ],
  }),
  jobfarms: new Table($('jobfarms'), {
    key: (f) => f.id,
    empty: 'No farm is leasing conversion jobs.',
    columns: [
      { label: 'Farm', value: (f) => str(f.id), mono: true },
      { label: 'Job slots', value: (f) => fmtInt(f.job_slots), num: true },
      { label: 'Free', value: (f) => fmtInt(f.free_job_slots), num: true },
      { label: 'Last lease call', value: (f, now) => ago(f.last_seen, now), num: true },
    ],
  }),
};

// renderConversion shows the conversion queue and the farms' job slots;
// the card stays hidden on a manager without conversions.
function renderConversion(conv, now) {
  $('conversion').hidden = !conv;
  if (!conv) return;
  const q = conv.queue || {};
  setText($('q-pending'), fmtInt(q.Pending));
  setText($('q-delayed'), fmtInt(q.Delayed));
  setText($('q-leased'), fmtInt(q.Leased));
  setText($('q-done'), fmtInt(q.Done));
  setText($('q-failed'), fmtInt(q.Failed));
  setText($('q-slots'), `${fmtInt(conv.free_job_slots)} / ${fmtInt(conv.job_slots)}`);
  setText($('c-jobslots'), `${fmtInt(conv.job_slots)} job slots`);
  $('q-pending').classList.toggle('warn', (q.Pending || 0) > 0 && (conv.free_job_slots || 0) === 0);
  tables.jobfarms.update(list(conv.farms), now);
}

function farmState(f) {
  if (!f.live) return 'dead';
  if (f.draining) return 'draining';
  return f.suspect ? 'suspect' : 'live';
}

function ago(rfc3339, now) {
  const s = secondsSince(rfc3339, now);
  return Number.isNaN(s) ? '–' : `${fmtDuration(s)} ago`;
}

const list = (v) => (Array.isArray(v) ? v : []);

function renderStatus(st, now) {
  setText($('version'), str(st.version));
  setText($('uptime'), fmtDuration(st.uptime_seconds));

  const cap = st.capacity || {};
  renderCapacity(cap);

  const farms = list(st.farms);
  const pools = list(st.pools);
  const sessions = list(st.sessions);
  const queue = [...list(st.queue)].sort((a, b) => (a.position ?? 0) - (b.position ?? 0));
  const instances = list(st.instances);

  tables.farms.update(farms, now);
  tables.pools.update(pools, now);
  tables.sessions.update(sessions, now);
  tables.queue.update(queue, now);
  tables.instances.update(instances, now);
  renderConversion(st.conversion, now);

  const live = farms.filter((f) => f.live && !f.draining).length;
  setText($('n-sessions'), fmtInt(sessions.length));
  setText($('n-queue'), fmtInt(queue.length));
  setText($('n-instances'), fmtInt(instances.length));
  setText($('n-farms'), `${live} / ${farms.length}`);
  setText($('n-pools'), fmtInt(pools.length));
  setText($('c-farms'), farms.length);
  setText($('c-pools'), pools.length);
  setText($('c-sessions'), sessions.length);
  setText($('c-queue'), queue.length);
  setText($('c-instances'), instances.length);
  $('n-queue').classList.toggle('warn', queue.length > 0);
}

function renderCapacity(cap) {
  const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
  const slots = num(cap.slots);
  const busy = num(cap.busy);
  const starting = num(cap.starting);
  const idle = num(cap.idle);
  // A custom health rule (an embedding program's) has no threshold to draw.
  const custom = cap.rule === 'custom';
  const threshold = typeof cap.threshold === 'number' ? cap.threshold : 0.9;
  const ratio = typeof cap.ratio === 'number' ? cap.ratio : slots ? busy / slots : 0;
  const frac = (n) => (slots > 0 ? Math.min(1, Math.max(0, n / slots)) : 0);

  setText($('cap-busy'), fmtInt(busy));
  setText($('cap-busy2'), fmtInt(busy));
  setText($('cap-slots'), fmtInt(slots));
  setText($('cap-starting'), fmtInt(starting));
  setText($('cap-idle'), fmtInt(idle));
  setText($('cap-free'), fmtInt(Math.max(0, slots - busy - starting - idle)));
  setText($('cap-threshold'), fmtPercent(threshold));
  setText($('threshold-label'), fmtPercent(threshold));
  setText($('cap-ratio'), slots > 0 ? fmtPercent(ratio) : 'no capacity');

  // Widths go through the CSSOM, which the CSP allows (no style attributes).
  const b = frac(busy);
  const s = Math.min(frac(starting), 1 - b);
  const i = Math.min(frac(idle), 1 - b - s);
  $('seg-busy').style.width = `${b * 100}%`;
  $('seg-starting').style.width = `${s * 100}%`;
  $('seg-idle').style.width = `${i * 100}%`;
  $('threshold').style.left = `${Math.min(1, Math.max(0, threshold)) * 100}%`;
  $('threshold').hidden = custom;
  $('threshold-key').hidden = custom;
  $('rule-key').hidden = !custom;

  const meter = $('meter');
  meter.setAttribute('aria-valuenow', String(ratio));
  meter.setAttribute('aria-valuetext', `${fmtInt(busy)} of ${fmtInt(slots)} slots busy`);
  let level = slots === 0 || ratio >= threshold ? 'level-full' : ratio >= threshold * 0.75 ? 'level-high' : 'level-ok';
  if (custom) level = cap.healthy ? 'level-ok' : 'level-full';
  for (const el of [meter, $('cap-ratio')]) {
    el.classList.remove('level-ok', 'level-high', 'level-full');
    el.classList.add(level);
  }
}

function renderHealth(res) {
  const el = $('health');
  let cls;
  let text;
  let title;
  if (res.error) {
    cls = 'health-down';
    text = 'health unreachable';
    title = `GET /health failed: ${res.error}`;
  } else if (res.status === 200) {
    cls = 'health-ok';
    text = '200 healthy';
    title = 'GET /health → 200: below the threshold';
  } else if (res.status === 503) {
    cls = 'health-bad';
    text = '503 unavailable';
    title = 'GET /health → 503: at or above the threshold, or no capacity';
  } else {
    cls = 'health-bad';
    text = `${res.status} health`;
    title = `GET /health → ${res.status}`;
  }
  if (res.body) title += `\n${res.body}`;
  el.className = `health ${cls}`;
  setText(el, text);
  el.title = title;
}

function showBanner(msg) {
  const b = $('banner');
  if (msg) {
    setText(b, msg);
    b.hidden = false;
  } else {
    b.hidden = true;
  }
  $('main').classList.toggle('stale', Boolean(msg));
}

function timeoutSignal() {
  return typeof AbortSignal.timeout === 'function' ? AbortSignal.timeout(TIMEOUT_MS) : undefined;
}

async function fetchStatus() {
  const res = await fetch(apiURL('status'), { cache: 'no-store', signal: timeoutSignal(), headers: { Accept: 'application/json' } });
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  return res.json();
}

async function fetchHealth() {
  try {
    const res = await fetch(apiURL('health'), { cache: 'no-store', signal: timeoutSignal() });
    const body = (await res.text()).slice(0, 500).trim();
    return { status: res.status, body };
  } catch (e) {
    return { error: e.message || String(e) };
  }
}

let lastOK = 0;
let timer = null;
let inflight = false;

async function poll() {
  if (inflight) return;
  inflight = true;
  clearTimeout(timer);
  timer = null;
  const [st, health] = await Promise.all([
    fetchStatus().then((v) => ({ v }), (e) => ({ e })),
    fetchHealth(),
  ]);
  const now = Date.now();
  renderHealth(health);
  if (st.e) {
    const since = lastOK ? ` (last update ${fmtDuration((now - lastOK) / 1000)} ago)` : '';
    showBanner(`Cannot load /status: ${st.e.message || st.e}${since}`);
  } else {
    lastOK = now;
    showBanner(null);
    try {
      renderStatus(st.v || {}, now);
    } catch (e) {
      showBanner(`Cannot render /status: ${e.message}`);
    }
    setText($('updated'), `updated ${new Date(now).toLocaleTimeString()}`);
  }
  inflight = false;
  if (!document.hidden) timer = setTimeout(poll, POLL_MS);
}

// A hidden tab stops polling and catches up as soon as it is shown again.
document.addEventListener('visibilitychange', () => {
  if (!document.hidden && timer === null) poll();
});

// Changes anywhere in the cluster refresh the page without waiting for the
// next poll; several events in a burst make one refresh.
let soon = null;
if (typeof EventSource !== 'undefined') {
  const events = new EventSource(apiURL('events'));
  const refresh = () => {
    if (soon !== null || document.hidden) return;
    soon = setTimeout(() => {
      soon = null;
      poll();
    }, 100);
  };
  for (const type of ['farm_added', 'farm_removed', 'farm_draining', 'session_opened', 'session_ended',
    'session_moved', 'slot_freed']) {
    events.addEventListener(type, refresh);
  }
}

poll();
