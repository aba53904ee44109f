// glview.js — a small WebGL viewer for the models glb.js reads: solid
// shading with a headlight, orbit by drag, pan by right- or shift-drag or
// two fingers, zoom by wheel or pinch, fit to view, and the part under the
// pointer, found by drawing part ids into an offscreen buffer.
//
// It draws on demand (after a change), never in a loop, so an idle page
// costs nothing. WebGL 2 when the browser has it, else WebGL 1; the shaders
// are GLSL ES 1.00, which both run.

import { MODE } from './glb.js';
import { multiply, perspective, lookAt, normalMatrix } from './mat4.js';

const VERTEX = `
attribute vec3 aPos;
attribute vec3 aNormal;
uniform mat4 uModel;
uniform mat4 uViewProj;
uniform mat3 uNormal;
varying vec3 vNormal;
varying vec3 vWorld;
void main() {
  vec4 w = uModel * vec4(aPos, 1.0);
  vWorld = w.xyz;
  vNormal = uNormal * aNormal;
  gl_Position = uViewProj * w;
  gl_PointSize = 3.0;
}`;

const SHADE = `
precision mediump float;
uniform vec4 uColor;
uniform vec3 uEye;
uniform float uLit;
uniform float uHighlight;
varying vec3 vNormal;
varying vec3 vWorld;
void main() {
  vec3 base = uColor.rgb;
  if (uLit > 0.5) {
    vec3 n = normalize(vNormal);
    vec3 v = normalize(uEye - vWorld);
    if (!gl_FrontFacing) n = -n;
    float d = abs(dot(n, v));
    float spec = pow(max(dot(reflect(-v, n), v), 0.0), 32.0);
    base = base * (0.28 + 0.72 * d) + vec3(0.12 * spec);
  }
  base = mix(base, vec3(1.0, 0.55, 0.1), uHighlight * 0.55);
  gl_FragColor = vec4(base, uColor.a);
}`;

const PICK = `
precision mediump float;
uniform vec4 uId;
void main() { gl_FragColor = uId; }`;

/** Why a view could not start: no WebGL, or a shader that would not build. */
export class ViewError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ViewError';
  }
}

/** The colour the canvas is cleared to, as CSS and as GL components. */
export const BACKGROUND = Object.freeze({ css: '#eef1f5', gl: [0xee / 255, 0xf1 / 255, 0xf5 / 255, 1] });

const FOV = (40 * Math.PI) / 180;

export class GLView {
  /**
   * canvas: the <canvas> to draw on. onHover(part|null, event) hears the
   * part under the pointer as it changes.
   */
  constructor(canvas, { onHover = () => {} } = {}) {
    this.canvas = canvas;
    this.onHover = onHover;
    const attrs = { antialias: true, preserveDrawingBuffer: true, alpha: false };
    const gl = canvas.getContext('webgl2', attrs) || canvas.getContext('webgl', attrs);
    if (!gl) throw new ViewError('this browser cannot draw WebGL');
    this.gl = gl;
    this.uint32 = typeof WebGL2RenderingContext !== 'undefined' && gl instanceof WebGL2RenderingContext
      ? true : !!gl.getExtension('OES_element_index_uint');
    this.shade = program(gl, VERTEX, SHADE);
    this.pick = program(gl, VERTEX, PICK);
    this.model = null;
    this.draws = [];
    this.hovered = null;
    this.highlighted = null;
    this.cam = { target: [0, 0, 0], dist: 10, yaw: 0.6, pitch: 0.45, radius: 1 };
    this.frame = 0;
    this.pickFB = null;
    this.pickValid = false;
    this.pointers = new Map();
    this.listen();
    this.resize();
  }

