// glb.js — reads binary glTF 2.0 (GLB) files for the conversion page's
// viewer: the container (header, JSON chunk, BIN chunk), the accessors and
// buffer views of the meshes' POSITION, NORMAL and indices, the node
// hierarchy with its matrices or TRS, and the materials' base colours.
// Textures, skins, morph targets and animations are not read: a converted
// CAD or mesh model does without them.
//
// The input comes from a server and, before it, from a user's upload: every
// offset, length, count and index is checked, and anything wrong ends in a
// GLBError with a plain sentence, never in a read out of bounds or a
// half-built model. Pure: no DOM, no WebGL (Node runs its tests).

import { identity, multiply, fromTRS, transformPoint } from './mat4.js';

/** A file that is not a GLB this reader can show. */
export class GLBError extends Error {
  constructor(message) {
    super(message);
    this.name = 'GLBError';
  }
}

const MAGIC = 0x46546c67; // "glTF"
const CHUNK_JSON = 0x4e4f534a; // "JSON"
const CHUNK_BIN = 0x004e4942; // "BIN\0"

/** Primitive modes, as glTF numbers them. */
export const MODE = Object.freeze({
  POINTS: 0, LINES: 1, LINE_LOOP: 2, LINE_STRIP: 3, TRIANGLES: 4, TRIANGLE_STRIP: 5, TRIANGLE_FAN: 6,
});

// Extensions a model may require that change nothing for this reader.
const HARMLESS = new Set(['KHR_mesh_quantization', 'KHR_materials_unlit', 'KHR_texture_transform',
  'KHR_materials_emissive_strength', 'KHR_materials_ior', 'KHR_materials_specular']);

const COMPONENTS = { SCALAR: 1, VEC2: 2, VEC3: 3, VEC4: 4, MAT2: 4, MAT3: 9, MAT4: 16 };
const COMPONENT_TYPES = {
  5120: { ctor: Int8Array, size: 1, get: 'getInt8', norm: (v) => Math.max(v / 127, -1) },
  5121: { ctor: Uint8Array, size: 1, get: 'getUint8', norm: (v) => v / 255 },
  5122: { ctor: Int16Array, size: 2, get: 'getInt16', norm: (v) => Math.max(v / 32767, -1) },
  5123: { ctor: Uint16Array, size: 2, get: 'getUint16', norm: (v) => v / 65535 },
  5125: { ctor: Uint32Array, size: 4, get: 'getUint32', norm: (v) => v },
  5126: { ctor: Float32Array, size: 4, get: 'getFloat32', norm: (v) => v },
};

/** Bounds on what one file may ask for, so a lying header cannot exhaust memory. */
export const LIMITS = Object.freeze({
  accessorCount: 1 << 25, // elements of one accessor
  nodeDepth: 256,
  nodes: 1 << 20,
});

/**
 * Splits a GLB into its JSON document and BIN chunk. input: an ArrayBuffer
 * or a typed array view of the file.
 * @returns {{json: object, bin: Uint8Array|null}}
 */
export function parseGLB(input) {
  const bytes = toBytes(input);
  if (bytes.byteLength < 12) throw new GLBError(`not a GLB file: ${bytes.byteLength} bytes is shorter than its header`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dv.getUint32(0, true) !== MAGIC) throw new GLBError('not a GLB file: it does not start with "glTF"');
  const version = dv.getUint32(4, true);
  if (version !== 2) throw new GLBError(`GLB version ${version} is not supported; only version 2 is`);
  const length = dv.getUint32(8, true);
  if (length > bytes.byteLength) {
    throw new GLBError(`the GLB is truncated: its header says ${length} bytes, the file has ${bytes.byteLength}`);
  }
  if (length < 20) throw new GLBError('the GLB has no JSON chunk');
  let json = null;
  let bin = null;
  let off = 12;
  for (let i = 0; off < length; i++) {
    if (off + 8 > length) throw new GLBError(`chunk ${i} of the GLB is cut short`);
    const chunkLength = dv.getUint32(off, true);
    const type = dv.getUint32(off + 4, true);
    const start = off + 8;
    if (chunkLength > length - start) throw new GLBError(`chunk ${i} of the GLB runs past the end of the file`);
    const body = bytes.subarray(start, start + chunkLength);
    if (i === 0) {
      if (type !== CHUNK_JSON) throw new GLBError('the first chunk of the GLB is not its JSON');
      json = decodeJSON(body);
    } else if (type === CHUNK_BIN && bin === null) {
      bin = body;
    } else if (type === CHUNK_JSON) {
      throw new GLBError('the GLB has a second JSON chunk');
    } // Other chunk types are for extensions: skipped, as the spec says.
    off = start + chunkLength;
    // Chunks are 4-byte aligned; a writer that forgot the padding is forgiven.
    if (off % 4 !== 0 && off + (4 - (off % 4)) <= length) off += 4 - (off % 4);
  }
  if (json === null) throw new GLBError('the GLB has no JSON chunk');
  return { json, bin };
}

