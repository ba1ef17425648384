// The Web Worker that owns the engine: model, data, training loop,
// generation and export all run here, so the page never freezes.
// Protocol: the page posts {type, ...}; every reply is {type, ...} (see
// ARCHITECTURE.md, "Worker messages"). Engine calls run one at a time
// through `queue`, so generation can slot in between training steps.

// Two builds of the engine (scripts/build-web.sh): ./pkg has WebGPU and a
// one-thread CPU fallback; ./pkg-threads runs the CPU on a pool of Web
// Workers sharing its memory, which needs a cross-origin isolated page.
let wasm = null; // the loaded module: {Engine, version, ...}
let engine = null;
let memory = null; // the wasm instance's memory, reported with results
let modelFile = null; // the loaded base's GGUF file name, for the Modelfile (none for safetensors)
let lastData = null; // {file, blob, request} of the data read last, for the TRL hand-off
let dead = false; // after a panic only the fatal message goes out
let queue = Promise.resolve();
const run = { active: false, starting: false, wake: null, steps: 0, saveEvery: 0, model: null, dataFile: null };
// The model and data file chosen last; a run takes them as it starts (the
// person may choose another data file while it goes).
const inputs = { model: null, dataFile: null };

// A panic aborts the wasm instance: tell the page, which restarts us.
globalThis.tabtunePanic = (message) => {
  post({ type: 'fatal', message: `engine panicked: ${message}` });
  dead = true;
};

// Every reply carries the engine's memory (the wasm heap, which only grows),
// so the page can show what a model or a data file costs; on WebGPU also the
// bytes of its GPU buffers, now and at their peak.
function post(msg, transfer) {
  if (dead) return;
  const gpu = gpuWork.installed ? { gpuMemory: gpuWork.bytes, gpuPeak: gpuWork.peak } : {};
  self.postMessage({ ...msg, memory: memory ? memory.buffer.byteLength : 0, ...gpu }, transfer || []);
}

// Where a merged model is written as it is made: a file of its own in the
// origin's private file system (OPFS), through a synchronous handle
// (workers only), so the pieces go to disk; without OPFS (some private
// windows), the pieces as one Blob in this worker's memory. The files stay
// until the next time the page starts (forgetMerged), since a download may
// still be reading one.
const MERGED_PREFIX = 'tabtune-merged-';
let mergedCount = 0;

async function forgetMerged() {
  try {
    const root = await navigator.storage.getDirectory();
    const old = [];
    for await (const key of root.keys()) if (key.startsWith(MERGED_PREFIX)) old.push(key);
    for (const key of old) await root.removeEntry(key).catch(() => {});
  } catch { /* no OPFS: nothing kept */ }
}

async function fileSink(name) {
  try {
    const root = await navigator.storage.getDirectory();
    const stored = `${MERGED_PREFIX}${Date.now()}-${mergedCount++}-${name}`;
    const handle = await root.getFileHandle(stored, { create: true });
    const access = await handle.createSyncAccessHandle();
    let at = 0;
    return {
      where: 'disk',
      write(piece) { at += access.write(piece, { at }); },
      async finish() {
        try { access.flush(); } finally { access.close(); }
        return handle.getFile();
      },
      async abort() {
        try { access.close(); } catch { /* closed already */ }
        await root.removeEntry(stored).catch(() => {});
      },
    };
  } catch {
    const parts = [];
    return {
      where: 'memory',
      write(piece) { parts.push(piece); },
      async finish() { return new Blob(parts); },
      async abort() { parts.length = 0; },
    };
  }
}

// The run's last checkpoint, kept in the origin's private file system
// (OPFS) as two files: the engine's checkpoint (a safetensors file of the
// whole run state) and a few words about it for the page, which offers to
// resume from it after a reload, a crash or a lost GPU. Each is written
// whole or not at all (createWritable commits on close). Nothing leaves the
// machine.
const CHECKPOINT = 'tabtune-run.safetensors';
const CHECKPOINT_INFO = 'tabtune-run.json';