  /** Shows a model from glb.js's readModel and fits it into view. */
  setModel(model) {
    this.clearBuffers();
    this.model = model;
    const gl = this.gl;
    for (const part of model.parts) {
      const nm = normalMatrix(part.world);
      for (const p of part.mesh.primitives) {
        if (p.indices instanceof Uint32Array && !this.uint32) {
          throw new ViewError('the model needs 32-bit indices, which this browser\'s WebGL lacks');
        }
        const d = {
          part, world: part.world, normal: nm, mode: p.mode, color: p.material.color,
          count: p.indices ? p.indices.length : p.positions.length / 3,
          pos: buffer(gl, gl.ARRAY_BUFFER, p.positions),
          nrm: p.normals ? buffer(gl, gl.ARRAY_BUFFER, p.normals) : null,
          idx: p.indices ? buffer(gl, gl.ELEMENT_ARRAY_BUFFER, p.indices) : null,
          idxType: p.indices instanceof Uint32Array ? gl.UNSIGNED_INT : gl.UNSIGNED_SHORT,
        };
        if (d.count > 0) this.draws.push(d);
      }
    }
    // Opaque first, then the translucent, so that they blend over them.
    this.draws.sort((a, b) => (a.color[3] < 1) - (b.color[3] < 1));
    this.fit();
  }

  /** Frames the whole model, from the current direction. */
  fit() {
    this.moved = false;
    const b = this.model?.bounds;
    if (b) {
      this.cam.target = [0, 1, 2].map((c) => (b.min[c] + b.max[c]) / 2);
      this.cam.radius = Math.max(Math.hypot(b.max[0] - b.min[0], b.max[1] - b.min[1], b.max[2] - b.min[2]) / 2, 1e-6);
    }
    const aspect = this.canvas.width / Math.max(1, this.canvas.height);
    // The narrower of the two fields of view decides.
    const half = Math.min(FOV / 2, Math.atan(Math.tan(FOV / 2) * aspect));
    this.cam.dist = (this.cam.radius / Math.sin(half)) * 1.08;
    this.changed();
  }

  /** Marks a part (or null) as highlighted, as the parts list does on hover. */
  highlight(part) {
    if (this.highlighted === part) return;
    this.highlighted = part;
    this.render();
  }

  /** The part drawn at the canvas pixel under a pointer event, or null. */
  partAt(clientX, clientY) {
    if (!this.model) return null;
    const gl = this.gl;
    const rect = this.canvas.getBoundingClientRect();
    const x = Math.floor(((clientX - rect.left) / rect.width) * this.canvas.width);
    const y = Math.floor((1 - (clientY - rect.top) / rect.height) * this.canvas.height);
    if (x < 0 || y < 0 || x >= this.canvas.width || y >= this.canvas.height) return null;
    if (!this.pickValid) this.drawPick();
    gl.bindFramebuffer(gl.FRAMEBUFFER, this.pickFB.fb);
    const px = new Uint8Array(4);
    gl.readPixels(x, y, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, px);
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    const id = px[0] | (px[1] << 8) | (px[2] << 16);
    return id > 0 ? this.model.parts[id - 1] ?? null : null;
  }

  /** Frees the GPU memory and stops listening; the canvas can be dropped. */
  dispose() {
    this.clearBuffers();
    this.abort.abort();
    this.resizeObserver?.disconnect();
    cancelAnimationFrame(this.frame);
    if (this.pickFB) {
      this.gl.deleteFramebuffer(this.pickFB.fb);
      this.gl.deleteTexture(this.pickFB.tex);
      this.gl.deleteRenderbuffer(this.pickFB.depth);
      this.pickFB = null;
    }
  }

  clearBuffers() {
    const gl = this.gl;
    for (const d of this.draws) {
      gl.deleteBuffer(d.pos);
      if (d.nrm) gl.deleteBuffer(d.nrm);
      if (d.idx) gl.deleteBuffer(d.idx);
    }
    this.draws = [];
    this.model = null;
  }

  // ---- camera ----

  changed() {
    this.pickValid = false;
    this.render();
  }