function toBytes(input) {
  if (input instanceof ArrayBuffer) return new Uint8Array(input);
  if (ArrayBuffer.isView(input)) return new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
  throw new GLBError('a GLB must be given as bytes');
}

function decodeJSON(body) {
  let text;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(body);
  } catch {
    throw new GLBError('the JSON chunk of the GLB is not UTF-8 text');
  }
  let doc;
  try {
    // Trailing spaces pad the chunk; a NUL or two are a common slip.
    doc = JSON.parse(text.replace(/[\s\0]+$/, ''));
  } catch (e) {
    throw new GLBError(`the JSON chunk of the GLB does not parse: ${e.message}`);
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    throw new GLBError('the JSON chunk of the GLB is not an object');
  }
  return doc;
}

/**
 * A model ready to draw.
 * @typedef {object} Model
 * @property {Mesh[]} meshes
 * @property {TreeNode[]} tree the scene's node hierarchy (named nodes and those with meshes)
 * @property {Part[]} parts one per node with a mesh, in depth-first order; part.id = index + 1
 * @property {{min: number[], max: number[]}|null} bounds of every part, in world space; null when empty
 * @property {{vertices: number, triangles: number}} stats
 */

/**
 * Reads a GLB into a Model (see above). Throws GLBError on anything it
 * cannot show.
 */
export function readModel(input) {
  const { json, bin } = parseGLB(input);
  return modelFromGLTF(json, bin);
}

/** The Model of a glTF document and its BIN chunk (see readModel). */
export function modelFromGLTF(json, bin) {
  const version = String(json.asset?.version ?? '');
  if (!version.startsWith('2.')) throw new GLBError(`glTF version "${version}" is not supported; only 2.x is`);
  const required = arr(json.extensionsRequired).filter((e) => !HARMLESS.has(e));
  if (required.length) throw new GLBError(`the model needs glTF extensions this viewer lacks: ${required.join(', ')}`);
  const buffers = arr(json.buffers).map((b, i) => resolveBuffer(b, i, bin));
  const reader = new AccessorReader(json, buffers);
  const materials = arr(json.materials).map(readMaterial);
  const meshCache = new Map();
  const mesh = (i) => {
    if (!meshCache.has(i)) meshCache.set(i, readMesh(json, i, reader, materials));
    return meshCache.get(i);
  };

  const nodes = arr(json.nodes);
  if (nodes.length > LIMITS.nodes) throw new GLBError(`the model has ${nodes.length} nodes, more than ${LIMITS.nodes}`);
  const roots = sceneRoots(json, nodes);
  const parts = [];
  const meshes = [];
  const seen = new Set();
  const walk = (index, parentWorld, path, depth) => {
    const node = nodes[index];
    if (!isObject(node)) throw new GLBError(`node ${index} does not exist`);
    if (seen.has(index)) throw new GLBError(`node ${index} appears twice in the hierarchy`);
    if (depth > LIMITS.nodeDepth) throw new GLBError(`the node hierarchy is deeper than ${LIMITS.nodeDepth}`);
    seen.add(index);
    const world = multiply(parentWorld, localMatrix(node, index));
    const name = typeof node.name === 'string' && node.name !== '' ? node.name : null;
    const tn = { index, name: name ?? `node ${index}`, named: name !== null, part: null, children: [] };
    const here = [...path, tn.name];
    if (node.mesh !== undefined) {
      const m = mesh(checkIndex(node.mesh, json.meshes, `node ${index}'s mesh`));
      if (!meshes.includes(m)) meshes.push(m);
      const part = { id: parts.length + 1, name: name ?? m.name ?? tn.name, node: index, mesh: m, world, path: here };
      parts.push(part);
      tn.part = part;
    }
    for (const c of arr(node.children)) {
      const child = walk(checkIndex(c, nodes, `node ${index}'s child`), world, here, depth + 1);
      if (child) tn.children.push(child);
    }
    // Unnamed empty groups only clutter the tree: their children move up.
    if (!tn.part && !tn.named) return tn.children.length ? { ...tn, flatten: true } : null;
    return tn;
  };
  const tree = [];
  for (const r of roots) {
    const tn = walk(r, identity(), [], 0);
    if (tn) tree.push(tn);
  }
  return { meshes, tree: flattenUnnamed(tree), parts, bounds: worldBounds(parts), stats: stats(parts) };
}

