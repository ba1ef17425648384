// The Web Worker that owns the engine: model, data, training loop,
// generation and export all run here, so the page never freezes.
// Protocol: the page posts {type, ...}; every reply is {type, ...} (see
// ARCHITECTURE.md, "Worker messages"). Engine calls run one at a time
// through `queue`, so generation can slot in between training steps.

import init, { Engine, version } from './pkg/tabtune.js';

let engine = null;
let memory = null; // the wasm instance's memory, reported with results
let dead = false; // after a panic only the fatal message goes out
let queue = Promise.resolve();
const run = { active: false, paused: false, stop: false, resume: null };

// A panic aborts the wasm instance: tell the page, which restarts us.
globalThis.tabtunePanic = (message) => {
  post({ type: 'fatal', message: `engine panicked: ${message}` });
  dead = true;
};

// Every reply carries the engine's memory (the wasm heap, which only grows),
// so the page can show what a model or a data file costs.
function post(msg, transfer) {
  if (!dead) self.postMessage({ ...msg, memory: memory ? memory.buffer.byteLength : 0 }, transfer || []);
}

function serial(fn) {
  const next = queue.then(fn, fn);
  queue = next.catch(() => {});
  return next;
}

// wgpu reports a lost device once; every later read fails with "poisoned".
const DEVICE_LOST = /poison|device.{0,20}lost/i;

function message(e) {
  if (e instanceof WebAssembly.RuntimeError) return `the engine stopped (${e.message}); see the error above`;
  return e && e.message ? e.message : String(e);
}

async function chooseBackend(preference) {
  if (preference === 'cpu') return { engine: Engine.cpu(), reason: 'CPU chosen in the settings' };
  let reason;
  if (!('gpu' in navigator) || !navigator.gpu) {
    reason = 'this browser does not offer WebGPU';
  } else {
    const adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) {
      reason = 'WebGPU is present but no GPU adapter is available';
    } else if (!adapter.features.has('timestamp-query')) {
      reason = 'the GPU adapter lacks the timestamp-query feature that the engine needs';
    } else {
      const info = adapter.info || {};
      const name = [info.vendor, info.architecture, info.description].filter(Boolean).join(' ') || 'unnamed adapter';
      try {
        return { engine: await Engine.webgpu(), reason: `WebGPU on ${name}${adapter.isFallbackAdapter || info.isFallbackAdapter ? ' (a software fallback adapter)' : ''}` };
      } catch (e) {
        reason = `WebGPU failed to start (${message(e)})`;
      }
    }
  }
  if (preference === 'webgpu') throw new Error(`WebGPU was asked for, but ${reason}`);
  return { engine: Engine.cpu(), reason: `running on the CPU: ${reason}` };
}

async function validation(when, tuned) {
  const v = await serial(() => engine.validate(tuned));
  post({ type: 'validation', when, ...v });
}

async function trainLoop(steps, held) {
  run.active = true;
  run.stop = false;
  run.paused = false;
  let active = 0; // ms spent stepping, pauses excluded
  let tokens = 0;
  let done = 0;
  try {
    if (held) await validation('before', false);
    while (done < steps && !run.stop) {
      if (run.paused) {
        post({ type: 'paused' });
        await new Promise((resolve) => { run.resume = resolve; });
        run.resume = null;
        if (run.stop) break;
        post({ type: 'resumed' });
      }
      const t0 = performance.now();
      const report = await serial(() => engine.step());
      active += performance.now() - t0;
      tokens += report.tokens;
      done = report.step;
      const perStep = active / done;
      post({
        type: 'step',
        report,
        elapsedMs: active,
        tokensPerSecond: tokens / (active / 1000),
        etaMs: perStep * (steps - done),
      });
      // Let pause/stop/generate messages in between steps.
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    if (held && done > 0) await validation('after', true);
    post({ type: 'finished', stopped: done < steps, steps: done });
  } catch (e) {
    const text = message(e);
    if (engine.backend() === 'webgpu' && DEVICE_LOST.test(text)) {
      post({ type: 'fatal', message: `the GPU device was lost after ${done} steps (${text})` });
      dead = true;
      return;
    }
    post({ type: 'error', where: 'train', message: text });
    post({ type: 'finished', stopped: true, steps: done });
  } finally {
    run.active = false;
  }
}

const handlers = {
  async init({ backend }) {
    memory = (await init()).memory;
    const chosen = await chooseBackend(backend || 'auto');
    engine = chosen.engine;
    post({ type: 'ready', backend: engine.backend(), reason: chosen.reason, version: version() });
  },
  async loadGguf({ name, bytes }) {
    const info = await serial(() => engine.loadGguf(name, new Uint8Array(bytes)));
    post({ type: 'model', info });
  },
  async loadHf({ name, files }) {
    const u8 = (b) => (b ? new Uint8Array(b) : undefined);
    const info = await serial(() => engine.loadHf(name, u8(files.config), u8(files.weights),
      u8(files.tokenizer), u8(files.tokenizer_config), u8(files.chat_template)));
    post({ type: 'model', info });
  },
  // The File is read a slice at a time inside the engine (FileReaderSync),
  // so a file of any size is never copied into memory whole.
  async data({ file, blob, seqLen, format, columns, allTokens }) {
    let shown = 0;
    const progress = (read, size) => {
      const now = performance.now();
      if (now - shown < 250 && read < size) return;
      shown = now;
      post({ type: 'data-progress', file, read, size });
    };
    const summary = await serial(() => engine.prepareData(file, blob, seqLen, format, columns, !!allTokens, progress));
    post({ type: 'data', summary });
  },
  async start({ settings }) {
    if (run.active) throw new Error('a run is already going');
    const info = await serial(() => engine.start(settings));
    post({ type: 'started', info });
    trainLoop(info.steps, info.validation_examples > 0);
  },
  pause() {
    if (run.active) run.paused = true;
  },
  resume() {
    run.paused = false;
    if (run.resume) run.resume();
  },
  stop() {
    run.stop = true;
    run.paused = false;
    if (run.resume) run.resume();
  },
  async generate({ id, prompt, maxTokens, tuned }) {
    const text = await serial(() => engine.generate(prompt, maxTokens, tuned,
      (piece) => post({ type: 'gen-text', id, text: piece })));
    post({ type: 'gen-done', id, text });
  },
  selfTestPanic() {
    engine.selfTestPanic();
  },
  async export({ baseModel }) {
    const zip = await serial(() => engine.exportZip(baseModel));
    post({ type: 'zip', bytes: zip.buffer }, [zip.buffer]);
  },
};

self.onmessage = async ({ data }) => {
  const handler = handlers[data.type];
  if (!handler) {
    post({ type: 'error', where: data.type, message: `unknown request ${data.type}` });
    return;
  }
  try {
    await handler(data);
  } catch (e) {
    const text = message(e);
    if (engine && engine.backend() === 'webgpu' && DEVICE_LOST.test(text)) {
      post({ type: 'fatal', message: `the GPU device was lost (${text})` });
      dead = true;
      return;
    }
    post({ type: 'error', where: data.type, id: data.id, message: text });
  }
};
