// zipdir.js — lists the files of a ZIP archive from its central directory,
// so that the conversion page can offer the models inside a ZIP as its
// startPath before uploading it. It reads the end of the archive and the
// directory only (a File's slices in the browser), never the entries' data,
// and inflates nothing.
//
// The archive is the user's own file, but it is still outside input: every
// length and offset is checked, and a broken archive ends in a ZipError
// with a plain sentence. Pure: no DOM (Node runs its tests).

/** An archive whose directory cannot be read. */
export class ZipError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ZipError';
  }
}

const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_LOCATOR64 = 0x07064b50;
const SIG_CENTRAL = 0x02014b50;
const EOCD_SIZE = 22;
const MAX_COMMENT = 0xffff;

/** Bounds on a directory this reader will take in. */
export const LIMITS = Object.freeze({ entries: 100000, directoryBytes: 64 << 20 });

/**
 * The formats a farm converts by default (conversion/convert's registry):
 * the files a ZIP's startPath can name.
 */
export const MODEL_EXTENSIONS = Object.freeze([
  '.3ds', '.3mf', '.amf', '.brep', '.brp', '.dae', '.fbx', '.glb', '.gltf', '.iges', '.igs', '.obj', '.off', '.ply',
  '.step', '.stl', '.stp', '.x3d',
]);

/**
 * Reads the central directory of a ZIP of size bytes.
 * read(offset, length) returns (a promise of) a Uint8Array of those bytes.
 * @returns {Promise<Array<{name: string, size: number, compressedSize: number, dir: boolean, encrypted: boolean}>>}
 */
export async function readZipDirectory(size, read) {
  if (!Number.isSafeInteger(size) || size < EOCD_SIZE) throw new ZipError('not a ZIP archive: the file is too short');
  const tailStart = Math.max(0, size - (EOCD_SIZE + MAX_COMMENT));
  const tail = await readExactly(read, tailStart, size - tailStart);
  const dv = view(tail);
  // The end record is the last signature whose comment reaches exactly to
  // the end; scanning backwards finds it first.
  let at = -1;
  for (let i = tail.length - EOCD_SIZE; i >= 0; i--) {
    if (dv.getUint32(i, true) === SIG_EOCD && i + EOCD_SIZE + dv.getUint16(i + 20, true) === tail.length) {
      at = i;
      break;
    }
  }
  if (at < 0) throw new ZipError('not a ZIP archive: no end of central directory record');
  let entries = dv.getUint16(at + 10, true);
  let dirSize = dv.getUint32(at + 12, true);
  let dirOffset = dv.getUint32(at + 16, true);
  if (dv.getUint16(at + 4, true) !== 0 || dv.getUint16(at + 6, true) !== 0 || dv.getUint16(at + 8, true) !== entries) {
    throw new ZipError('split (multi-part) ZIP archives are not supported');
  }
  if (entries === 0xffff || dirSize === 0xffffffff || dirOffset === 0xffffffff) {
    ({ entries, dirSize, dirOffset } = await zip64End(read, size, tailStart + at));
  }
  if (entries > LIMITS.entries) throw new ZipError(`the ZIP has ${entries} entries, more than ${LIMITS.entries}`);
  if (dirSize > LIMITS.directoryBytes) throw new ZipError('the ZIP directory is too large');
  if (dirOffset + dirSize > size) throw new ZipError('the ZIP directory lies outside the file: is it truncated?');
  const dir = await readExactly(read, dirOffset, dirSize);
  return parseDirectory(dir, entries);
}

async function zip64End(read, size, eocdAt) {
  if (eocdAt < 20) throw new ZipError('the ZIP64 locator is missing');
  const loc = view(await readExactly(read, eocdAt - 20, 20));
  if (loc.getUint32(0, true) !== SIG_LOCATOR64) throw new ZipError('the ZIP64 locator is missing');
  const recAt = u64(loc, 8);
  if (recAt + 56 > size) throw new ZipError('the ZIP64 end record lies outside the file');
  const rec = view(await readExactly(read, recAt, 56));
  if (rec.getUint32(0, true) !== SIG_EOCD64) throw new ZipError('the ZIP64 end record is broken');
  return { entries: u64(rec, 32), dirSize: u64(rec, 40), dirOffset: u64(rec, 48) };
}