function flattenUnnamed(list) {
  const out = [];
  for (const tn of list) {
    const children = flattenUnnamed(tn.children);
    if (tn.flatten) out.push(...children);
    else out.push({ index: tn.index, name: tn.name, part: tn.part, children });
  }
  return out;
}

function sceneRoots(json, nodes) {
  const scenes = arr(json.scenes);
  if (scenes.length) {
    const s = scenes[checkIndex(json.scene ?? 0, scenes, 'the scene')];
    return arr(s?.nodes).map((n) => checkIndex(n, nodes, 'a scene node'));
  }
  // No scenes: every node that is nobody's child is a root.
  const child = new Set();
  nodes.forEach((n) => arr(n?.children).forEach((c) => child.add(c)));
  return nodes.map((_, i) => i).filter((i) => !child.has(i));
}

function localMatrix(node, index) {
  if (node.matrix !== undefined) {
    const m = node.matrix;
    if (!Array.isArray(m) || m.length !== 16 || !m.every(Number.isFinite)) {
      throw new GLBError(`node ${index} has a matrix that is not 16 numbers`);
    }
    return Float32Array.from(m);
  }
  const vec = (v, n, def, what) => {
    if (v === undefined) return def;
    if (!Array.isArray(v) || v.length !== n || !v.every(Number.isFinite)) {
      throw new GLBError(`node ${index} has a ${what} that is not ${n} numbers`);
    }
    return v;
  };
  return fromTRS(vec(node.translation, 3, [0, 0, 0], 'translation'), vec(node.rotation, 4, [0, 0, 0, 1], 'rotation'),
    vec(node.scale, 3, [1, 1, 1], 'scale'));
}

function resolveBuffer(b, i, bin) {
  if (!isObject(b)) throw new GLBError(`buffer ${i} is not an object`);
  if (b.uri === undefined) {
    if (i !== 0 || bin === null) throw new GLBError(`buffer ${i} has no data: the GLB has no BIN chunk for it`);
    if (!isCount(b.byteLength) || b.byteLength > bin.byteLength) throw new GLBError(`buffer ${i} is longer than the GLB's BIN chunk`);
    return bin.subarray(0, b.byteLength);
  }
  const m = /^data:[^,;]*;base64,(.*)$/s.exec(String(b.uri));
  if (!m) throw new GLBError(`buffer ${i} refers to a file outside the GLB; only embedded data is read`);
  let raw;
  try {
    raw = atob(m[1]);
  } catch {
    throw new GLBError(`buffer ${i} has broken base64 data`);
  }
  const out = new Uint8Array(raw.length);
  for (let k = 0; k < raw.length; k++) out[k] = raw.charCodeAt(k);
  if (!isCount(b.byteLength) || b.byteLength > out.byteLength) throw new GLBError(`buffer ${i} is shorter than its byteLength`);
  return out.subarray(0, b.byteLength);
}

/** Reads accessors, checking each against its buffer view and buffer. */
class AccessorReader {
  constructor(json, buffers) {
    this.json = json;
    this.buffers = buffers;
  }