async function writeFile(name, data) {
  const root = await navigator.storage.getDirectory();
  const handle = await root.getFileHandle(name, { create: true });
  if (handle.createWritable) {
    const w = await handle.createWritable();
    await w.write(data);
    await w.close();
    return;
  }
  const access = await handle.createSyncAccessHandle();
  try {
    const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
    access.truncate(0);
    access.write(bytes, { at: 0 });
    access.flush();
  } finally {
    access.close();
  }
}

async function readFile(name) {
  const root = await navigator.storage.getDirectory();
  return (await root.getFileHandle(name)).getFile();
}

// The stored checkpoint's description, or null.
async function storedCheckpoint() {
  try {
    return JSON.parse(await (await readFile(CHECKPOINT_INFO)).text());
  } catch {
    return null;
  }
}

async function forgetCheckpoint() {
  try {
    const root = await navigator.storage.getDirectory();
    for (const name of [CHECKPOINT_INFO, CHECKPOINT]) await root.removeEntry(name).catch(() => {});
  } catch { /* no OPFS: nothing stored */ }
  post({ type: 'checkpoint', info: null });
}

// Stores the run's state; the page learns the step. A checkpoint that
// cannot be stored is an error in the page, and the run goes on.
async function saveCheckpoint() {
  try {
    const c = await serial(() => engine.checkpoint());
    const info = {
      step: c.step, steps: run.steps, model: run.model, dataFile: run.dataFile,
      backend: engine.backend(), bytes: c.bytes.length, savedAt: new Date().toISOString(),
    };
    await writeFile(CHECKPOINT, c.bytes);
    await writeFile(CHECKPOINT_INFO, JSON.stringify(info));
    post({ type: 'checkpoint', info });
  } catch (e) {
    post({ type: 'error', where: 'checkpoint', message: `the run's checkpoint could not be stored in this browser: ${message(e)}` });
  }
}

function serial(fn) {
  const next = queue.then(fn, fn);
  queue = next.catch(() => {});
  return next;
}

// GPU work the engine submits, counted where it meets WebGPU: every compute
// dispatch (a kernel launch, also counted by kernel name) and every buffer
// copy. Each step reports its own share, so the page and the benchmark show
// launches per step and which kernels they are. And the bytes of the GPU
// buffers the engine holds (made and not yet destroyed; burn's allocator
// keeps its buffers for reuse, so this is what it has taken from the GPU),
// and their peak: WebGPU reports no memory use of its own.
const gpuWork = {
  dispatches: 0, copies: 0, kernels: new Map(), installed: false, bytes: 0, peak: 0, sizes: new WeakMap(),
};
function countGpuWork() {
  if (gpuWork.installed || typeof GPUComputePassEncoder === 'undefined') return;
  gpuWork.installed = true;
  const wrap = (proto, name, fn) => {
    const original = proto[name];
    proto[name] = function counted(...args) {
      return fn.call(this, original, args);
    };
  };
  // The engine labels shader modules with the kernel's name; its pipelines carry none.
  wrap(GPUDevice.prototype, 'createComputePipeline', function label(original, args) {
    const pipeline = original.apply(this, args);
    pipeline.tabtuneKernel = args[0]?.compute?.module?.label || pipeline.label || 'unnamed';
    return pipeline;
  });
  wrap(GPUComputePassEncoder.prototype, 'setPipeline', function pipeline(original, args) {
    this.tabtuneKernel = args[0]?.tabtuneKernel || 'unnamed';
    return original.apply(this, args);
  });
  for (const name of ['dispatchWorkgroups', 'dispatchWorkgroupsIndirect']) {
    wrap(GPUComputePassEncoder.prototype, name, function dispatch(original, args) {
      gpuWork.dispatches += 1;
      const kernel = this.tabtuneKernel || 'unnamed';
      gpuWork.kernels.set(kernel, (gpuWork.kernels.get(kernel) || 0) + 1);
      return original.apply(this, args);
    });
  }
  wrap(GPUCommandEncoder.prototype, 'copyBufferToBuffer', function copy(original, args) {
    gpuWork.copies += 1;
    return original.apply(this, args);
  });
  wrap(GPUDevice.prototype, 'createBuffer', function made(original, args) {
    const buffer = original.apply(this, args);
    const size = Number(args[0]?.size) || 0;
    gpuWork.sizes.set(buffer, size);
    gpuWork.bytes += size;
    gpuWork.peak = Math.max(gpuWork.peak, gpuWork.bytes);
    return buffer;
  });
  wrap(GPUBuffer.prototype, 'destroy', function destroyed(original, args) {
    gpuWork.bytes -= gpuWork.sizes.get(this) || 0;
    gpuWork.sizes.delete(this);
    return original.apply(this, args);
  });
}

