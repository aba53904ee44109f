// Tests of the conversion page's pure parts: static/glb.js (the GLB reader
// of the 3D view), static/zipdir.js (the ZIP directory reader behind the
// startPath choice) and static/mat4.js. Run by `node --test`; web_test.go
// runs them, and passes ZIPs written by Go's archive/zip in DROVER_ZIPS.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readModel, parseGLB, GLBError, MODE, toListMode, computeNormals, weldByPosition } from '../static/glb.js';
import { readZipDirectory, modelEntries, extension, isZipName, ZipError } from '../static/zipdir.js';
import { identity, multiply, fromTRS, transformPoint, normalMatrix, lookAt, perspective } from '../static/mat4.js';

// ---- a GLB writer for the tests ----

function pad4(bytes, fill) {
  const n = (4 - (bytes.length % 4)) % 4;
  const out = new Uint8Array(bytes.length + n);
  out.set(bytes);
  out.fill(fill, bytes.length);
  return out;
}

/** A GLB of json (an object) and bin (bytes or null). */
function glb(json, bin = null) {
  const j = pad4(new TextEncoder().encode(JSON.stringify(json)), 0x20);
  const b = bin ? pad4(bin, 0) : null;
  const total = 12 + 8 + j.length + (b ? 8 + b.length : 0);
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, 0x46546c67, true);
  dv.setUint32(4, 2, true);
  dv.setUint32(8, total, true);
  dv.setUint32(12, j.length, true);
  dv.setUint32(16, 0x4e4f534a, true);
  out.set(j, 20);
  if (b) {
    dv.setUint32(20 + j.length, b.length, true);
    dv.setUint32(24 + j.length, 0x004e4942, true);
    out.set(b, 28 + j.length);
  }
  return out;
}

/** Concatenates typed arrays into a BIN chunk, each at a 4-byte boundary; returns the bytes and offsets. */
function binOf(...arrays) {
  const offsets = [];
  let n = 0;
  for (const a of arrays) {
    offsets.push(n);
    n += Math.ceil(a.byteLength / 4) * 4;
  }
  const out = new Uint8Array(n);
  arrays.forEach((a, i) => out.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), offsets[i]));
  return { bytes: out, offsets };
}

// A unit triangle, indexed, and an assembly: a root "Assembly" with two
// parts, "Left" (translated, red) and "Right" (a matrix, blue), sharing it.
function assembly() {
  const pos = new Float32Array([0, 0, 0, 1, 0, 0, 0, 1, 0]);
  const idx = new Uint16Array([0, 1, 2]);
  const { bytes, offsets } = binOf(pos, idx);
  const json = {
    asset: { version: '2.0' },
    scene: 0,
    scenes: [{ nodes: [0] }],
    nodes: [
      { name: 'Assembly', children: [1, 2, 3] },
      { name: 'Left', mesh: 0, translation: [10, 0, 0], material: 99 },
      { name: 'Right', mesh: 1, matrix: [2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 2, 0, 0, 0, 5, 1] },
      { children: [4] }, // unnamed group: its child moves up
      { name: 'Deep', mesh: 0, rotation: [0, 0, Math.SQRT1_2, Math.SQRT1_2] },
    ],
    meshes: [
      { name: 'tri', primitives: [{ attributes: { POSITION: 0 }, indices: 1, material: 0 }] },
      { primitives: [{ attributes: { POSITION: 0 }, indices: 1, material: 1 }] },
    ],
    materials: [
      { name: 'red', pbrMetallicRoughness: { baseColorFactor: [1, 0, 0, 1] } },
      { name: 'blue', pbrMetallicRoughness: { baseColorFactor: [0, 0, 1, 0.5] } },
    ],
    accessors: [
      { bufferView: 0, componentType: 5126, count: 3, type: 'VEC3', min: [0, 0, 0], max: [1, 1, 0] },
      { bufferView: 1, componentType: 5123, count: 3, type: 'SCALAR' },
    ],
    bufferViews: [
      { buffer: 0, byteOffset: offsets[0], byteLength: pos.byteLength },
      { buffer: 0, byteOffset: offsets[1], byteLength: idx.byteLength },
    ],
    buffers: [{ byteLength: bytes.length }],
  };
  return { json, bin: bytes };
}