  /**
   * The elements of accessor i as a flat typed array of its component type,
   * with its sparse substitutions applied.
   */
  read(i, what) {
    const acc = arr(this.json.accessors)[checkIndex(i, this.json.accessors, what)];
    const label = `accessor ${i} (${what})`;
    if (!isObject(acc)) throw new GLBError(`${label} is not an object`);
    const comps = COMPONENTS[acc.type];
    const ct = COMPONENT_TYPES[acc.componentType];
    if (!comps) throw new GLBError(`${label} has an unknown type ${JSON.stringify(acc.type)}`);
    if (!ct) throw new GLBError(`${label} has an unknown component type ${JSON.stringify(acc.componentType)}`);
    const count = acc.count;
    if (!Number.isInteger(count) || count < 0 || count > LIMITS.accessorCount) {
      throw new GLBError(`${label} has a bad count ${JSON.stringify(count)}`);
    }
    const n = count * comps;
    let out;
    if (acc.bufferView === undefined) {
      out = new ct.ctor(n); // zeros, unless sparse says otherwise
    } else {
      out = this.view(acc.bufferView, acc.byteOffset ?? 0, count, comps, ct, label, true);
    }
    if (acc.sparse !== undefined) this.applySparse(acc.sparse, out, count, comps, ct, label);
    return { array: out, comps, count, normalized: acc.normalized === true, componentType: acc.componentType };
  }

  // view reads count elements of comps components of type ct at byteOffset
  // in buffer view bvIndex, honouring its stride when strided is true.
  view(bvIndex, byteOffset, count, comps, ct, label, strided) {
    const bv = arr(this.json.bufferViews)[checkIndex(bvIndex, this.json.bufferViews, `${label}'s buffer view`)];
    if (!isObject(bv)) throw new GLBError(`buffer view ${bvIndex} is not an object`);
    const buf = this.buffers[checkIndex(bv.buffer, this.json.buffers, `buffer view ${bvIndex}'s buffer`)];
    const bvOff = bv.byteOffset ?? 0;
    const bvLen = bv.byteLength;
    if (!isCount(bvOff) || !isCount(bvLen) || bvOff + bvLen > buf.byteLength) {
      throw new GLBError(`buffer view ${bvIndex} lies outside its buffer`);
    }
    if (!isCount(byteOffset)) throw new GLBError(`${label} has a bad byteOffset`);
    const elem = comps * ct.size;
    let stride = elem;
    if (strided && bv.byteStride !== undefined) {
      stride = bv.byteStride;
      if (!Number.isInteger(stride) || stride < elem || stride > 252) {
        throw new GLBError(`buffer view ${bvIndex} has a byteStride of ${JSON.stringify(stride)}`);
      }
    }
    const need = count === 0 ? 0 : byteOffset + stride * (count - 1) + elem;
    if (need > bvLen) throw new GLBError(`${label} reads past the end of buffer view ${bvIndex}`);
    const start = buf.byteOffset + bvOff + byteOffset;
    const n = count * comps;
    if (stride === elem && start % ct.size === 0) {
      return new ct.ctor(buf.buffer, start, n).slice(); // a copy: the file may go
    }
    const dv = new DataView(buf.buffer);
    const out = new ct.ctor(n);
    for (let e = 0; e < count; e++) {
      const at = start + e * stride;
      for (let c = 0; c < comps; c++) out[e * comps + c] = dv[ct.get](at + c * ct.size, true);
    }
    return out;
  }

  applySparse(sp, out, count, comps, ct, label) {
    if (!isObject(sp) || !isObject(sp.indices) || !isObject(sp.values)) {
      throw new GLBError(`${label} has a broken sparse section`);
    }
    const n = sp.count;
    if (!Number.isInteger(n) || n < 1 || n > count) throw new GLBError(`${label} has a bad sparse count`);
    const it = COMPONENT_TYPES[sp.indices.componentType];
    if (!it || it.ctor === Float32Array || it.ctor === Int8Array || it.ctor === Int16Array) {
      throw new GLBError(`${label} has sparse indices of a bad component type`);
    }
    const idx = this.view(sp.indices.bufferView, sp.indices.byteOffset ?? 0, n, 1, it, `${label}'s sparse indices`, false);
    const vals = this.view(sp.values.bufferView, sp.values.byteOffset ?? 0, n, comps, ct, `${label}'s sparse values`, false);
    for (let k = 0; k < n; k++) {
      const e = idx[k];
      if (e >= count) throw new GLBError(`${label} has a sparse index ${e} past its count ${count}`);
      for (let c = 0; c < comps; c++) out[e * comps + c] = vals[k * comps + c];
    }
  }

