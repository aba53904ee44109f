// Tests of static/drover.js, run by `node --test` (web_test.go runs them
// when node is installed). A fake WebSocket plays the manager.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DroverSession, DroverError, TaskTracker, buildURL, defaultURL, parseFrame,
  errorFromFrame, shouldResume, closeErrorCode, backoffDelay, eventName, taskFrame, tokenProtocols,
} from '../static/drover.js';

// FakeSocket records what the client sends and lets a test play the server.
class FakeSocket {
  static all = [];
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.sent = [];
    this.readyState = 0;
    this.closedWith = null;
    FakeSocket.all.push(this);
    queueMicrotask(() => {
      this.readyState = 1;
      this.onopen?.({});
    });
  }
  get params() {
    return new URL(this.url).searchParams;
  }
  send(text) {
    if (this.readyState !== 1) throw new Error('send on a socket that is not open');
    this.sent.push(JSON.parse(text));
  }
  close(code = 1005, reason = '') {
    if (this.readyState >= 2) return;
    this.closedWith = code;
    this.readyState = 2;
    setTimeout(() => this._closed(code, reason, true), 0);
  }
  // Server side.
  recv(frame) {
    this.onmessage?.({ data: typeof frame === 'string' ? frame : JSON.stringify(frame) });
  }
  recvBinary(bytes) {
    this.onmessage?.({ data: new Uint8Array(bytes).buffer });
  }
  drop(code = 1006, reason = '') {
    this.readyState = 2;
    this.onerror?.({});
    this._closed(code, reason, code !== 1006);
  }
  _closed(code, reason, wasClean) {
    this.readyState = 3;
    this.onclose?.({ code, reason, wasClean });
  }
}

function latest() {
  return FakeSocket.all[FakeSocket.all.length - 1];
}

const tick = () => new Promise((r) => setTimeout(r, 0));