const close = (a, b, eps = 1e-5) => {
  assert.equal(a.length, b.length, `${a} vs ${b}`);
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) < eps, `[${i}] ${a[i]} vs ${b[i]} in ${a} vs ${b}`);
};

// ---- glb.js ----

test('an assembly reads into parts with world matrices, names and colours', () => {
  const { json, bin } = assembly();
  const m = readModel(glb(json, bin));
  assert.deepEqual(m.parts.map((p) => p.name), ['Left', 'Right', 'Deep']);
  assert.deepEqual(m.parts.map((p) => p.id), [1, 2, 3]);
  assert.deepEqual(m.parts[2].path, ['Assembly', 'node 3', 'Deep']);
  close(transformPoint(m.parts[0].world, [1, 0, 0]), [11, 0, 0]);
  close(transformPoint(m.parts[1].world, [1, 1, 0]), [2, 2, 5]);
  close(transformPoint(m.parts[2].world, [1, 0, 0]), [0, 1, 0]); // 90° about Z
  assert.deepEqual(m.parts[0].mesh.primitives[0].material.color, [1, 0, 0, 1]);
  assert.deepEqual(m.parts[1].mesh.primitives[0].material.color, [0, 0, 1, 0.5]);
  assert.equal(m.parts[0].mesh, m.parts[2].mesh, 'a shared mesh is read once');
  assert.equal(m.meshes.length, 2);
  // The tree: the unnamed group is gone, its child is the assembly's.
  assert.equal(m.tree.length, 1);
  assert.equal(m.tree[0].name, 'Assembly');
  assert.deepEqual(m.tree[0].children.map((c) => c.name), ['Left', 'Right', 'Deep']);
  assert.equal(m.tree[0].children[2].part, m.parts[2]);
  close(m.bounds.min, [-1, 0, 0]);
  close(m.bounds.max, [11, 2, 5]);
  assert.deepEqual(m.stats, { vertices: 9, triangles: 3 });
  const p = m.parts[0].mesh.primitives[0];
  assert.equal(p.mode, MODE.TRIANGLES);
  assert.equal(p.indices, null, 'normals were computed: one vertex per corner');
  close(p.positions, [0, 0, 0, 1, 0, 0, 0, 1, 0]);
  close(p.normals, [0, 0, 1, 0, 0, 1, 0, 0, 1], 1e-6); // computed: the file has none
});

test('interleaved, normalized and sparse accessors, and a data: URI buffer', () => {
  // Two vertices interleaved as [x y z | nx ny nz] in a 24-byte stride,
  // then a third position from a sparse substitution, and normalized
  // unsigned-byte normals.
  const inter = new Float32Array([0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1]);
  const sparseIdx = new Uint8Array([2, 0, 0, 0]);
  const sparseVal = new Float32Array([0, 3, 0]);
  const normU8 = new Uint8Array([0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255, 0]);
  const { bytes, offsets } = binOf(inter, sparseIdx, sparseVal, normU8);
  const b64 = Buffer.from(bytes).toString('base64');
  const json = {
    asset: { version: '2.0' },
    nodes: [{ name: 'p', mesh: 0 }],
    meshes: [{ primitives: [{ attributes: { POSITION: 0, NORMAL: 1 } }] }],
    accessors: [
      { bufferView: 0, componentType: 5126, count: 3, type: 'VEC3',
        sparse: { count: 1, indices: { bufferView: 1, componentType: 5121 }, values: { bufferView: 2 } } },
      { bufferView: 3, componentType: 5121, normalized: true, count: 3, type: 'VEC3', byteOffset: 0 },
    ],
    bufferViews: [
      { buffer: 0, byteOffset: offsets[0], byteLength: inter.byteLength, byteStride: 24 },
      { buffer: 0, byteOffset: offsets[1], byteLength: 1 },
      { buffer: 0, byteOffset: offsets[2], byteLength: 12 },
      { buffer: 0, byteOffset: offsets[3], byteLength: 12, byteStride: 4 },
    ],
    buffers: [{ byteLength: bytes.length, uri: `data:application/octet-stream;base64,${b64}` }],
  };
  const m = readModel(glb(json)); // no BIN chunk: the data: URI carries it
  const p = m.parts[0].mesh.primitives[0];
  close(p.positions, [0, 0, 0, 2, 0, 0, 0, 3, 0]);
  close(p.normals, [0, 0, 1, 0, 0, 1, 0, 0, 1]);
  assert.equal(p.indices, null);
  assert.deepEqual(m.stats, { vertices: 3, triangles: 1 });
  assert.deepEqual(m.tree.map((t) => t.name), ['p']);
});