  /** Accessor i as floats, normalized integers scaled as glTF says. */
  floats(i, what, wantComps) {
    const a = this.read(i, what);
    if (wantComps && a.comps !== wantComps) throw new GLBError(`accessor ${i} (${what}) has ${a.comps} components, not ${wantComps}`);
    if (a.array instanceof Float32Array) return a.array;
    const ct = COMPONENT_TYPES[a.componentType];
    const out = new Float32Array(a.array.length);
    for (let k = 0; k < out.length; k++) out[k] = a.normalized ? ct.norm(a.array[k]) : a.array[k];
    return out;
  }
}

function readMaterial(m, i) {
  const color = [1, 1, 1, 1];
  const src = m?.pbrMetallicRoughness?.baseColorFactor ?? m?.extensions?.KHR_materials_pbrSpecularGlossiness?.diffuseFactor;
  if (Array.isArray(src) && src.length === 4 && src.every(Number.isFinite)) {
    for (let k = 0; k < 4; k++) color[k] = Math.min(1, Math.max(0, src[k]));
  }
  return { name: typeof m?.name === 'string' ? m.name : `material ${i}`, color, doubleSided: m?.doubleSided === true };
}

const DEFAULT_MATERIAL = Object.freeze({ name: 'default', color: [0.8, 0.8, 0.8, 1], doubleSided: true });

function readMesh(json, i, reader, materials) {
  const m = json.meshes[i];
  if (!isObject(m)) throw new GLBError(`mesh ${i} is not an object`);
  const prims = [];
  arr(m.primitives).forEach((p, k) => {
    const where = `mesh ${i} primitive ${k}`;
    if (!isObject(p) || !isObject(p.attributes)) throw new GLBError(`${where} has no attributes`);
    if (p.attributes.POSITION === undefined) return; // nothing to draw; the spec allows it
    const positions = reader.floats(p.attributes.POSITION, `${where} POSITION`, 3);
    const vertices = positions.length / 3;
    let normals = null;
    if (p.attributes.NORMAL !== undefined) {
      normals = reader.floats(p.attributes.NORMAL, `${where} NORMAL`, 3);
      if (normals.length !== positions.length) throw new GLBError(`${where} has ${normals.length / 3} normals for ${vertices} positions`);
    }
    let indices = null;
    if (p.indices !== undefined) {
      const a = reader.read(p.indices, `${where} indices`);
      if (a.comps !== 1 || ![5121, 5123, 5125].includes(a.componentType)) {
        throw new GLBError(`${where} has indices that are not unsigned integer scalars`);
      }
      indices = a.array instanceof Uint8Array ? Uint16Array.from(a.array) : a.array;
      for (let k = 0; k < indices.length; k++) {
        if (indices[k] >= vertices) throw new GLBError(`${where} has an index ${indices[k]} past its ${vertices} vertices`);
      }
    }
    const mode = p.mode ?? MODE.TRIANGLES;
    if (!Number.isInteger(mode) || mode < 0 || mode > 6) throw new GLBError(`${where} has an unknown mode ${JSON.stringify(mode)}`);
    const material = p.material === undefined ? DEFAULT_MATERIAL : materials[checkIndex(p.material, json.materials, `${where}'s material`)];
    let list = toListMode(mode, indices, vertices);
    let pos = positions;
    if (list.mode === MODE.TRIANGLES && !normals) {
      const made = computeNormals(positions, list.indices);
      pos = made.positions;
      normals = made.normals;
      list = { mode: list.mode, indices: null };
    }
    prims.push({ positions: pos, normals, indices: list.indices, mode: list.mode, material, bounds: boundsOf(pos) });
  });
  return { index: i, name: typeof m.name === 'string' && m.name !== '' ? m.name : null, primitives: prims };
}

/**
 * Rewrites strips, fans and loops as plain lists (TRIANGLES, LINES), which
 * is all the viewer draws; indices stay null for an unindexed list.
 */