  eye() {
    const { target, dist, yaw, pitch } = this.cam;
    return [
      target[0] + dist * Math.cos(pitch) * Math.sin(yaw),
      target[1] + dist * Math.sin(pitch),
      target[2] + dist * Math.cos(pitch) * Math.cos(yaw),
    ];
  }

  viewProj() {
    const { target, dist, radius } = this.cam;
    const aspect = this.canvas.width / Math.max(1, this.canvas.height);
    const near = Math.max(dist - radius * 1.5, dist / 1000, 1e-6);
    const far = dist + radius * 1.5;
    return multiply(perspective(FOV, aspect, near, far), lookAt(this.eye(), target, [0, 1, 0]));
  }

  orbit(dx, dy) {
    this.moved = true;
    this.cam.yaw -= dx * 0.008;
    this.cam.pitch = Math.max(-1.55, Math.min(1.55, this.cam.pitch + dy * 0.008));
    this.changed();
  }

  zoom(factor) {
    this.moved = true;
    this.cam.dist = Math.max(this.cam.radius * 0.05, Math.min(this.cam.radius * 50, this.cam.dist * factor));
    this.changed();
  }

  // pan moves the target in the view plane by dx, dy CSS pixels.
  pan(dx, dy) {
    this.moved = true;
    const { yaw, pitch, dist } = this.cam;
    const per = (2 * dist * Math.tan(FOV / 2)) / Math.max(1, this.canvas.clientHeight);
    const right = [Math.cos(yaw), 0, -Math.sin(yaw)];
    const up = [-Math.sin(pitch) * Math.sin(yaw), Math.cos(pitch), -Math.sin(pitch) * Math.cos(yaw)];
    for (let c = 0; c < 3; c++) this.cam.target[c] += (-dx * right[c] + dy * up[c]) * per;
    this.changed();
  }

  // ---- input ----

  listen() {
    this.abort = new AbortController();
    const opts = { signal: this.abort.signal };
    const c = this.canvas;
    c.addEventListener('contextmenu', (e) => e.preventDefault(), opts);
    c.addEventListener('pointerdown', (e) => {
      c.setPointerCapture(e.pointerId);
      this.pointers.set(e.pointerId, { x: e.clientX, y: e.clientY, x0: e.clientX, y0: e.clientY, pan: e.button === 2 || e.shiftKey });
    }, opts);
    c.addEventListener('pointerup', (e) => {
      const p = this.pointers.get(e.pointerId);
      this.pointers.delete(e.pointerId);
      // A tap (a touch that did not move) names the part under it, as hover does for a mouse.
      if (p && e.pointerType !== 'mouse' && Math.hypot(e.clientX - p.x0, e.clientY - p.y0) < 6) {
        this.hover(this.partAt(e.clientX, e.clientY), e);
      }
    }, opts);
    c.addEventListener('pointercancel', (e) => this.pointers.delete(e.pointerId), opts);
    c.addEventListener('pointermove', (e) => this.pointerMove(e), opts);
    // A touch pointer leaves as it lifts: the part it tapped stays named.
    c.addEventListener('pointerleave', (e) => {
      if (e.pointerType === 'mouse') this.hover(null);
    }, opts);
    c.addEventListener('wheel', (e) => {
      e.preventDefault();
      const lines = e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? 400 : 1;
      this.zoom(Math.exp(e.deltaY * lines * 0.0015));
    }, { ...opts, passive: false });
    c.addEventListener('dblclick', () => this.fit(), opts);
    c.addEventListener('webglcontextlost', (e) => {
      e.preventDefault(); // so that the browser may restore it
      this.canvas.dataset.state = 'lost';
    }, opts);
    if (typeof ResizeObserver !== 'undefined') {
      this.resizeObserver = new ResizeObserver(() => this.resize());
      this.resizeObserver.observe(c);
    }
  }

