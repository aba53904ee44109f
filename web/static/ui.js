// ui.js — small DOM and formatting helpers shared by the pages.
// Everything is built with DOM APIs and textContent: no data ever goes
// through innerHTML.

/**
 * Creates an element. attrs: class, text (textContent), and any attribute
 * (set with setAttribute; false/null skip it). children: nodes or strings
 * (as text nodes); null and false are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c == null || c === false) continue;
    el.append(typeof c === 'string' || typeof c === 'number' ? String(c) : c);
  }
  return el;
}

/** The URL of a manager endpoint: a sibling of the UI directory (/ui/ → /status). */
export function apiURL(name, base = document.baseURI) {
  const u = new URL(`../${name}`, base);
  const token = pageToken();
  if (token) u.searchParams.set('access_token', token);
  return u.toString();
}

/**
 * The credential the pages send, if any: a JWT or API key given once as
 * #access_token=… in the page's address (then removed from it) and kept
 * for the tab. EventSource cannot set headers, so it goes as the
 * access_token query parameter, which the manager scrubs from its logs.
 */
export function pageToken() {
  try {
    const m = /(?:^#|&)access_token=([^&]+)/.exec(location.hash);
    if (m) {
      sessionStorage.setItem('drover.token', decodeURIComponent(m[1]));
      history.replaceState(null, '', location.pathname + location.search);
    }
    return sessionStorage.getItem('drover.token') || '';
  } catch {
    return ''; // no DOM (tests under Node), or storage is off
  }
}

/** Sets an element's text only when it changed, so that selections survive polling. */
export function setText(el, text) {
  const s = text == null ? '' : String(text);
  if (el.textContent !== s) el.textContent = s;
}

/** 0.4 s, 12 s, 4m 05s, 2h 03m, 3d 4h. */
export function fmtDuration(seconds) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) return '–';
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  const hr = Math.floor(m / 60);
  if (hr < 24) return `${hr}h ${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(hr / 24)}d ${hr % 24}h`;
}

/** Seconds since an RFC 3339 time, or NaN. */
export function secondsSince(rfc3339, now = Date.now()) {
  const t = Date.parse(rfc3339);
  return Number.isNaN(t) ? NaN : Math.max(0, (now - t) / 1000);
}

/** 512 B, 64.0 KiB, 1.5 MiB. */
export function fmtBytes(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '–';
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = -1;
  do {
    v /= 1024;
    i++;
  } while (v >= 1024 && i < units.length - 1);
  return `${v.toFixed(1)} ${units[i]}`;
}

/** 12.5%, 90%. */
export function fmtPercent(ratio) {
  if (typeof ratio !== 'number' || !Number.isFinite(ratio)) return '–';
  const p = ratio * 100;
  return `${Number.isInteger(p) ? p : p.toFixed(1)}%`;
}

/** 1.42 ms, 12.3 ms, 1.20 s. */
export function fmtMillis(ms) {
  if (ms < 10) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${ms.toFixed(1)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

/** A number with thousands separators, or – for anything else. */
export function fmtInt(n) {
  return typeof n === 'number' && Number.isFinite(n) ? n.toLocaleString('en-US') : '–';
}