export function toListMode(mode, indices, vertices) {
  const n = indices ? indices.length : vertices;
  const at = indices ? (k) => indices[k] : (k) => k;
  const out = [];
  switch (mode) {
    case MODE.POINTS: case MODE.LINES: case MODE.TRIANGLES:
      return { mode, indices };
    case MODE.LINE_STRIP: case MODE.LINE_LOOP:
      for (let k = 0; k + 1 < n; k++) out.push(at(k), at(k + 1));
      if (mode === MODE.LINE_LOOP && n > 2) out.push(at(n - 1), at(0));
      return { mode: MODE.LINES, indices: Uint32Array.from(out) };
    case MODE.TRIANGLE_STRIP:
      for (let k = 0; k + 2 < n; k++) {
        if (k % 2 === 0) out.push(at(k), at(k + 1), at(k + 2));
        else out.push(at(k + 1), at(k), at(k + 2));
      }
      return { mode: MODE.TRIANGLES, indices: Uint32Array.from(out) };
    case MODE.TRIANGLE_FAN:
      for (let k = 1; k + 1 < n; k++) out.push(at(0), at(k), at(k + 1));
      return { mode: MODE.TRIANGLES, indices: Uint32Array.from(out) };
    default:
      throw new GLBError(`unknown primitive mode ${mode}`);
  }
}

/** Faces meeting at a sharper angle than this (degrees) keep a visible edge. */
export const CREASE_DEGREES = 40;

/** Above this many triangles, normals are flat per face: no welding. */
const SMOOTH_LIMIT = 1 << 19;

/**
 * Normals for a triangle list that has none, as a converter that leaves
 * them out (an STL or OBJ through assimp) expects a viewer to make them:
 * corners at the same position share a normal, the area-weighted sum of
 * the normals of their faces, but only of faces within CREASE_DEGREES of
 * each other, so a cylinder is smooth and a box keeps its edges. The list
 * comes back unindexed, one vertex per triangle corner.
 * @returns {{positions: Float32Array, normals: Float32Array, indices: null}}
 */
export function computeNormals(positions, indices, creaseDegrees = CREASE_DEGREES) {
  const tris = Math.floor((indices ? indices.length : positions.length / 3) / 3);
  const at = indices ? (k) => indices[k] : (k) => k;
  const face = new Float64Array(tris * 3); // area-weighted normals
  const unit = new Float64Array(tris * 3);
  for (let f = 0; f < tris; f++) {
    const a = at(3 * f) * 3, b = at(3 * f + 1) * 3, c = at(3 * f + 2) * 3;
    const ux = positions[b] - positions[a], uy = positions[b + 1] - positions[a + 1], uz = positions[b + 2] - positions[a + 2];
    const vx = positions[c] - positions[a], vy = positions[c + 1] - positions[a + 1], vz = positions[c + 2] - positions[a + 2];
    const nx = uy * vz - uz * vy, ny = uz * vx - ux * vz, nz = ux * vy - uy * vx;
    face[3 * f] = nx;
    face[3 * f + 1] = ny;
    face[3 * f + 2] = nz;
    const l = Math.hypot(nx, ny, nz);
    if (l > 0 && Number.isFinite(l)) {
      unit[3 * f] = nx / l;
      unit[3 * f + 1] = ny / l;
      unit[3 * f + 2] = nz / l;
    }
  }
  // Corners at one position are one vertex, however the file indexed them.
  const smooth = tris <= SMOOTH_LIMIT;
  const canon = smooth ? weldByPosition(positions) : null;
  const corner = new Uint32Array(tris * 3);
  for (let k = 0; k < tris * 3; k++) corner[k] = smooth ? canon.ids[at(k)] : k; // flat: every corner its own
  // The faces around each welded vertex, as offsets into one array.
  const nv = smooth ? canon.count : tris * 3;
  const start = new Uint32Array(nv + 1);
  for (let k = 0; k < tris * 3; k++) start[corner[k] + 1]++;
  for (let v = 0; v < nv; v++) start[v + 1] += start[v];
  const fill = start.slice(0, nv);
  const faces = new Uint32Array(tris * 3);
  for (let k = 0; k < tris * 3; k++) faces[fill[corner[k]]++] = Math.floor(k / 3);

  const cos = Math.cos((creaseDegrees * Math.PI) / 180);
  const outPos = new Float32Array(tris * 9);
  const outNrm = new Float32Array(tris * 9);
  for (let k = 0; k < tris * 3; k++) {
    const f = Math.floor(k / 3);
    const src = at(k) * 3;
    outPos[3 * k] = positions[src];
    outPos[3 * k + 1] = positions[src + 1];
    outPos[3 * k + 2] = positions[src + 2];
    let x = 0, y = 0, z = 0;
    const v = corner[k];
    for (let j = start[v]; j < start[v + 1]; j++) {
      const g = faces[j];
      if (g === f || unit[3 * f] * unit[3 * g] + unit[3 * f + 1] * unit[3 * g + 1] + unit[3 * f + 2] * unit[3 * g + 2] >= cos) {
        x += face[3 * g];
        y += face[3 * g + 1];
        z += face[3 * g + 2];
      }
    }
    const l = Math.hypot(x, y, z);
    if (l > 0 && Number.isFinite(l)) {
      outNrm[3 * k] = x / l;
      outNrm[3 * k + 1] = y / l;
      outNrm[3 * k + 2] = z / l;
    } else {
      outNrm[3 * k + 2] = 1; // a degenerate face: any normal will do
    }
  }
  return { positions: outPos, normals: outNrm, indices: null };
}

