// streamclient.js — fetches a model through a streaming session from
// drover's reference viewer instance (worker/viewer): the page opens
// ws://serverurl:port/?token=SESSIONID, lists the session's models, asks
// for one and gets its GLB as binary frames between a "model" and an "end"
// frame. Pure: the WebSocket class is passed in (Node runs its tests).

/** A streaming session that did not deliver its model. */
export class StreamError extends Error {
  constructor(message) {
    super(message);
    this.name = 'StreamError';
  }
}

/**
 * The viewer's WebSocket URL from streamingSession's answer
 * {serverurl, port, sessionid}; wss when the page itself is https.
 */
export function streamURL(reply, pageProtocol = 'http:') {
  if (!reply || typeof reply.serverurl !== 'string' || !reply.serverurl || !Number.isInteger(reply.port)
    || typeof reply.sessionid !== 'string' || !reply.sessionid) {
    throw new StreamError('the streaming session answer lacks serverurl, port or sessionid');
  }
  const host = reply.serverurl.includes(':') && !reply.serverurl.startsWith('[') ? `[${reply.serverurl}]` : reply.serverurl;
  const scheme = pageProtocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${host}:${reply.port}/?token=${encodeURIComponent(reply.sessionid)}`;
}

/**
 * Opens url, asks for the model called name (an item's name: the session
 * holds "<name>.glb") and resolves with its bytes as an ArrayBuffer.
 */
export function fetchStreamedModel(url, name, { WebSocketImpl = globalThis.WebSocket, timeoutMs = 120000, maxBytes = 1 << 30 } = {}) {
  return new Promise((resolve, reject) => {
    let ws;
    try {
      ws = new WebSocketImpl(url);
    } catch (e) {
      reject(new StreamError(`cannot open the stream: ${e.message}`));
      return;
    }
    ws.binaryType = 'arraybuffer';
    let buf = null;
    let got = 0;
    let done = false;
    const finish = (err, value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try {
        ws.close();
      } catch {
        // closing twice is harmless
      }
      if (err) reject(err);
      else resolve(value);
    };
    const timer = setTimeout(() => finish(new StreamError('the streaming session did not send the model in time')), timeoutMs);
    ws.onopen = () => ws.send(JSON.stringify({ type: 'list' }));
    ws.onerror = () => finish(new StreamError('the streaming session could not be reached'));
    ws.onclose = () => finish(new StreamError('the stream closed before the model arrived'));
    ws.onmessage = (e) => {
      if (typeof e.data !== 'string') {
        const chunk = new Uint8Array(e.data);
        if (!buf) return finish(new StreamError('the stream sent model bytes before saying which model'));
        if (got + chunk.length > buf.length) return finish(new StreamError('the stream sent more bytes than the model has'));
        buf.set(chunk, got);
        got += chunk.length;
        return undefined;
      }
      let f;
      try {
        f = JSON.parse(e.data);
      } catch {
        return finish(new StreamError('the stream sent a frame that is not JSON'));
      }
      switch (f?.type) {
        case 'list': {
          const models = Array.isArray(f.models) ? f.models.filter((m) => typeof m === 'string') : [];
          if (!models.includes(name)) {
            return finish(new StreamError(`the session has no model "${name}" (it has ${models.length ? models.join(', ') : 'none'})`));
          }
          ws.send(JSON.stringify({ type: 'get', name }));
          return undefined;
        }
        case 'model':
          if (!Number.isSafeInteger(f.size) || f.size < 0 || f.size > maxBytes) {
            return finish(new StreamError('the stream announced a model of an impossible size'));
          }
          buf = new Uint8Array(f.size);
          got = 0;
          return undefined;
        case 'end':
          if (!buf || got !== buf.length) return finish(new StreamError(`the stream ended the model after ${got} of ${buf?.length ?? 0} bytes`));
          return finish(null, buf.buffer);
        case 'error':
          return finish(new StreamError(`the viewer instance says: ${String(f.error ?? 'error')}`));
        default:
          return undefined; // frames of later versions
      }
    };
  });
}