  pointerMove(e) {
    const p = this.pointers.get(e.pointerId);
    if (!p) {
      if (e.pointerType === 'mouse') this.hover(this.partAt(e.clientX, e.clientY), e);
      return;
    }
    const dx = e.clientX - p.x;
    const dy = e.clientY - p.y;
    if (this.pointers.size === 2) {
      // Two fingers: the change of their distance zooms, their midpoint pans.
      const [a, b] = [...this.pointers.values()];
      const before = Math.hypot(a.x - b.x, a.y - b.y);
      p.x = e.clientX;
      p.y = e.clientY;
      const after = Math.hypot(a.x - b.x, a.y - b.y);
      if (before > 0 && after > 0) this.zoom(before / after);
      this.pan(dx / 2, dy / 2);
      return;
    }
    p.x = e.clientX;
    p.y = e.clientY;
    if (p.pan || e.shiftKey) this.pan(dx, dy);
    else this.orbit(dx, dy);
  }

  hover(part, e) {
    if (part === this.hovered) return;
    this.hovered = part;
    this.onHover(part, e);
    this.render();
  }

  resize() {
    const dpr = Math.min(window.devicePixelRatio || 1, 2);
    const w = Math.max(1, Math.round(this.canvas.clientWidth * dpr));
    const h = Math.max(1, Math.round(this.canvas.clientHeight * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
      // A view the user has not moved stays fitted to the new shape.
      if (this.model && !this.moved) this.fit();
      else this.changed();
    }
  }

  // ---- drawing ----

  render() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.draw();
    });
  }

  /** Draws now; the page's test hooks and screenshots wait on data-state. */
  draw() {
    const gl = this.gl;
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    gl.viewport(0, 0, this.canvas.width, this.canvas.height);
    gl.clearColor(...BACKGROUND.gl);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    if (!this.model) return;
    gl.enable(gl.DEPTH_TEST);
    gl.disable(gl.CULL_FACE); // CAD exports are not reliably wound
    const prog = this.shade;
    gl.useProgram(prog.p);
    gl.uniformMatrix4fv(prog.u.uViewProj, false, this.viewProj());
    gl.uniform3fv(prog.u.uEye, this.eye());
    const mark = this.highlighted ?? this.hovered;
    let blending = false;
    for (const d of this.draws) {
      const translucent = d.color[3] < 1;
      if (translucent !== blending) {
        blending = translucent;
        if (blending) {
          gl.enable(gl.BLEND);
          gl.blendFunc(gl.SRC_ALPHA, gl.ONE_MINUS_SRC_ALPHA);
          gl.depthMask(false);
        }
      }
      gl.uniform4fv(prog.u.uColor, d.color);
      gl.uniform1f(prog.u.uLit, d.mode === MODE.TRIANGLES ? 1 : 0);
      gl.uniform1f(prog.u.uHighlight, d.part === mark ? 1 : 0);
      this.drawOne(prog, d);
    }
    gl.disable(gl.BLEND);
    gl.depthMask(true);
    this.canvas.dataset.state = 'ready';
  }

  drawPick() {
    const gl = this.gl;
    const w = this.canvas.width;
    const h = this.canvas.height;
    if (!this.pickFB || this.pickFB.w !== w || this.pickFB.h !== h) this.makePickFB(w, h);
    gl.bindFramebuffer(gl.FRAMEBUFFER, this.pickFB.fb);
    gl.viewport(0, 0, w, h);
    gl.clearColor(0, 0, 0, 0);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    gl.enable(gl.DEPTH_TEST);
    gl.disable(gl.BLEND);
    const prog = this.pick;
    gl.useProgram(prog.p);
    gl.disableVertexAttribArray(1); // the pick shader reads no normals
    gl.uniformMatrix4fv(prog.u.uViewProj, false, this.viewProj());
    for (const d of this.draws) {
      const id = d.part.id;
      gl.uniform4f(prog.u.uId, (id & 255) / 255, ((id >> 8) & 255) / 255, ((id >> 16) & 255) / 255, 1);
      this.drawOne(prog, d);
    }
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    this.pickValid = true;
  }

  makePickFB(w, h) {
    const gl = this.gl;
    if (this.pickFB) {
      gl.deleteFramebuffer(this.pickFB.fb);
      gl.deleteTexture(this.pickFB.tex);
      gl.deleteRenderbuffer(this.pickFB.depth);
    }
    const tex = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, tex);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA, w, h, 0, gl.RGBA, gl.UNSIGNED_BYTE, null);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
    const depth = gl.createRenderbuffer();
    gl.bindRenderbuffer(gl.RENDERBUFFER, depth);
    gl.renderbufferStorage(gl.RENDERBUFFER, gl.DEPTH_COMPONENT16, w, h);
    const fb = gl.createFramebuffer();
    gl.bindFramebuffer(gl.FRAMEBUFFER, fb);
    gl.framebufferTexture2D(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.TEXTURE_2D, tex, 0);
    gl.framebufferRenderbuffer(gl.FRAMEBUFFER, gl.DEPTH_ATTACHMENT, gl.RENDERBUFFER, depth);
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    this.pickFB = { fb, tex, depth, w, h };
  }

  drawOne(prog, d) {
    const gl = this.gl;
    gl.uniformMatrix4fv(prog.u.uModel, false, d.world);
    if (prog.u.uNormal) gl.uniformMatrix3fv(prog.u.uNormal, false, d.normal);
    gl.bindBuffer(gl.ARRAY_BUFFER, d.pos);
    gl.enableVertexAttribArray(prog.a.aPos);
    gl.vertexAttribPointer(prog.a.aPos, 3, gl.FLOAT, false, 0, 0);
    if (prog.a.aNormal >= 0) {
      if (d.nrm) {
        gl.bindBuffer(gl.ARRAY_BUFFER, d.nrm);
        gl.enableVertexAttribArray(prog.a.aNormal);
        gl.vertexAttribPointer(prog.a.aNormal, 3, gl.FLOAT, false, 0, 0);
      } else {
        gl.disableVertexAttribArray(prog.a.aNormal);
        gl.vertexAttrib3f(prog.a.aNormal, 0, 0, 1);
      }
    }
    const mode = d.mode === MODE.POINTS ? gl.POINTS : d.mode === MODE.LINES ? gl.LINES : gl.TRIANGLES;
    if (d.idx) {
      gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, d.idx);
      gl.drawElements(mode, d.count, d.idxType, 0);
    } else {
      gl.drawArrays(mode, 0, d.count);
    }
  }
}