function parseDirectory(dir, entries) {
  const dv = view(dir);
  const out = [];
  let off = 0;
  for (let k = 0; k < entries; k++) {
    if (off + 46 > dir.length || dv.getUint32(off, true) !== SIG_CENTRAL) {
      throw new ZipError(`entry ${k} of the ZIP directory is broken`);
    }
    const flags = dv.getUint16(off + 8, true);
    let compressedSize = dv.getUint32(off + 20, true);
    let size = dv.getUint32(off + 24, true);
    const nameLen = dv.getUint16(off + 28, true);
    const extraLen = dv.getUint16(off + 30, true);
    const commentLen = dv.getUint16(off + 32, true);
    const end = off + 46 + nameLen + extraLen + commentLen;
    if (end > dir.length) throw new ZipError(`entry ${k} of the ZIP directory runs past its end`);
    const nameBytes = dir.subarray(off + 46, off + 46 + nameLen);
    // Bit 11 marks UTF-8; most archivers write UTF-8 or plain ASCII either way.
    const name = new TextDecoder('utf-8').decode(nameBytes);
    if (size === 0xffffffff || compressedSize === 0xffffffff) {
      ({ size, compressedSize } = zip64Sizes(dir.subarray(off + 46 + nameLen, off + 46 + nameLen + extraLen), size, compressedSize));
    }
    out.push({ name, size, compressedSize, dir: name.endsWith('/'), encrypted: (flags & 1) !== 0 });
    off = end;
  }
  return out;
}

// zip64Sizes reads the ZIP64 extra field (0x0001): the 64-bit values of the
// fields that hold 0xffffffff, uncompressed size first.
function zip64Sizes(extra, size, compressedSize) {
  const dv = view(extra);
  for (let p = 0; p + 4 <= extra.length;) {
    const id = dv.getUint16(p, true);
    const len = dv.getUint16(p + 2, true);
    if (p + 4 + len > extra.length) break;
    if (id === 0x0001) {
      let q = p + 4;
      if (size === 0xffffffff && q + 8 <= p + 4 + len) {
        size = u64(dv, q);
        q += 8;
      }
      if (compressedSize === 0xffffffff && q + 8 <= p + 4 + len) compressedSize = u64(dv, q);
      break;
    }
    p += 4 + len;
  }
  return { size, compressedSize };
}

/**
 * The entries a startPath may name: files with a model extension, outside
 * hidden directories and macOS's __MACOSX resource forks (the server skips
 * them too), shallowest first, then by name.
 */
export function modelEntries(entries, extensions = MODEL_EXTENSIONS) {
  const exts = new Set(extensions.map((e) => e.toLowerCase()));
  return entries
    .filter((e) => !e.dir && !hidden(e.name) && exts.has(extension(e.name)))
    .sort((a, b) => depth(a.name) - depth(b.name) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** The lower-case extension of a path, with its dot; '' when none. */
export function extension(name) {
  const base = name.slice(name.lastIndexOf('/') + 1);
  const dot = base.lastIndexOf('.');
  return dot > 0 ? base.slice(dot).toLowerCase() : '';
}

function hidden(name) {
  return name.split('/').some((e) => e.startsWith('.') || e === '__MACOSX');
}

function depth(name) {
  return name.split('/').length;
}

/** Whether a file, by its name, is a ZIP archive. */
export function isZipName(name) {
  return extension(name) === '.zip';
}

async function readExactly(read, offset, length) {
  const b = await read(offset, length);
  if (!(b instanceof Uint8Array) || b.length !== length) throw new ZipError('the ZIP could not be read: it ended early');
  return b;
}

function view(b) {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function u64(dv, at) {
  const lo = dv.getUint32(at, true);
  const hi = dv.getUint32(at + 4, true);
  if (hi >= 0x200000) throw new ZipError('the ZIP has an offset or size too large to handle');
  return hi * 0x100000000 + lo;
}

/** A read function over a browser File or Blob, for readZipDirectory. */
export function blobReader(blob) {
  return async (offset, length) => new Uint8Array(await blob.slice(offset, offset + length).arrayBuffer());
}
