// The page's training speed and memory, driven as a person would: the
// default model, the sample chat data (loss on the answers only), fixed
// settings, Start, wait for the end. Run by scripts/bench-browser.sh, which
// puts `tabtune train` on the same data and settings beside it.
//
// Usage: node bench.mjs --batch B --seq-len T --steps N [--variants cpu-threads,cpu-1,webgpu] [--model DIR]
//        [--base-weights stored|q8_0|q4_0]
// Prints one JSON line per variant: tokens/s over steps 2..N (the first step
// warms up), the engine's peak WebAssembly memory (and on WebGPU its GPU
// buffers' peak bytes), and on WebGPU the kernel
// launches (compute dispatches) and buffer copies of a step.

import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT, startServer, open, tid, expectNoErrors, waitForEngine, loadModel, setSettings } from './driver.mjs';

const { values: a } = parseArgs({
  options: {
    batch: { type: 'string', default: '4' },
    'seq-len': { type: 'string', default: '128' },
    steps: { type: 'string', default: '8' },
    variants: { type: 'string', default: 'cpu-threads,cpu-1' },
    // A local model folder instead of the default model.
    model: { type: 'string' },
    // The page's "Base weights" choice: as stored, or quantized at load.
    'base-weights': { type: 'string', default: 'stored' },
  },
});

// What each variant asks of the page.
const VARIANTS = {
  'cpu-threads': { webgpu: false, query: '?backend=cpu' },
  'cpu-1': { webgpu: false, query: '?backend=cpu&threads=1' },
  webgpu: { webgpu: true, query: '?backend=webgpu' },
};

async function measure(origin, name) {
  const variant = VARIANTS[name];
  if (!variant) throw new Error(`unknown variant ${name}; known: ${Object.keys(VARIANTS).join(', ')}`);
  const { browser, page, consoleLines } = await open(origin, variant);
  try {
    await waitForEngine(page, name === 'webgpu' ? 'webgpu' : 'cpu');
    const reason = await page.textContent(tid('backend-reason'));
    if (a.model) {
      await page.check(tid('model-source-files'));
      await page.setInputFiles(tid('model-files'), readdirSync(a.model).map((f) => join(a.model, f)));
    }
    await page.selectOption(tid('base-weights'), a['base-weights']);
    await loadModel(page, consoleLines);
    await page.setInputFiles(tid('data-file'), join(ROOT, 'www/samples/chat.jsonl'));
    await page.waitForFunction(() => /examples/.test(document.querySelector('[data-testid="data-summary"]').textContent),
      null, { timeout: 60_000 });
    await setSettings(page, { steps: a.steps, batch: a.batch, 'seq-len': a['seq-len'], validation: 0, seed: 42 });
    await page.click(tid('start'));
    await page.waitForFunction(() => ['finished', 'stopped'].includes(document.body.dataset.run), null, { timeout: 3_600_000 });
    await expectNoErrors(page, consoleLines);
    const timings = await page.evaluate(() => window.tabtune.timings());
    const timed = timings.slice(1);
    const lastKernels = await page.evaluate(() => window.tabtune.lastKernels());
    const tokens = timed.reduce((n, t) => n + t.tokens, 0);
    const seconds = (timings.at(-1).elapsedMs - timings[0].elapsedMs) / 1000;
    const memory = Number(await page.getAttribute(tid('engine-memory'), 'data-bytes'));
    // On WebGPU, the peak bytes of the engine's GPU buffers (none on the CPU).
    const gpuPeak = Number(await page.getAttribute(tid('gpu-memory'), 'data-peak')) || 0;
    const losses = (await page.getAttribute(tid('loss-chart'), 'data-losses')).split(',').map(Number);
    // GPU kernel launches and buffer copies per step (the largest of the timed steps).
    const dispatches = Math.max(...timed.map((t) => t.gpu.dispatches));
    const copies = Math.max(...timed.map((t) => t.gpu.copies));
    return { variant: name, backend: reason, base_weights: a['base-weights'], tokens_per_s: tokens / seconds, timed_steps: timed.length, tokens, seconds,
      gpu_dispatches_per_step: dispatches, gpu_copies_per_step: copies, dispatches_by_step: timings.map((t) => t.gpu.dispatches),
      // The last step's launches by kernel, most first.
      kernels_last_step: Object.entries(lastKernels).sort((x, y) => y[1] - x[1]),
      first_step_s: timings[0].elapsedMs / 1000, wasm_memory_mib: memory / 2 ** 20, gpu_peak_mib: gpuPeak / 2 ** 20, losses };
  } finally {
    await browser.close();
  }
}

const server = await startServer();
try {
  for (const name of a.variants.split(',')) console.log(JSON.stringify(await measure(server.origin, name)));
} finally {
  server.stop();
}