function buffer(gl, target, data) {
  const b = gl.createBuffer();
  gl.bindBuffer(target, b);
  gl.bufferData(target, data, gl.STATIC_DRAW);
  return b;
}

function program(gl, vs, fs) {
  const p = gl.createProgram();
  for (const [type, src] of [[gl.VERTEX_SHADER, vs], [gl.FRAGMENT_SHADER, fs]]) {
    const s = gl.createShader(type);
    gl.shaderSource(s, src);
    gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) {
      throw new ViewError(`a shader did not compile: ${gl.getShaderInfoLog(s)}`);
    }
    gl.attachShader(p, s);
  }
  // Fixed locations: attribute 0 is always an enabled array (the positions),
  // and the normals' array can be turned off for the pick pass.
  gl.bindAttribLocation(p, 0, 'aPos');
  gl.bindAttribLocation(p, 1, 'aNormal');
  gl.linkProgram(p);
  if (!gl.getProgramParameter(p, gl.LINK_STATUS)) throw new ViewError(`the shaders did not link: ${gl.getProgramInfoLog(p)}`);
  const u = {};
  for (const name of ['uModel', 'uViewProj', 'uNormal', 'uColor', 'uEye', 'uLit', 'uHighlight', 'uId']) {
    u[name] = gl.getUniformLocation(p, name);
  }
  return { p, u, a: { aPos: gl.getAttribLocation(p, 'aPos'), aNormal: gl.getAttribLocation(p, 'aNormal') } };
}