test('a model without scenes takes its parentless nodes as roots', () => {
  const { json, bin } = assembly();
  delete json.scene;
  delete json.scenes;
  const m = readModel(glb(json, bin));
  assert.deepEqual(m.parts.map((p) => p.name), ['Left', 'Right', 'Deep']);
});

test('strips, fans and loops become lists', () => {
  assert.deepEqual([...toListMode(MODE.TRIANGLE_STRIP, null, 5).indices], [0, 1, 2, 2, 1, 3, 2, 3, 4]);
  assert.deepEqual([...toListMode(MODE.TRIANGLE_FAN, new Uint16Array([7, 8, 9, 10]), 11).indices], [7, 8, 9, 7, 9, 10]);
  assert.deepEqual([...toListMode(MODE.LINE_LOOP, null, 3).indices], [0, 1, 1, 2, 2, 0]);
  assert.deepEqual([...toListMode(MODE.LINE_STRIP, null, 3).indices], [0, 1, 1, 2]);
  assert.equal(toListMode(MODE.TRIANGLE_STRIP, null, 5).mode, MODE.TRIANGLES);
  assert.equal(toListMode(MODE.LINE_LOOP, null, 3).mode, MODE.LINES);
  const idx = new Uint32Array([0, 1, 2]);
  assert.equal(toListMode(MODE.TRIANGLES, idx, 3).indices, idx);
});

test('computed normals: smooth across shallow angles, creased across sharp ones', () => {
  // A fold along the edge 0-1: two faces at 30° (smoothed), and one at 90°
  // to the first (a crease), given as an unindexed soup for the last: the
  // welding by position must find the shared corners anyway.
  const s = Math.sin(Math.PI / 6), c = Math.cos(Math.PI / 6);
  const pos = new Float32Array([0, 0, 0, 1, 0, 0, 0, 1, 0, 0, c, s]);
  const { positions, normals, indices } = computeNormals(pos, new Uint16Array([0, 1, 2, 0, 1, 3]));
  assert.equal(indices, null);
  assert.equal(positions.length, 18);
  close(positions.subarray(0, 9), [0, 0, 0, 1, 0, 0, 0, 1, 0]);
  // The shared corners (0 and 1) average the two faces: between +Z and the tilted normal.
  const n2 = [0, -s, c]; // the second face's normal
  const avg = [0, n2[1] / 2, (1 + n2[2]) / 2];
  const l = Math.hypot(...avg);
  close(normals.subarray(0, 3), avg.map((v) => v / l));
  close(normals.subarray(6, 9), [0, 0, 1]); // corner 2 is only in the first face
  // A box corner: three faces at right angles stay flat.
  const box = new Float32Array([0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]);
  const flat = computeNormals(box, null).normals;
  close(flat.subarray(0, 3), [0, 0, 1]);
  close(flat.subarray(9, 12), [0, 1, 0]);
  close(flat.subarray(18, 21), [1, 0, 0]);
  // Welding: equal positions (and -0 with 0) share an id, others do not.
  const w = weldByPosition(new Float32Array([1, 2, 3, 0, 0, 0, 1, 2, 3, -0, 0, -0, 1, 2, 3.0001]));
  assert.deepEqual([...w.ids], [0, 1, 0, 1, 2]);
  assert.equal(w.count, 3);
  const many = new Float32Array(30000 * 3).map((_, i) => Math.floor(i / 3) % 10000);
  assert.equal(weldByPosition(many).count, 10000);
  // Degenerate faces get some unit normal, never NaN.
  const deg = computeNormals(new Float32Array(9), null).normals;
  assert.ok(deg.every(Number.isFinite));
  close(deg.subarray(0, 3), [0, 0, 1]);
});