/**
 * Numbers the distinct positions of a Float32Array of xyz triples: ids[v]
 * is the same for every vertex at one point (+0 and -0 alike). A hash
 * table on the floats' bits, so that a large mesh welds in linear time.
 */
export function weldByPosition(positions) {
  const n = Math.floor(positions.length / 3);
  const bits = new Uint32Array(positions.buffer, positions.byteOffset, n * 3);
  const key = (i) => (bits[i] === 0x80000000 ? 0 : bits[i]); // -0 is 0
  let size = 16;
  while (size < n * 2) size *= 2;
  const table = new Int32Array(size).fill(-1); // slot → a vertex holding that position
  const ids = new Uint32Array(n);
  let count = 0;
  for (let v = 0; v < n; v++) {
    const x = key(3 * v), y = key(3 * v + 1), z = key(3 * v + 2);
    let slot = (Math.imul(x, 0x9e3779b1) ^ Math.imul(y, 0x85ebca77) ^ Math.imul(z, 0xc2b2ae3d)) & (size - 1);
    for (;;) {
      const w = table[slot];
      if (w < 0) {
        table[slot] = v;
        ids[v] = count++;
        break;
      }
      if (key(3 * w) === x && key(3 * w + 1) === y && key(3 * w + 2) === z) {
        ids[v] = ids[w];
        break;
      }
      slot = (slot + 1) & (size - 1);
    }
  }
  return { ids, count };
}

function boundsOf(positions) {
  if (positions.length < 3) return null;
  const min = [Infinity, Infinity, Infinity];
  const max = [-Infinity, -Infinity, -Infinity];
  for (let k = 0; k < positions.length; k += 3) {
    for (let c = 0; c < 3; c++) {
      const v = positions[k + c];
      if (!Number.isFinite(v)) continue; // a NaN vertex draws nothing; it must not blow up the view
      if (v < min[c]) min[c] = v;
      if (v > max[c]) max[c] = v;
    }
  }
  return min[0] <= max[0] && min[1] <= max[1] && min[2] <= max[2] ? { min, max } : null;
}

function worldBounds(parts) {
  const min = [Infinity, Infinity, Infinity];
  const max = [-Infinity, -Infinity, -Infinity];
  for (const part of parts) {
    for (const p of part.mesh.primitives) {
      if (!p.bounds) continue;
      for (let corner = 0; corner < 8; corner++) {
        const q = transformPoint(part.world, [0, 1, 2].map((c) => ((corner >> c) & 1 ? p.bounds.max[c] : p.bounds.min[c])));
        for (let c = 0; c < 3; c++) {
          if (!Number.isFinite(q[c])) continue;
          if (q[c] < min[c]) min[c] = q[c];
          if (q[c] > max[c]) max[c] = q[c];
        }
      }
    }
  }
  return min[0] <= max[0] && min[1] <= max[1] && min[2] <= max[2] ? { min, max } : null;
}

function stats(parts) {
  let vertices = 0;
  let triangles = 0;
  for (const part of parts) {
    for (const p of part.mesh.primitives) {
      vertices += p.positions.length / 3;
      if (p.mode === MODE.TRIANGLES) triangles += (p.indices ? p.indices.length : p.positions.length / 3) / 3 | 0;
    }
  }
  return { vertices, triangles };
}

function arr(v) {
  return Array.isArray(v) ? v : [];
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function isCount(v) {
  return Number.isInteger(v) && v >= 0;
}

function checkIndex(i, list, what) {
  if (!Number.isInteger(i) || i < 0 || !Array.isArray(list) || i >= list.length) {
    throw new GLBError(`${what} refers to ${JSON.stringify(i)}, which does not exist`);
  }
  return i;
}