// wgpu reports a lost device once; every later read fails with "poisoned".
const DEVICE_LOST = /poison|device.{0,20}lost/i;

function message(e) {
  if (e instanceof WebAssembly.RuntimeError) return `the engine stopped (${e.message}); see the error above`;
  return e && e.message ? e.message : String(e);
}

// A trap (WebAssembly.RuntimeError) ends the engine: say what happened, in
// memory terms when an allocation was refused, and let the page restart us.
function trapped(e) {
  if (!(e instanceof WebAssembly.RuntimeError)) return false;
  let failed = 0;
  let live = 0;
  try {
    [failed, live] = wasm.memoryFailure();
  } catch { /* the module cannot answer */ }
  const mb = (n) => `${(n / 1e6).toFixed(0)} MB`;
  const text = failed
    ? `the engine ran out of memory: it asked for ${mb(failed)} more with ${mb(live)} in use, and a page's WebAssembly can address 4 GiB at most. Reduce the batch, the sequence length or the rank, or load the model with base weights quantized to Q8_0 or Q4_0`
    : `the engine stopped on a fault (${e.message})`;
  post({ type: 'fatal', message: text });
  dead = true;
  return true;
}

async function load(path) {
  const module = await import(path);
  memory = (await module.default()).memory;
  wasm = module;
  return module;
}

// The GPU adapter's name, or why WebGPU cannot be used here.
async function webgpuAdapter() {
  if (!('gpu' in navigator) || !navigator.gpu) return { missing: 'this browser does not offer WebGPU' };
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) return { missing: 'WebGPU is present but no GPU adapter is available' };
  if (!adapter.features.has('timestamp-query')) return { missing: 'the GPU adapter lacks the timestamp-query feature that the engine needs' };
  const info = adapter.info || {};
  const name = [info.vendor, info.architecture, info.description].filter(Boolean).join(' ') || 'unnamed adapter';
  return { name: `${name}${adapter.isFallbackAdapter || info.isFallbackAdapter ? ' (a software fallback adapter)' : ''}` };
}

// The CPU engine on `threads` threads where the page allows it; the reason
// says how many it got and why.
async function cpuEngine(threads, why) {
  if (threads > 1 && globalThis.crossOriginIsolated) {
    const m = await load('./pkg-threads/tabtune.js');
    await m.initThreadPool(threads);
    return { engine: m.Engine.cpu(), threads, reason: `${why}; ${threads} threads` };
  }
  const m = await load('./pkg/tabtune.js');
  const one = threads > 1
    ? 'one thread: the page is not cross-origin isolated (its server must send COOP/COEP headers)'
    : 'one thread, as chosen';
  return { engine: m.Engine.cpu(), threads: 1, reason: `${why}; ${one}` };
}

