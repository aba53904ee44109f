// convert.js — the conversion page: upload models to the HOOPS-compatible
// API (/api), follow their items live from /events, download, reconvert or
// delete them, and look at a converted model in a WebGL view.
//
// The API is a sibling of the UI directory (/ui/ → /api/), like /status
// for the dashboard. Everything is drawn with DOM APIs and textContent.

import { h, apiURL, setText, fmtBytes, fmtDuration, secondsSince } from './ui.js';
import { readModel } from './glb.js';
import { GLView } from './glview.js';
import { readZipDirectory, modelEntries, blobReader, isZipName, extension, MODEL_EXTENSIONS } from './zipdir.js';
import { fetchStreamedModel, streamURL } from './streamclient.js';

const $ = (id) => document.getElementById(id);
const api = (path) => apiURL(`api/${path}`);

/** item id → the item as GET data/:id shows it. */
const items = new Map();
/** upload key → an upload in flight (or failed): {key, name, size, loaded, total, xhr, error}. */
const uploads = new Map();
/** key (item id or upload key) → {li, …its parts}, so rows update in place. */
const rows = new Map();
let uploadSeq = 0;

// ---- API ----

/** CS-API-Arg must be a Latin-1 header value: JSON with non-ASCII escaped. */
export function argHeader(args) {
  return JSON.stringify(args).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** The {"ERROR": …} sentence of a failed answer, or a sentence of our own. */
async function errorOf(res) {
  try {
    const body = await res.json();
    if (body && typeof body.ERROR === 'string') return body.ERROR;
  } catch {
    // not JSON: fall through
  }
  return `the server answered ${res.status} ${res.statusText}`.trim();
}

async function call(method, path) {
  const res = await fetch(api(path), { method, headers: { Accept: 'application/json' } });
  if (!res.ok) throw new Error(await errorOf(res));
  return res.json();
}

// ---- items ----

let loading = null;

/** Loads every item: at start, after /events reconnects, on item_resync. */
function loadAll() {
  if (loading) return loading;
  loading = call('GET', 'items')
    .then((body) => {
      items.clear();
      for (const it of body.itemarray ?? []) items.set(it.storageID, it);
      setText($('updated'), `updated ${new Date().toLocaleTimeString()}`);
      render();
    })
    .catch((e) => banner(`Could not list the items: ${e.message}`))
    .finally(() => {
      loading = null;
    });
  return loading;
}

const fetching = new Map(); // id → true while GET data/:id runs; 'again' when an event came meanwhile

/** Fetches one item again after an event about it; bursts make one or two fetches. */
async function refreshItem(id) {
  if (fetching.has(id)) {
    fetching.set(id, 'again');
    return;
  }
  fetching.set(id, true);
  try {
    const res = await fetch(api(`data/${encodeURIComponent(id)}`));
    if (res.status === 404) items.delete(id);
    else if (res.ok) items.set(id, await res.json());
    render();
  } catch {
    // The next event or reconnect brings it.
  } finally {
    const again = fetching.get(id) === 'again';
    fetching.delete(id);
    if (again) refreshItem(id);
  }
}

function followEvents() {
  if (typeof EventSource === 'undefined') return;
  const es = new EventSource(apiURL('events'));
  const live = $('live');
  es.addEventListener('open', () => {
    live.className = 'health health-ok';
    setText(live, 'live');
    loadAll(); // what changed while the stream was down
  });
  es.addEventListener('error', () => {
    live.className = 'health health-down';
    setText(live, 'reconnecting…');
  });
  const data = (e) => {
    try {
      return JSON.parse(e.data);
    } catch {
      return null;
    }
  };
  for (const type of ['item_created', 'item_updated']) {
    es.addEventListener(type, (e) => {
      const ev = data(e);
      if (!ev?.id) return;
      const it = items.get(ev.id);
      if (it && ev.conversionState) {
        // Show the new state at once; the full item follows.
        it.conversionState = ev.conversionState;
        render();
      }
      refreshItem(ev.id);
    });
  }
  es.addEventListener('item_deleted', (e) => {
    const ev = data(e);
    if (ev?.id && items.delete(ev.id)) render();
  });
  es.addEventListener('item_resync', () => loadAll());
}

// ---- rendering ----

/** The pill class of a conversion state. */
export function stateClass(state) {
  if (state === 'SUCCESS') return 'state-live';
  if (state === 'PENDING') return 'state-converting';
  if (state === 'UPLOADING') return 'state-starting';
  if (String(state).startsWith('ERROR')) return 'state-dead';
  return '';
}

function sizeOf(it) {
  return (it.originals ?? []).reduce((n, f) => n + (f.size || 0), 0);
}

function hasOutput(it, type) {
  return (it.outputs ?? []).some((o) => o.type === type);
}

function render() {
  // Uploads still running hide the server's UPLOADING item of the same name.
  const inFlight = new Set([...uploads.values()].filter((u) => !u.error).map((u) => u.name));
  const list = [
    ...[...uploads.values()].map((u) => ({ key: u.key, upload: u })),
    ...[...items.values()]
      .filter((it) => !(it.conversionState === 'UPLOADING' && inFlight.has(it.name)))
      .sort((a, b) => (a.created < b.created ? 1 : a.created > b.created ? -1 : 0))
      .map((it) => ({ key: it.storageID, item: it })),
  ];
  const ul = $('items');
  const keep = new Set(list.map((e) => e.key));
  for (const [key, row] of rows) {
    if (!keep.has(key)) {
      row.li.remove();
      rows.delete(key);
    }
  }
  let prev = null;
  for (const e of list) {
    let row = rows.get(e.key);
    if (!row) {
      row = e.upload ? uploadRow(e.upload) : itemRow(e.item);
      rows.set(e.key, row);
    }
    if (e.upload) updateUploadRow(row, e.upload);
    else updateItemRow(row, e.item);
    const want = prev ? prev.nextSibling : ul.firstChild;
    if (want !== row.li) ul.insertBefore(row.li, want);
    prev = row.li;
  }
  setText($('c-items'), items.size);
  $('empty').hidden = list.length > 0;
}

function uploadRow(u) {
  const bar = h('progress', { class: 'bar', max: 1, value: 0 });
  const pct = h('span', { class: 'muted small' });
  const cancel = h('button', { type: 'button', class: 'small-btn', text: 'Cancel' });
  cancel.addEventListener('click', () => {
    if (u.error) {
      uploads.delete(u.key);
      render();
    } else {
      u.xhr.abort();
    }
  });
  const pill = h('span', { class: 'pill state-starting', text: 'UPLOADING' });
  const err = h('div', { class: 'item-error', hidden: true });
  const li = h('li', { class: 'item uploading', 'data-upload': u.key, 'data-name': u.name, 'data-state': 'UPLOADING' },
    h('div', { class: 'thumb' }, h('span', { class: 'thumb-ext', text: extension(u.name).slice(1) || '?' })),
    h('div', { class: 'item-main' },
      h('div', { class: 'item-name', title: u.name, text: u.name }),
      h('div', { class: 'item-meta' }, bar, pct),
      err),
    h('div', { class: 'item-state' }, pill),
    h('div', { class: 'item-actions' }, cancel));
  return { li, bar, pct, pill, err, cancel };
}

function updateUploadRow(row, u) {
  const frac = u.total > 0 ? u.loaded / u.total : 0;
  row.bar.value = frac;
  row.li.dataset.progress = frac.toFixed(3);
  if (u.error) {
    row.pill.className = 'pill state-dead';
    setText(row.pill, 'UPLOAD FAILED');
    row.li.dataset.state = 'UPLOAD FAILED';
    setText(row.err, u.error);
    row.err.hidden = false;
    setText(row.cancel, 'Dismiss');
  } else {
    setText(row.pct, u.loaded >= u.total && u.total > 0
      ? 'converting on arrival…' : `${Math.floor(frac * 100)}% of ${fmtBytes(u.total)}`);
  }
}

function itemRow(it) {
  const id = it.storageID;
  const thumb = h('div', { class: 'thumb' });
  const name = h('div', { class: 'item-name' });
  const meta = h('div', { class: 'item-meta muted small' });
  const errSummary = h('summary', { text: 'why?' });
  const errText = h('pre', { class: 'item-detail' });
  const err = h('details', { class: 'item-error', hidden: true }, errSummary, errText);
  const pill = h('span', { class: 'pill' });
  const view = h('button', { type: 'button', class: 'view primary small-btn', text: '3D', title: 'Look at the model' });
  view.addEventListener('click', () => openViewer(items.get(id)));
  const dlList = h('ul', { class: 'menu-list' });
  const dl = h('details', { class: 'menu' }, h('summary', { class: 'small-btn', text: 'Download' }), dlList);
  // Also how an item uploaded with an upload token (UPLOADING until then) starts converting.
  const reconvert = h('button', { type: 'button', class: 'small-btn reconvert', text: 'Reconvert' });
  reconvert.addEventListener('click', async () => {
    reconvert.disabled = true;
    try {
      await call('PUT', `reconvert/${encodeURIComponent(id)}`);
      refreshItem(id);
    } catch (e) {
      banner(`Could not reconvert ${items.get(id)?.name ?? id}: ${e.message}`);
    } finally {
      reconvert.disabled = false;
    }
  });
  const del = h('button', { type: 'button', class: 'small-btn danger', text: 'Delete' });
  del.addEventListener('click', () => confirmDelete(items.get(id)));
  const li = h('li', { class: 'item', 'data-id': id },
    thumb,
    h('div', { class: 'item-main' }, name, meta),
    h('div', { class: 'item-state' }, pill),
    h('div', { class: 'item-actions' }, view, dl, reconvert, del),
    err);
  return { li, thumb, name, meta, err, errText, pill, view, dl, dlList, reconvert, del, thumbKey: null, dlKey: null };
}

function updateItemRow(row, it) {
  const state = it.conversionState ?? '';
  row.li.dataset.state = state;
  row.li.dataset.name = it.name;
  row.li.dataset.generation = String(it.generation ?? 0);
  setText(row.name, it.name);
  row.name.title = `${it.name}\nid ${it.storageID}${it.startPath ? `\nstartPath ${it.startPath}` : ''}`;
  row.meta.dataset.created = it.created;
  setText(row.meta, metaText(it));
  row.pill.className = `pill ${stateClass(state)}`;
  setText(row.pill, state);
  row.pill.title = it.detailedError || state;
  row.err.hidden = !it.detailedError;
  setText(row.errText, it.detailedError || '');

  // The thumbnail: reloaded when a conversion made a new one.
  const png = state === 'SUCCESS' && hasOutput(it, 'png');
  const thumbKey = png ? `${it.generation}-${it.updated}` : `none-${extension(it.name)}`;
  if (row.thumbKey !== thumbKey) {
    row.thumbKey = thumbKey;
    row.thumb.replaceChildren(png
      ? h('img', { class: 'thumb-img', alt: `thumbnail of ${it.name}`, loading: 'lazy', decoding: 'async',
        src: api(`file/${encodeURIComponent(it.storageID)}/png?v=${encodeURIComponent(thumbKey)}`) })
      : h('span', { class: 'thumb-ext', text: extension(it.name).slice(1) || '?' }));
  }

  row.view.disabled = !(state === 'SUCCESS' && hasOutput(it, 'glb'));
  const files = [...(it.outputs ?? []).map((o) => ({ ...o, href: `fileByName/${encodeURIComponent(it.storageID)}/${encodeURIComponent(o.name)}` })),
    ...(it.originals ?? []).slice(0, 1).map((o) => ({ ...o, type: 'original', href: `original/${encodeURIComponent(it.storageID)}` }))];
  const dlKey = JSON.stringify(files.map((f) => [f.name, f.size, it.generation]));
  if (row.dlKey !== dlKey) {
    row.dlKey = dlKey;
    row.dlList.replaceChildren(...files.map((f) => h('li', {},
      h('a', { href: api(f.href), download: f.name },
        h('span', { class: 'dl-type', text: f.type }), h('span', { class: 'dl-name', text: f.name }),
        h('span', { class: 'muted small', text: fmtBytes(f.size) })))));
  }
  row.dl.hidden = files.length === 0;
}

function metaText(it) {
  const parts = [fmtBytes(sizeOf(it)), `${fmtDuration(secondsSince(it.created))} ago`];
  if (it.startPath) parts.push(it.startPath);
  if (it.attempts > 1) parts.push(`${it.attempts} attempts`);
  return parts.join(' · ');
}

/** Ages move on their own: every few seconds the meta lines are redrawn. */
function tickAges() {
  for (const [key, row] of rows) {
    const it = items.get(key);
    if (it && row.meta) setText(row.meta, metaText(it));
  }
}

let bannerTimer = null;
function banner(msg) {
  const b = $('banner');
  setText(b, msg);
  b.hidden = false;
  clearTimeout(bannerTimer);
  bannerTimer = setTimeout(() => {
    b.hidden = true;
  }, 10000);
}

// ---- uploads ----

function options() {
  const args = {};
  if ($('opt-extra').checked) args.conversionCommandLine = ['*', '--output_stl', '--output_obj'];
  if ($('opt-wait').checked) args.waitUntilConversionDone = true;
  return args;
}

/** Sends a multipart upload with progress; the row shows it until the item exists. */
function send(path, form, args, name, size) {
  const key = `upload-${++uploadSeq}`;
  const xhr = new XMLHttpRequest();
  const u = { key, name, size, loaded: 0, total: size, xhr, error: null };
  uploads.set(key, u);
  const fail = (msg) => {
    u.error = msg;
    render();
  };
  xhr.upload.addEventListener('progress', (e) => {
    if (!e.lengthComputable) return;
    u.loaded = e.loaded;
    u.total = e.total;
    const row = rows.get(key);
    if (row) updateUploadRow(row, u);
  });
  xhr.addEventListener('load', () => {
    let body = null;
    try {
      body = JSON.parse(xhr.responseText);
    } catch {
      // handled below
    }
    if (xhr.status === 200 && body?.itemid) {
      uploads.delete(key);
      refreshItem(body.itemid);
      render();
    } else {
      fail(body?.ERROR ?? `the server answered ${xhr.status}`);
    }
  });
  xhr.addEventListener('error', () => fail('the upload did not reach the server'));
  xhr.addEventListener('abort', () => {
    uploads.delete(key);
    render();
  });
  xhr.open('POST', api(path));
  xhr.setRequestHeader('CS-API-Arg', argHeader(args));
  xhr.send(form);
  render();
}

function uploadOne(file, extra = {}) {
  const form = new FormData();
  form.append('file', file, file.name);
  send('upload', form, { ...options(), ...extra }, file.name, file.size);
}

/** A model and its companion files (materials, textures) as one item. */
function uploadMany(files, rootFile) {
  const form = new FormData();
  for (const f of files) form.append('files', f, f.name);
  send('uploadArray', form, { ...options(), rootFile }, rootFile, files.reduce((n, f) => n + f.size, 0));
}

const zipQueue = [];
let zipOpen = null;

/** What to do with files dropped or chosen together. */
export function plan(names) {
  const zips = names.filter(isZipName);
  const rest = names.filter((n) => !isZipName(n));
  const models = rest.filter((n) => MODEL_EXTENSIONS.includes(extension(n)));
  if (rest.length > 1 && models.length === 1) return { zips, together: { files: rest, root: models[0] }, single: [] };
  return { zips, together: null, single: rest };
}

function takeFiles(fileList) {
  const files = [...fileList];
  if (!files.length) return;
  const byName = new Map(files.map((f) => [f.name, f]));
  const p = plan(files.map((f) => f.name));
  if (p.together) uploadMany(p.together.files.map((n) => byName.get(n)), p.together.root);
  for (const n of p.single) uploadOne(byName.get(n));
  zipQueue.push(...p.zips.map((n) => byName.get(n)));
  if (!zipOpen) nextZip();
}

/** Reads the next queued ZIP's directory and offers its models as startPath. */
async function nextZip() {
  const file = zipQueue.shift();
  const form = $('zip');
  if (!file) {
    zipOpen = null;
    form.hidden = true;
    return;
  }
  zipOpen = file;
  let entries;
  try {
    entries = await readZipDirectory(file.size, blobReader(file));
  } catch (e) {
    banner(`${file.name}: ${e.message}`);
    nextZip();
    return;
  }
  const models = modelEntries(entries);
  if (models.length === 1) {
    uploadOne(file, { startPath: models[0].name });
    nextZip();
    return;
  }
  const files = entries.filter((e) => !e.dir);
  const choices = models.length ? models : files;
  setText($('zip-name'), file.name);
  setText($('zip-summary'), models.length
    ? `${files.length} files, ${models.length} models: which one is the model?`
    : `${files.length} files and no model this server knows: pick the file to convert`);
  $('startpath').replaceChildren(...choices.map((e) => h('option', { value: e.name, text: `${e.name}  (${fmtBytes(e.size)})` })));
  form.hidden = false;
  $('startpath').focus();
}

function setupUpload() {
  const input = $('file');
  input.addEventListener('change', () => {
    takeFiles(input.files);
    input.value = '';
  });
  const drop = $('drop');
  const over = (on) => (e) => {
    e.preventDefault();
    drop.classList.toggle('over', on);
  };
  drop.addEventListener('dragenter', over(true));
  drop.addEventListener('dragover', over(true));
  drop.addEventListener('dragleave', over(false));
  drop.addEventListener('drop', (e) => {
    over(false)(e);
    takeFiles(e.dataTransfer?.files ?? []);
  });
  // An open download menu closes on a click anywhere else.
  document.addEventListener('click', (e) => {
    for (const m of document.querySelectorAll('details.menu[open]')) {
      if (!m.contains(e.target)) m.open = false;
    }
  });
  // A file dropped beside the zone must not replace the page.
  window.addEventListener('dragover', (e) => e.preventDefault());
  window.addEventListener('drop', (e) => e.preventDefault());

  $('zip').addEventListener('submit', (e) => {
    e.preventDefault();
    if (zipOpen) uploadOne(zipOpen, { startPath: $('startpath').value });
    nextZip();
  });
  $('zip-cancel').addEventListener('click', () => nextZip());
}

// ---- delete ----

function confirmDelete(it) {
  if (!it) return;
  const dlg = $('confirm');
  setText($('confirm-text'), `${it.name} and all its outputs will be deleted from the server.`);
  dlg.returnValue = '';
  dlg.addEventListener('close', async () => {
    if (dlg.returnValue !== 'ok') return;
    try {
      await call('PUT', `delete/${encodeURIComponent(it.storageID)}`);
      items.delete(it.storageID);
      render();
    } catch (e) {
      banner(`Could not delete ${it.name}: ${e.message}`);
    }
  }, { once: true });
  dlg.showModal();
}

// ---- the 3D view ----

let view = null;
let viewToken = 0;
let partRows = new Map(); // part id → its entry in the parts list

function viewerMessage(msg) {
  const m = $('viewer-msg');
  setText(m, msg ?? '');
  m.hidden = !msg;
}

let viewing = null; // the item in the view

/**
 * The item's GLB through a streaming session: streamingSession with the
 * item as accessItems places a viewer instance that holds it, and the
 * reference viewer sends it over its WebSocket.
 */
async function streamedGLB(it) {
  const res = await fetch(api('streamingSession'), {
    headers: { 'CS-API-Arg': argHeader({ accessItems: [it.storageID], renderType: 'client' }) },
  });
  if (!res.ok) {
    throw new Error(res.status === 404 && !(await res.clone().json().catch(() => ({}))).ERROR
      ? 'this server has no streaming sessions' : await errorOf(res));
  }
  return fetchStreamedModel(streamURL(await res.json(), location.protocol), it.name);
}

async function openViewer(it, streamed = false) {
  if (!it) return;
  viewing = it;
  const dlg = $('viewer');
  const canvas = $('viewer-canvas');
  const token = ++viewToken;
  setText($('viewer-title'), it.name);
  setText($('viewer-stats'), '');
  $('viewer-parts').replaceChildren();
  canvas.dataset.state = 'loading';
  canvas.dataset.item = it.storageID;
  viewerMessage('Loading the model…');
  if (!dlg.open) dlg.showModal();
  try {
    if (!view) view = new GLView(canvas, { onHover: hoverPart });
    view.resize();
    let bytes;
    if (streamed) {
      bytes = await streamedGLB(it);
    } else {
      const res = await fetch(api(`file/${encodeURIComponent(it.storageID)}/glb`));
      if (!res.ok) throw new Error(await errorOf(res));
      bytes = await res.arrayBuffer();
    }
    if (token !== viewToken) return;
    const model = readModel(bytes);
    view.setModel(model);
    partsList(model, it.name);
    setText($('viewer-stats'), `${model.parts.length} part${model.parts.length === 1 ? '' : 's'} · ` +
      `${model.stats.triangles.toLocaleString('en-US')} triangles · ${fmtBytes(bytes.byteLength)}` +
      (streamed ? ' · through a streaming session' : ''));
    canvas.dataset.source = streamed ? 'stream' : 'file';
    viewerMessage(model.parts.length ? null : 'The model has no geometry to show.');
  } catch (e) {
    if (token !== viewToken) return;
    canvas.dataset.state = 'error';
    viewerMessage(`Cannot show ${it.name}: ${e.message}`);
  }
}

/**
 * The name to show for a node: converters name the root after the file
 * they read, which on a farm is a stored name ("3f9c…e1.obj"), not the
 * user's; the item's name stands in for it.
 */
export function shownName(name, itemName) {
  return /^[0-9a-f]{12,}(\.[A-Za-z0-9]+)?$/.test(name) ? itemName : name;
}

function partsList(model, itemName) {
  partRows = new Map();
  shownPath = (part) => part.path.map((n, i) => (i === 0 ? shownName(n, itemName) : n));
  const build = (nodes, depth) => h('ul', {}, ...nodes.map((n) => {
    const text = depth === 0 ? shownName(n.name, itemName) : n.name;
    const label = h('span', { class: n.part ? 'part' : 'group', text, title: text });
    if (n.part) {
      partRows.set(n.part.id, label);
      label.addEventListener('mouseenter', () => view?.highlight(n.part));
      label.addEventListener('mouseleave', () => view?.highlight(null));
    }
    return h('li', {}, label, n.children.length ? build(n.children, depth + 1) : null);
  }));
  $('viewer-parts').replaceChildren(model.tree.length ? build(model.tree, 0) : h('p', { class: 'muted small', text: 'no parts' }));
}

let hoverRow = null;
let shownPath = (part) => part.path;
function hoverPart(part, e) {
  const tip = $('viewer-tip');
  hoverRow?.classList.remove('hover');
  hoverRow = part ? partRows.get(part.id) ?? null : null;
  if (hoverRow) {
    hoverRow.classList.add('hover');
    hoverRow.scrollIntoView({ block: 'nearest' });
  }
  if (!part || !e) {
    tip.hidden = true;
    return;
  }
  setText(tip, shownPath(part).join(' › '));
  const stage = tip.parentElement.getBoundingClientRect();
  tip.style.left = `${Math.min(e.clientX - stage.left + 14, stage.width - 20)}px`;
  tip.style.top = `${e.clientY - stage.top + 14}px`;
  tip.hidden = false;
}

function setupViewer() {
  const dlg = $('viewer');
  $('viewer-close').addEventListener('click', () => dlg.close());
  $('viewer-fit').addEventListener('click', () => view?.fit());
  $('viewer-stream').addEventListener('click', () => openViewer(viewing, true));
  const toggle = $('viewer-parts-toggle');
  toggle.addEventListener('click', () => {
    const parts = $('viewer-parts');
    parts.hidden = !parts.hidden;
    toggle.setAttribute('aria-expanded', String(!parts.hidden));
  });
  dlg.addEventListener('close', () => {
    viewToken++;
    view?.clearBuffers();
    view?.render();
    $('viewer-tip').hidden = true;
  });
}

// ---- start ----

function start() {
  setupUpload();
  setupViewer();
  call('GET', 'info').then((info) => setText($('server'), `${info.server ?? 'drover'} ${info.version ?? ''}`.trim()))
    .catch(() => {});
  loadAll();
  followEvents();
  setInterval(tickAges, 5000);
}

if (typeof document !== 'undefined') start();