test('bad GLBs end in a GLBError with a sentence', () => {
  const { json, bin } = assembly();
  const good = glb(json, bin);
  const mutate = (f) => {
    const j = structuredClone(json);
    f(j);
    return glb(j, bin);
  };
  const cases = {
    'empty': new Uint8Array(0),
    'wrong magic': Uint8Array.from([...new TextEncoder().encode('gLTF'), 2, 0, 0, 0, 12, 0, 0, 0]),
    'version 1': (() => { const b = good.slice(); b[4] = 1; return b; })(),
    'truncated': good.subarray(0, good.length - 4),
    'chunk past the end': (() => { const b = good.slice(); new DataView(b.buffer).setUint32(12, 1 << 30, true); return b; })(),
    'not JSON': (() => { const b = good.slice(); b[20] = 0x7b; b[21] = 0x7b; return b; })(),
    'JSON not an object': glb([1, 2]),
    'old asset version': mutate((j) => { j.asset.version = '1.0'; }),
    'required Draco': mutate((j) => { j.extensionsRequired = ['KHR_draco_mesh_compression']; }),
    'external buffer': mutate((j) => { j.buffers[0].uri = 'model.bin'; }),
    'buffer longer than BIN': mutate((j) => { j.buffers[0].byteLength = 1 << 20; }),
    'view outside buffer': mutate((j) => { j.bufferViews[0].byteOffset = 1 << 20; }),
    'accessor past view': mutate((j) => { j.accessors[0].count = 4; }),
    'negative count': mutate((j) => { j.accessors[0].count = -1; }),
    'huge count': mutate((j) => { j.accessors[0].count = 2 ** 40; }),
    'bad type': mutate((j) => { j.accessors[0].type = 'VEC9'; }),
    'bad component type': mutate((j) => { j.accessors[0].componentType = 1; }),
    'position not VEC3': mutate((j) => { j.accessors[0].type = 'VEC2'; }),
    'float indices': mutate((j) => { j.accessors[1].componentType = 5126; j.accessors[1].count = 1; }),
    'index past vertices': mutate((j) => { j.accessors[0].count = 2; j.bufferViews[0].byteLength = 24; }),
    'small stride': mutate((j) => { j.bufferViews[0].byteStride = 4; }),
    'missing accessor': mutate((j) => { j.meshes[0].primitives[0].indices = 7; }),
    'missing mesh': mutate((j) => { j.nodes[1].mesh = 5; }),
    'missing material': mutate((j) => { j.meshes[0].primitives[0].material = 9; }),
    'missing child': mutate((j) => { j.nodes[0].children.push(42); }),
    'cycle': mutate((j) => { j.nodes[4].children = [0]; }),
    'node twice': mutate((j) => { j.nodes[0].children.push(1); }),
    'bad matrix': mutate((j) => { j.nodes[2].matrix = [1, 2, 3]; }),
    'bad translation': mutate((j) => { j.nodes[1].translation = [1, 'x', 3]; }),
    'bad mode': mutate((j) => { j.meshes[0].primitives[0].mode = 9; }),
    'missing scene': mutate((j) => { j.scene = 3; }),
  };
  for (const [name, bytes] of Object.entries(cases)) {
    assert.throws(() => readModel(bytes), (e) => {
      assert.ok(e instanceof GLBError, `${name}: ${e}`);
      assert.match(e.message, /^[a-zA-Z"]/, name);
      assert.doesNotMatch(e.message, /undefined|NaN|\[object/, `${name}: ${e.message}`);
      return true;
    }, name);
  }
  assert.throws(() => readModel('a string'), GLBError);
});

test('parseGLB skips unknown chunks and forgives a missing pad', () => {
  const { json, bin } = assembly();
  const b = glb(json, bin);
  // Append an unknown chunk of 3 bytes (unpadded) and fix the length.
  const extra = new Uint8Array(b.length + 11);
  extra.set(b);
  const dv = new DataView(extra.buffer);
  dv.setUint32(b.length, 3, true);
  dv.setUint32(b.length + 4, 0x12345678, true);
  dv.setUint32(8, extra.length, true);
  const { json: j2, bin: bin2 } = parseGLB(extra);
  assert.equal(j2.asset.version, '2.0');
  assert.equal(bin2.length, bin.length);
  assert.equal(readModel(extra.buffer).parts.length, 3);
});

// prng is a small seeded generator, so that the random tests repeat.
function prng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('random corruptions of a GLB give a model or a GLBError, nothing else', () => {
  const { json, bin } = assembly();
  const good = glb(json, bin);
  const rnd = prng(11);
  for (let round = 0; round < 3000; round++) {
    const b = good.slice(0, rnd() < 0.1 ? Math.floor(rnd() * good.length) : good.length);
    const flips = 1 + Math.floor(rnd() * 4);
    for (let k = 0; k < flips && b.length; k++) b[Math.floor(rnd() * b.length)] = Math.floor(rnd() * 256);
    try {
      const m = readModel(b);
      assert.ok(Array.isArray(m.parts));
    } catch (e) {
      assert.ok(e instanceof GLBError, `round ${round}: ${e.stack}`);
    }
  }
});

// ---- zipdir.js ----

/** A stored (uncompressed) ZIP of entries {name, data} with an optional comment. */
function zip(entries, comment = '') {
  const enc = new TextEncoder();
  const locals = [];
  const central = [];
  let off = 0;
  for (const e of entries) {
    const name = enc.encode(e.name);
    const data = typeof e.data === 'string' ? enc.encode(e.data) : e.data ?? new Uint8Array(0);
    const lh = new Uint8Array(30 + name.length + data.length);
    const ldv = new DataView(lh.buffer);
    ldv.setUint32(0, 0x04034b50, true);
    ldv.setUint16(4, 20, true);
    ldv.setUint16(6, 0x800, true);
    ldv.setUint32(18, data.length, true);
    ldv.setUint32(22, data.length, true);
    ldv.setUint16(26, name.length, true);
    lh.set(name, 30);
    lh.set(data, 30 + name.length);
    const ch = new Uint8Array(46 + name.length);
    const cdv = new DataView(ch.buffer);
    cdv.setUint32(0, 0x02014b50, true);
    cdv.setUint16(4, 20, true);
    cdv.setUint16(6, 20, true);
    cdv.setUint16(8, 0x800 | (e.encrypted ? 1 : 0), true);
    cdv.setUint32(20, data.length, true);
    cdv.setUint32(24, data.length, true);
    cdv.setUint16(28, name.length, true);
    cdv.setUint32(42, off, true);
    ch.set(name, 46);
    locals.push(lh);
    central.push(ch);
    off += lh.length;
  }
  const c = enc.encode(comment);
  const dirSize = central.reduce((n, x) => n + x.length, 0);
  const end = new Uint8Array(22 + c.length);
  const edv = new DataView(end.buffer);
  edv.setUint32(0, 0x06054b50, true);
  edv.setUint16(8, entries.length, true);
  edv.setUint16(10, entries.length, true);
  edv.setUint32(12, dirSize, true);
  edv.setUint32(16, off, true);
  edv.setUint16(20, c.length, true);
  end.set(c, 22);
  const all = new Uint8Array(off + dirSize + end.length);
  let p = 0;
  for (const x of [...locals, ...central, end]) {
    all.set(x, p);
    p += x.length;
  }
  return all;
}

const readerOf = (bytes) => async (offset, length) => bytes.slice(offset, offset + length);

test('a ZIP directory lists names, sizes and folders; models are picked out', async () => {
  const bytes = zip([
    { name: 'asm/', data: '' },
    { name: 'asm/top.step', data: 'ISO-10303-21;' },
    { name: 'asm/parts/bolt.STP', data: 'x' },
    { name: 'readme.txt', data: 'hello' },
    { name: 'cube.obj', data: 'v 0 0 0' },
    { name: '__MACOSX/asm/._top.step', data: 'fork' },
    { name: 'asm/.hidden/x.stl', data: 'solid' },
    { name: 'dossier/modèle.igs', data: 'é' },
  ], 'a comment with PK\x05\x06 inside');
  const entries = await readZipDirectory(bytes.length, readerOf(bytes));
  assert.deepEqual(entries.map((e) => e.name), ['asm/', 'asm/top.step', 'asm/parts/bolt.STP', 'readme.txt', 'cube.obj',
    '__MACOSX/asm/._top.step', 'asm/.hidden/x.stl', 'dossier/modèle.igs']);
  assert.equal(entries[0].dir, true);
  assert.equal(entries[1].size, 13);
  assert.equal(entries[7].size, 2);
  assert.deepEqual(modelEntries(entries).map((e) => e.name), ['cube.obj', 'asm/top.step', 'dossier/modèle.igs', 'asm/parts/bolt.STP']);
});

test('ZIP helpers', () => {
  assert.equal(extension('a/b/C.StEp'), '.step');
  assert.equal(extension('a.b/noext'), '');
  assert.equal(extension('.hidden'), '');
  assert.ok(isZipName('x/Y.ZIP'));
  assert.ok(!isZipName('zip'));
});

test('bad ZIPs end in a ZipError', async () => {
  const good = zip([{ name: 'a.stl', data: 'solid' }]);
  const cases = {
    'empty': new Uint8Array(0),
    'not a zip': new TextEncoder().encode('solid cube\nendsolid cube\n'.repeat(3)),
    'truncated end': good.subarray(0, good.length - 3),
    'directory outside': (() => { const b = good.slice(); new DataView(b.buffer).setUint32(b.length - 6, 1 << 30, true); return b; })(),
    'broken entry': (() => { const b = good.slice(); const at = new DataView(b.buffer).getUint32(b.length - 6, true); b[at] = 0; return b; })(),
    'split archive': (() => { const b = good.slice(); new DataView(b.buffer).setUint16(b.length - 22 + 4, 1, true); return b; })(),
    'more entries than directory': (() => { const b = good.slice(); const dv = new DataView(b.buffer); dv.setUint16(b.length - 12, 2, true); dv.setUint16(b.length - 14, 2, true); return b; })(),
  };
  for (const [name, bytes] of Object.entries(cases)) {
    await assert.rejects(readZipDirectory(bytes.length, readerOf(bytes)), ZipError, name);
  }
  // A reader that comes back short is an error too, not a crash.
  await assert.rejects(readZipDirectory(good.length, async () => new Uint8Array(1)), ZipError);
});

test('random corruptions of a ZIP give a listing or a ZipError, nothing else', async () => {
  const good = zip([{ name: 'a/b.step', data: 'x'.repeat(40) }, { name: 'c.obj', data: 'v 1 2 3' }], 'note');
  const rnd = prng(7);
  for (let round = 0; round < 3000; round++) {
    const b = good.slice();
    // Corrupt the directory and end record, where the reader looks.
    const from = good.length - 140;
    for (let k = 0; k < 1 + Math.floor(rnd() * 3); k++) b[from + Math.floor(rnd() * 140)] = Math.floor(rnd() * 256);
    try {
      const entries = await readZipDirectory(b.length, readerOf(b));
      assert.ok(Array.isArray(entries));
    } catch (e) {
      assert.ok(e instanceof ZipError, `round ${round}: ${e.stack}`);
    }
  }
});

// ZIPs written by Go's archive/zip (web_test.go): deflated entries, a
// comment, directories, data descriptors, and one forced into ZIP64.
test('ZIPs written by Go are read', { skip: !process.env.DROVER_ZIPS && 'DROVER_ZIPS is not set' }, async () => {
  const dir = process.env.DROVER_ZIPS;
  const want = JSON.parse(readFileSync(join(dir, 'want.json'), 'utf8'));
  for (const [file, names] of Object.entries(want)) {
    const bytes = new Uint8Array(readFileSync(join(dir, file)));
    const entries = await readZipDirectory(bytes.length, readerOf(bytes));
    assert.deepEqual(entries.map((e) => [e.name, e.size]), names, file);
  }
});

// ---- mat4.js ----

test('matrices: TRS, products, normal matrices, views', () => {
  const m = fromTRS([1, 2, 3], [0, 0, Math.SQRT1_2, Math.SQRT1_2], [2, 2, 2]);
  close(transformPoint(m, [1, 0, 0]), [1, 4, 3]);
  close(transformPoint(multiply(fromTRS([5, 0, 0]), m), [1, 0, 0]), [6, 4, 3]);
  close(multiply(identity(), m), m);
  // N^T × A = I for the upper 3×3 A of any invertible matrix.
  const a = Float32Array.from([2, 1, 0, 0, 0.5, 3, 1, 0, 1, 0, 4, 0, 7, 8, 9, 1]);
  const n = normalMatrix(a);
  for (let r = 0; r < 3; r++) {
    for (let c = 0; c < 3; c++) {
      let s = 0;
      for (let k = 0; k < 3; k++) s += n[r * 3 + k] * a[c * 4 + k];
      assert.ok(Math.abs(s - (r === c ? 1 : 0)) < 1e-5, `(${r},${c}) = ${s}`);
    }
  }
  close(normalMatrix(new Float32Array(16)), [1, 0, 0, 0, 1, 0, 0, 0, 1]);
  // The camera looks down -Z of its own space at the target.
  const v = lookAt([0, 0, 10], [0, 0, 0], [0, 1, 0]);
  close(transformPoint(v, [0, 0, 0]), [0, 0, -10]);
  const p = perspective(Math.PI / 2, 1, 1, 100);
  const clip = (z) => { const w = -z; return (p[10] * z + p[14]) / w; };
  assert.ok(Math.abs(clip(-1) + 1) < 1e-6 && Math.abs(clip(-100) - 1) < 1e-5);
});

// ---- convert.js (its pure helpers; the page itself runs in the browser test) ----

test('the page: argument header, upload plans, names, state classes', async () => {
  const { argHeader, plan, shownName, stateClass } = await import('../static/convert.js');
  const hdr = argHeader({ startPath: 'dossier/modèle €.igs', n: 1 });
  assert.match(hdr, /^[\x20-\x7e]+$/, 'a header value the browser accepts');
  assert.deepEqual(JSON.parse(hdr), { startPath: 'dossier/modèle €.igs', n: 1 });

  assert.deepEqual(plan(['a.obj', 'a.mtl', 'tex.png']), { zips: [], together: { files: ['a.obj', 'a.mtl', 'tex.png'], root: 'a.obj' }, single: [] });
  assert.deepEqual(plan(['a.step', 'b.stl']), { zips: [], together: null, single: ['a.step', 'b.stl'] });
  assert.deepEqual(plan(['x.zip', 'part.igs']), { zips: ['x.zip'], together: null, single: ['part.igs'] });
  assert.deepEqual(plan(['notes.txt']), { zips: [], together: null, single: ['notes.txt'] });

  assert.equal(shownName('c890c758a64c9b33.obj', 'towers.obj'), 'towers.obj');
  assert.equal(shownName('Assembly', 'towers.obj'), 'Assembly');
  assert.equal(stateClass('SUCCESS'), 'state-live');
  assert.equal(stateClass('ERROR - Conversion Error'), 'state-dead');
  assert.equal(stateClass('PENDING'), 'state-converting');
});

// ---- streamclient.js ----

// A fake reference viewer: answers list and get as worker/viewer does,
// with the model in frames of chunk bytes; misbehave changes one step.
function fakeViewer(models, { chunk = 3, misbehave = null } = {}) {
  return class FakeViewerSocket {
    constructor(url) {
      this.url = url;
      this.closed = false;
      queueMicrotask(() => this.onopen?.());
    }
    send(text) {
      const req = JSON.parse(text);
      const reply = (f) => queueMicrotask(() => !this.closed && this.onmessage?.({ data: typeof f === 'string' ? f : f instanceof ArrayBuffer ? f : JSON.stringify(f) }));
      if (req.type === 'list') return reply({ type: 'list', models: Object.keys(models) });
      if (req.type !== 'get') return reply({ type: 'error', error: 'bad request' });
      const body = models[req.name];
      if (misbehave === 'error') return reply({ type: 'error', error: 'no such model' });
      reply({ type: 'model', name: req.name, size: misbehave === 'short' ? body.length + 1 : body.length });
      for (let i = 0; i < body.length; i += chunk) reply(body.slice(i, i + chunk).buffer);
      if (misbehave === 'close') return queueMicrotask(() => this.onclose?.({}));
      return reply({ type: 'end', name: req.name });
    }
    close() {
      this.closed = true;
    }
  };
}

test('a model arrives through a streaming session', async () => {
  const { fetchStreamedModel, streamURL, StreamError } = await import('../static/streamclient.js');
  assert.equal(streamURL({ serverurl: 'example.org', port: 8181, sessionid: 'a b' }), 'ws://example.org:8181/?token=a%20b');
  assert.equal(streamURL({ serverurl: '::1', port: 443, sessionid: 'k' }, 'https:'), 'wss://[::1]:443/?token=k');
  assert.throws(() => streamURL({ serverurl: 'x', port: '80', sessionid: 'k' }), StreamError);

  const body = new Uint8Array(Array.from({ length: 20 }, (_, i) => i));
  const buf = await fetchStreamedModel('ws://x/?token=k', 'towers.obj', { WebSocketImpl: fakeViewer({ 'towers.obj': body }) });
  assert.deepEqual([...new Uint8Array(buf)], [...body]);

  const bad = {
    'no such name': [{ other: body }, {}],
    'viewer error': [{ 'towers.obj': body }, { misbehave: 'error' }],
    'short model': [{ 'towers.obj': body }, { misbehave: 'short' }],
    'closed early': [{ 'towers.obj': body }, { misbehave: 'close' }],
  };
  for (const [what, [models, opts]] of Object.entries(bad)) {
    await assert.rejects(fetchStreamedModel('ws://x/', 'towers.obj', { WebSocketImpl: fakeViewer(models, opts) }), StreamError, what);
  }
  await assert.rejects(fetchStreamedModel('ws://x/', 'm', { WebSocketImpl: class { constructor() { throw new Error('refused'); } } }), StreamError);
  await assert.rejects(fetchStreamedModel('ws://x/', 'm', { WebSocketImpl: class { send() {} close() {} }, timeoutMs: 10 }), /in time/);
});