async function until(cond, what) {
  for (let i = 0; i < 200; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function welcome(sock, extra = {}) {
  sock.recv({ type: 'welcome', session: 's1', instance: 'default-ab12', resume: 'tok1', ...extra });
}

async function openSession(opts = {}) {
  const p = DroverSession.open('ws://mgr.test/ws', { WebSocket: FakeSocket, backoff: { base: 1, max: 2 }, ...opts });
  const sock = latest();
  welcome(sock);
  return { s: await p, sock };
}

function collect(target, type) {
  const got = [];
  target.addEventListener(type, (e) => got.push(e.detail));
  return got;
}

test('buildURL', () => {
  const u = new URL(buildURL('http://h:8080/ws', { pool: 'cad', wait: false, resume: 'r t', labels: { team: 'a&b' } }));
  assert.equal(u.protocol, 'ws:');
  assert.equal(u.searchParams.get('pool'), 'cad');
  assert.equal(u.searchParams.get('wait'), 'false');
  assert.equal(u.searchParams.get('resume'), 'r t');
  assert.equal(u.searchParams.get('label.team'), 'a&b');
  assert.equal(new URL(buildURL('https://h/ws', {})).protocol, 'wss:');
  assert.equal(new URL(buildURL('ws://h/ws?resume=old', {})).searchParams.has('resume'), false);
  assert.equal(new URL(buildURL('ws://h/ws', { wait: true })).searchParams.has('wait'), false);
  assert.throws(() => buildURL('ftp://h/ws', {}), (e) => e.code === 'bad_url');
});

test('defaultURL is the ws endpoint next to the UI directory', () => {
  assert.equal(defaultURL('http://h:1/ui/'), 'ws://h:1/ws');
  assert.equal(defaultURL('http://h:1/ui/try.html?x=1#y'), 'ws://h:1/ws');
  assert.equal(defaultURL('https://h/prefix/ui/'), 'wss://h/prefix/ws');
  assert.equal(defaultURL('http://h/'), 'ws://h/ws');
});

test('parseFrame', () => {
  assert.deepEqual(parseFrame('{"type":"done","id":3}'), { type: 'done', id: 3 });
  assert.equal(parseFrame('{"type":"future","x":1}').type, 'future');
  for (const bad of ['', 'nope', '[]', 'null', '1', '{}', '{"type":1}', '{"type":"result"}',
    '{"type":"done","id":{}}', '{"type":"welcome"}', '{"type":"event"}']) {
    assert.throws(() => parseFrame(bad), (e) => e instanceof DroverError && e.code === 'bad_frame', bad);
  }
});

test('errorFromFrame', () => {
  const e = errorFromFrame({ type: 'error', id: 4, error: { code: 'task_failed', message: 'boom' } });
  assert.equal(e.code, 'task_failed');
  assert.equal(e.message, 'boom');
  assert.equal(e.taskId, 4);
  assert.equal(errorFromFrame({ type: 'error' }).code, 'internal');
});

test('close codes', () => {
  assert.equal(shouldResume(1006), true);
  assert.equal(shouldResume(1001), true);
  assert.equal(shouldResume(1000), false);
  assert.equal(shouldResume(1013), false);
  assert.equal(shouldResume(1008), false);
  assert.equal(closeErrorCode(1013), 'no_capacity');
  assert.equal(closeErrorCode(1006), 'disconnected');
  assert.equal(closeErrorCode(1000), 'closed');
  assert.equal(closeErrorCode(1009), 'too_large');
});

test('backoffDelay', () => {
  const b = { base: 100, max: 1000 };
  assert.deepEqual([1, 2, 3, 4, 5, 9].map((n) => backoffDelay(n, b, () => 0)), [100, 200, 400, 800, 1000, 1000]);
  assert.equal(backoffDelay(1, b, () => 1), 80);
});

test('eventName', () => {
  assert.equal(eventName('instance_lost'), 'instance_lost');
  assert.equal(eventName('close'), null);
  assert.equal(eventName('Bad Name'), null);
});

test('taskFrame', () => {
  assert.equal(taskFrame(1, { cmd: 'echo' }), '{"type":"task","id":1,"data":{"cmd":"echo"}}');
});

test('TaskTracker matches by id and gives binary frames to the oldest task', async () => {
  const tr = new TaskTracker();
  const seen = [];
  const a = tr.add(tr.nextID(), { onBinary: (b, id) => seen.push(['bin', id, b.byteLength]) });
  const b = tr.add(tr.nextID(), { onResult: (d, id) => seen.push(['res', id, d]) });
  assert.equal(tr.size, 2);
  assert.ok(tr.binary(new ArrayBuffer(3)));
  assert.ok(tr.result('2', 'x')); // a server may echo the id as a string
  assert.ok(!tr.result(9, 'y'));
  assert.ok(tr.done(1));
  assert.ok(tr.binary(new ArrayBuffer(5)));
  assert.ok(tr.fail(2, new DroverError('task_failed', 'no')));
  assert.ok(!tr.binary(new ArrayBuffer(1)));
  assert.equal((await a)[0].byteLength, 3);
  await assert.rejects(b, (e) => e.code === 'task_failed' && e.taskId === 2 && e.results.length === 2);
  assert.deepEqual(seen, [['bin', 1, 3], ['res', 2, 'x']]);
});

test('open resolves on welcome after queued frames', async () => {
  const p = DroverSession.open('ws://mgr.test/ws', { WebSocket: FakeSocket, pool: 'cad', labels: { a: 'b' } });
  const sock = latest();
  assert.equal(sock.params.get('pool'), 'cad');
  assert.equal(sock.params.get('label.a'), 'b');
  sock.recv({ type: 'queued', position: 2 });
  sock.recv({ type: 'queued', position: 1 });
  welcome(sock);
  const s = await p;
  assert.equal(s.session, 's1');
  assert.equal(s.instance, 'default-ab12');
  assert.equal(s.resumeToken, 'tok1');
  assert.equal(s.state, 'open');
});

test('queued events are dispatched', async () => {
  const s = new DroverSession('ws://mgr.test/ws', { WebSocket: FakeSocket });
  const q = collect(s, 'queued');
  const p = s.connect();
  assert.equal(s.connect(), p);
  latest().recv({ type: 'queued', position: 3 });
  assert.equal(s.state, 'queued');
  assert.equal(s.position, 3);
  welcome(latest());
  await p;
  assert.deepEqual(q, [{ position: 3 }]);
});

test('no capacity: error frame then 1013', async () => {
  const p = DroverSession.open('ws://mgr.test/ws', { WebSocket: FakeSocket, wait: false });
  const sock = latest();
  assert.equal(sock.params.get('wait'), 'false');
  sock.recv({ type: 'error', error: { code: 'no_capacity', message: 'all busy' } });
  sock.drop(1013);
  await assert.rejects(p, (e) => e.code === 'no_capacity' && e.message === 'all busy');
});

test('listeners from options see the open', async () => {
  const q = [];
  const p = DroverSession.open('ws://mgr.test/ws', { WebSocket: FakeSocket, on: { queued: (e) => q.push(e.detail.position) } });
  latest().recv({ type: 'queued', position: 5 });
  welcome(latest());
  await p;
  assert.deepEqual(q, [5]);
});

test('no capacity: bare 1013', async () => {
  const p = DroverSession.open('ws://mgr.test/ws', { WebSocket: FakeSocket });
  latest().drop(1013, 'try again later');
  await assert.rejects(p, (e) => e.code === 'no_capacity' && e.closeCode === 1013);
});

test('execute collects results, binary frames and errors', async () => {
  const { s, sock } = await openSession();
  const seen = [];
  const t1 = s.execute({ cmd: 'results', n: 2 }, { onResult: (d) => seen.push(d) });
  const t2 = s.execute({ cmd: 'stream', bytes: 4 }, { onBinary: (b) => seen.push(b.byteLength) });
  const t3 = s.execute({ cmd: 'fail' });
  assert.deepEqual(sock.sent.map((f) => f.id), [1, 2, 3]);
  assert.deepEqual(sock.sent[0], { type: 'task', id: 1, data: { cmd: 'results', n: 2 } });
  sock.recv({ type: 'result', id: 1, data: 0 });
  sock.recv({ type: 'result', id: 1, data: 1 });
  sock.recv({ type: 'done', id: 1 });
  sock.recvBinary([1, 2, 3, 4]); // task 1 is done: belongs to task 2
  sock.recv({ type: 'done', id: 2 });
  sock.recv({ type: 'error', id: 3, error: { code: 'task_failed', message: 'asked to fail' } });
  assert.deepEqual(await t1, [0, 1]);
  const r2 = await t2;
  assert.equal(r2.length, 1);
  assert.equal(r2[0].byteLength, 4);
  await assert.rejects(t3, (e) => e.code === 'task_failed' && e.taskId === 3);
  assert.deepEqual(seen, [0, 1, 4]);
});

test('stray frames and session errors are dispatched as error', async () => {
  const { s, sock } = await openSession();
  const errs = collect(s, 'error');
  sock.recv({ type: 'done', id: 42 });
  sock.recv('not json');
  sock.recv({ type: 'error', error: { code: 'bad_request', message: 'what' } });
  sock.recvBinary([1]);
  assert.deepEqual(errs.map((e) => e.code), ['bad_frame', 'bad_frame', 'bad_request', 'bad_frame']);
  assert.equal(s.state, 'open');
});

test('events; instance_lost rejects pending tasks and ends the session', async () => {
  const { s, sock } = await openSession();
  const events = collect(s, 'event');
  const draining = collect(s, 'draining');
  const lost = collect(s, 'instance_lost');
  const closes = collect(s, 'close');
  const t = assert.rejects(s.execute({ cmd: 'sleep', ms: 1000 }), (e) => e.code === 'instance_lost');
  sock.recv({ type: 'event', event: 'draining' });
  sock.recv({ type: 'event', event: 'instance_lost', message: 'farm f1 is dead' });
  await t;
  assert.deepEqual(events.map((e) => e.event), ['draining', 'instance_lost']);
  assert.equal(draining.length, 1);
  assert.equal(lost.length, 1);
  assert.equal(s.state, 'closed');
  assert.equal(closes.length, 1);
  assert.equal(closes[0].error.code, 'instance_lost');
  assert.equal(sock.closedWith, 1000);
  await assert.rejects(s.execute({}), (e) => e.code === 'closed');
});

test('logout sends logout then closes with 1000', async () => {
  const { s, sock } = await openSession();
  const t = assert.rejects(s.execute({ cmd: 'sleep', ms: 1000 }), (e) => e.code === 'closed');
  const closes = collect(s, 'close');
  await s.logout();
  assert.deepEqual(sock.sent.at(-1), { type: 'logout' });
  assert.equal(sock.closedWith, 1000);
  assert.equal(s.state, 'closed');
  await t;
  assert.equal(closes.length, 1);
  assert.equal(closes[0].error, null);
  await s.logout(); // idempotent
  assert.equal(FakeSocket.all.filter((x) => x === sock).length, 1);
});

test('a drop is resumed with the token; tasks in flight are rejected', async () => {
  const { s, sock } = await openSession();
  const reconnecting = collect(s, 'reconnecting');
  const resumed = collect(s, 'resumed');
  const t = assert.rejects(s.execute({ cmd: 'sleep', ms: 1000 }), (e) => e.code === 'disconnected');
  sock.drop(1006);
  await t;
  assert.equal(s.state, 'reconnecting');
  await assert.rejects(s.execute({}), (e) => e.code === 'disconnected');
  await until(() => latest() !== sock, 'reconnect');
  const again = latest();
  assert.equal(again.params.get('resume'), 'tok1');
  assert.equal(again.sent.length, 0, 'nothing is re-sent');
  welcome(again, { resume: 'tok2' });
  await until(() => s.state === 'open', 'open');
  assert.equal(s.resumeToken, 'tok2');
  assert.equal(reconnecting.length, 1);
  assert.equal(resumed.length, 1);
  const t2 = s.execute({ cmd: 'pid' });
  assert.equal(again.sent[0].id, 2, 'ids keep counting');
  again.recv({ type: 'result', id: 2, data: 1234 });
  again.recv({ type: 'done', id: 2 });
  assert.deepEqual(await t2, [1234]);
  await s.close();
});

test('resume gives up after the retries', async () => {
  const { s, sock } = await openSession({ retries: 3 });
  const closes = collect(s, 'close');
  const before = FakeSocket.all.length;
  sock.drop(1006);
  for (let i = 0; i < 3; i++) {
    await until(() => FakeSocket.all.length === before + i + 1, `attempt ${i + 1}`);
    latest().drop(1006);
  }
  await until(() => s.state === 'closed', 'closed');
  assert.equal(FakeSocket.all.length, before + 3);
  assert.equal(closes[0].error.code, 'disconnected');
});

test('resume stops at a definite answer', async () => {
  const { s, sock } = await openSession();
  const closes = collect(s, 'close');
  sock.drop(1001);
  await until(() => latest() !== sock, 'reconnect');
  latest().recv({ type: 'error', error: { code: 'not_found', message: 'session expired' } });
  latest().drop(1008);
  await until(() => s.state === 'closed', 'closed');
  assert.equal(closes[0].error.code, 'not_found');
});

test('a clean close by the server is not resumed', async () => {
  const { s, sock } = await openSession();
  const closes = collect(s, 'close');
  const n = FakeSocket.all.length;
  sock.drop(1000);
  await tick();
  assert.equal(s.state, 'closed');
  assert.equal(closes[0].error, null);
  assert.equal(FakeSocket.all.length, n);
});

test('close while reconnecting ends the session', async () => {
  const { s, sock } = await openSession({ backoff: { base: 10000, max: 10000 } });
  sock.drop(1006);
  assert.equal(s.state, 'reconnecting');
  await s.close();
  assert.equal(s.state, 'closed');
});

test('abort while queued', async () => {
  const ac = new AbortController();
  const p = DroverSession.open('ws://mgr.test/ws', { WebSocket: FakeSocket, signal: ac.signal });
  const sock = latest();
  sock.recv({ type: 'queued', position: 1 });
  ac.abort();
  await assert.rejects(p, (e) => e.code === 'aborted');
  assert.equal(sock.closedWith, 1000);
});

test('bad URL rejects open', async () => {
  await assert.rejects(DroverSession.open('not a url', { WebSocket: FakeSocket }), (e) => e.code === 'bad_url');
});

test('a token goes as a subprotocol beside drover, never in the URL', async () => {
  const p = DroverSession.open('ws://m/ws', { WebSocket: FakeSocket, token: 'tok.en' });
  await tick();
  const ws = latest();
  assert.deepEqual(ws.protocols, ['drover', 'bearer.tok.en']);
  assert.deepEqual(tokenProtocols('k'), ['drover', 'bearer.k']);
  assert.ok(!ws.url.includes('tok.en'));
  ws.recv({ type: 'welcome', session: 's', instance: 'i', resume: 'r' });
  const s = await p;
  await s.close();
});