async function chooseBackend(preference, threads) {
  if (preference === 'cpu') return cpuEngine(threads, 'CPU chosen in the settings');
  const gpu = await webgpuAdapter();
  let reason = gpu.missing;
  if (!reason) {
    const m = await load('./pkg/tabtune.js');
    try {
      const engine = await m.Engine.webgpu();
      // The largest buffer the device can make: the engine refuses models and runs that need more.
      const mib = Math.floor((engine.maxBuffer() || 0) / 2 ** 20);
      return { engine, threads: 1, reason: `WebGPU on ${gpu.name}; buffers up to ${mib} MiB` };
    } catch (e) {
      reason = `WebGPU failed to start (${message(e)})`;
    }
  }
  if (preference === 'webgpu') throw new Error(`WebGPU was asked for, but ${reason}`);
  return cpuEngine(threads, `running on the CPU: ${reason}`);
}

// The loop only moves the session on and times it: what each step does,
// validation, pause and stop are the engine's (Session::advance).
async function trainLoop(from) {
  run.active = true;
  let active = 0; // ms spent stepping, pauses excluded
  let tokens = 0;
  let done = from; // steps taken (a resumed run's from its checkpoint)
  try {
    for (;;) {
      const t0 = performance.now();
      let before;
      const p = await serial(() => {
        // Taken in the queue, so generation queued before the step is not counted in it.
        before = { dispatches: gpuWork.dispatches, copies: gpuWork.copies };
        gpuWork.kernels.clear();
        return engine.advance();
      });
      if (p.kind === 'step') {
        active += performance.now() - t0;
        tokens += p.tokens;
        done = p.step;
        post({
          type: 'step',
          report: p,
          // Zero on the CPU engine.
          gpu: {
            dispatches: gpuWork.dispatches - before.dispatches,
            copies: gpuWork.copies - before.copies,
            kernels: Object.fromEntries(gpuWork.kernels),
          },
          elapsedMs: active,
          tokensPerSecond: tokens / (active / 1000),
          etaMs: (active / (done - from)) * (p.steps - done),
        });
        if (run.saveEvery && p.step % run.saveEvery === 0 && p.step < p.steps) await saveCheckpoint();
      } else if (p.kind === 'validation') {
        post({ type: 'validation', ...p, best: await serial(() => engine.best()) });
      } else if (p.kind === 'samples') {
        post({ type: 'samples', ...p });
      } else if (p.kind === 'paused') {
        post({ type: 'paused' });
        // Waiting from now: a resume or stop while the checkpoint is written still wakes it.
        const woken = new Promise((resolve) => { run.wake = resolve; });
        await saveCheckpoint();
        await woken;
        run.wake = null;
      } else if (p.kind === 'finished') {
        // Kept after the end too: a reload then gets the trained adapter back.
        await saveCheckpoint();
        post({ type: 'finished', stopped: p.stopped, steps: p.steps, reason: p.reason, early: p.early });
        return;
      }
      // Let pause/stop/generate messages in between steps.
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  } catch (e) {
    if (trapped(e)) return;
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

function wake() {
  if (run.wake) run.wake();
}

const handlers = {
  async init({ backend, threads }) {
    await forgetMerged();
    const chosen = await chooseBackend(backend || 'auto', Math.max(1, Number(threads) || 1));
    engine = chosen.engine;
    if (engine.backend() === 'webgpu') countGpuWork();
    const { Engine } = wasm;
    post({
      type: 'ready', backend: engine.backend(), reason: chosen.reason, threads: chosen.threads, version: wasm.version(),
      settings: Engine.settings(), presets: Engine.presets(), hubFiles: Engine.hubFiles(), badLines: Engine.badLinesChoices(),
      checkpoint: await storedCheckpoint(),
    });
  },
  // `files`: the person's File objects, or {name, bytes} from the hub. The
  // engine says which of them make a model; only those are read.
  async loadFiles({ name, files, baseWeights }) {
    const chosen = wasm.Engine.modelFiles(files.map((f) => f.name));
    const names = chosen.kind === 'gguf' ? [chosen.file] : chosen.files;
    const picked = names.map((n) => files.find((f) => f.name === n));
    const bytes = await Promise.all(picked.map(async (f) => new Uint8Array(f instanceof Blob ? await f.arrayBuffer() : f.bytes)));
    const info = await serial(() => engine.loadModel(name, names, bytes, baseWeights || 'stored'));
    inputs.model = name;
    // The base's file, which the llama.cpp / Ollama download's Modelfile names.
    modelFile = chosen.kind === 'gguf' ? chosen.file : null;
    post({ type: 'model', info });
  },
  checkSettings({ values }) {
    post({ type: 'settings-check', errors: wasm.Engine.checkSettings(values) });
  },
  // The File is read a slice at a time inside the engine (FileReaderSync),
  // so a file of any size is never copied into memory whole.
  async data({ file, blob, request }) {
    let shown = 0;
    const progress = (read, size) => {
      const now = performance.now();
      if (now - shown < 250 && read < size) return;
      shown = now;
      post({ type: 'data-progress', file, read, size });
    };
    const report = await serial(() => engine.prepareData(file, blob, request, progress));
    // Kept for the TRL hand-off, which reads the file's records again.
    lastData = { file, blob, request };
    inputs.dataFile = file;
    post({ type: 'data', ...report });
  },
  async start({ settings, badLines, prompts }) {
    if (run.active || run.starting) throw new Error('a run is already going');
    run.starting = true;
    try {
      await serial(() => engine.setPrompts(prompts || []));
      const info = await serial(() => engine.start(settings, badLines));
      Object.assign(run, { steps: info.steps, saveEvery: info.save_every, ...inputs });
      // The run stored before is the one this replaces (the page asked
      // first when its adapter was not downloaded).
      await forgetCheckpoint();
      post({ type: 'started', info });
    } finally {
      run.starting = false;
    }
    trainLoop(0);
  },
  // The stored run, on the model and data chosen now (the engine refuses
  // others), from the step it was saved at.
  async resumeRun({ prompts }) {
    if (run.active || run.starting) throw new Error('a run is already going');
    run.starting = true;
    let r;
    try {
      await serial(() => engine.setPrompts(prompts || []));
      const bytes = new Uint8Array(await (await readFile(CHECKPOINT)).arrayBuffer());
      r = await serial(() => engine.resumeFrom('the stored run', bytes));
      Object.assign(run, { steps: r.info.steps, saveEvery: r.info.save_every, ...inputs });
      post({ type: 'started', info: r.info, history: r.history, validations: r.validations, best: r.best });
    } finally {
      run.starting = false;
    }
    trainLoop(r.info.resumed_at);
  },
  async discardCheckpoint() {
    await forgetCheckpoint();
  },
  async pause() {
    if (run.active) await serial(() => engine.pause());
  },
  async resume() {
    if (!run.active) return;
    await serial(() => engine.resume());
    post({ type: 'resumed' });
    wake();
  },
  async stop() {
    if (!run.active) return;
    await serial(() => engine.stop());
    wake();
  },
  async generate({ id, prompt, maxTokens, tuned }) {
    const text = await serial(() => engine.generate(prompt, maxTokens, tuned,
      (piece) => post({ type: 'gen-text', id, text: piece })));
    post({ type: 'gen-done', id, text });
  },
  selfTestPanic() {
    engine.selfTestPanic();
  },
  selfTestExhaustMemory() {
    engine.selfTestExhaustMemory();
  },
  // Our GPU kernels against their Rust twins on this device (the browser suite).
  async selfTestKernels() {
    // Which kernels the check launched, so the report shows it ran ours.
    gpuWork.kernels.clear();
    const report = await serial(() => engine.selfTestKernels());
    post({ type: 'self-test', checks: JSON.parse(report), kernels: Object.fromEntries(gpuWork.kernels) });
  },
  // The adapter of the best validation loss. Not read back against the live
  // adapter (that is the last one, not this).
  async exportBest({ baseModel }) {
    const zip = await serial(() => engine.exportBestZip(baseModel));
    post({ type: 'zip', bytes: zip.buffer, file: 'tabtune-adapter-best.zip', kind: 'best', check: null }, [zip.buffer]);
  },
  async export({ baseModel }) {
    const zip = await serial(() => engine.exportZip(baseModel));
    // The download read back before it is handed over (it is then moved).
    const check = await serial(() => engine.checkDownload(zip));
    post({ type: 'zip', bytes: zip.buffer, file: 'tabtune-adapter.zip', kind: 'peft', check }, [zip.buffer]);
  },
  // The merged model streams to a file on disk a piece at a time
  // (fileSink), then goes to the page as that file: neither this worker nor
  // the page holds it, next to the model it came from.
  async exportMerged({ kind, format: type }) {
    const name = kind === 'gguf' ? `tabtune-merged.${type.toUpperCase()}.gguf` : `tabtune-merged-${type}.zip`;
    const sink = await fileSink(name);
    let written = 0;
    let told = 0;
    try {
      await serial(() => engine.exportMerged(kind, type, (piece) => {
        sink.write(piece);
        written += piece.length;
        if (written - told >= 32 * 2 ** 20) {
          told = written;
          post({ type: 'merged-progress', kind, written });
        }
      }));
    } catch (e) {
      await sink.abort();
      throw e;
    }
    let file;
    try {
      file = await sink.finish();
    } catch (e) {
      await sink.abort();
      throw e;
    }
    // Read back as a model for the self-check when that fits beside the live
    // one: the file's bytes copied in, unzipped, and the model made from them
    // in f32 (up to 4 times a 16-bit zip's size), within what is left of
    // wasm32's 4 GiB (the module's size so far counted as used).
    const used = memory ? memory.buffer.byteLength : 0;
    let check;
    if (4 * file.size < 0.8 * (4 * 2 ** 30 - used)) {
      try {
        const bytes = new Uint8Array(await file.arrayBuffer());
        check = await serial(() => engine.checkMerged(kind, type, bytes));
      } catch (e) {
        // The file is written: the download goes ahead, the line says why it was not checked.
        check = { passed: false, message: `self-check FAILED: ${name} could not be read back: ${message(e)}` };
      }
    } else {
      check = {
        passed: null,
        message: `self-check skipped: reading ${name} (${(file.size / 1e6).toFixed(0)} MB) back as a model would not fit in the page's memory beside the one loaded; \`tabtune export --merged${kind === 'gguf' ? '-gguf' : ''}\` checks the same file`,
      };
    }
    post({ type: 'merged', kind, file, name, size: file.size, where: sink.where, check });
  },
  async exportRecipe({ baseModel }) {
    if (!lastData) throw new Error('choose the data file first');
    const { file, blob, request } = lastData;
    const zip = await serial(() => engine.exportRecipe(baseModel, file, blob, request));
    post({ type: 'zip', bytes: zip.buffer, file: 'tabtune-trl.zip', kind: 'trl', check: null }, [zip.buffer]);
  },
  async exportGguf() {
    const zip = await serial(() => engine.exportGgufZip(modelFile ?? undefined));
    const check = await serial(() => engine.checkDownload(zip));
    post({ type: 'zip', bytes: zip.buffer, file: 'tabtune-adapter-gguf.zip', kind: 'gguf', check }, [zip.buffer]);
  },
};

// A trap inside an engine promise (a training step, a checkpoint, an
// export) surfaces here, not in the handler that awaits it.
self.addEventListener('error', (e) => {
  if (trapped(e.error)) e.preventDefault();
});
self.addEventListener('unhandledrejection', (e) => {
  if (trapped(e.reason)) e.preventDefault();
});

self.onmessage = async ({ data }) => {
  const handler = handlers[data.type];
  if (!handler) {
    post({ type: 'error', where: data.type, message: `unknown request ${data.type}` });
    return;
  }
  try {
    await handler(data);
  } catch (e) {
    if (trapped(e)) return;
    const text = message(e);
    if (engine && engine.backend() === 'webgpu' && DEVICE_LOST.test(text)) {
      post({ type: 'fatal', message: `the GPU device was lost (${text})` });
      dead = true;
      return;
    }
    post({ type: 'error', where: data.type, id: data.id, message: text });
  }
};
