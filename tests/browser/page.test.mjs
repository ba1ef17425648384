// Drives the page in Debian's headless Chromium the way a person does:
// pick a model, drop in data, train, watch the chart, generate, download.
// Run by scripts/test-browser.sh, which builds the app, makes the tiny model
// and checks the downloaded adapters against `tabtune train` afterwards.
//
// Environment: TABTUNE_BROWSER_OUT (folder for zips, logs, screenshot),
// TABTUNE_TINY (folder holding hub/tabtune-test/tiny-chat/...).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { ROOT, startServer, open, tid, expectNoErrors, waitForEngine, loadModel, setSettings } from './driver.mjs';

const OUT = process.env.TABTUNE_BROWSER_OUT || '/tmp/tabtune-browser';
const TINY = process.env.TABTUNE_TINY || join(OUT, 'tiny');
const TINY_REPO = 'tabtune-test/tiny-chat';
const TINY_DIR = join(TINY, 'hub', TINY_REPO, 'resolve', 'main');
// The CLI, for reading the same files the page reads (scripts/test-browser.sh builds it).
const CLI = process.env.TABTUNE_BIN || join(process.env.CARGO_TARGET_DIR || join(process.env.HOME, '.cache/tabtune/target'), 'debug/tabtune');
let server;
let ORIGIN;
mkdirSync(OUT, { recursive: true });

// The data people drop in: the sample chat data with one broken line (line 3).
const DATA = join(OUT, 'chat-with-a-bad-line.jsonl');
{
  const lines = readFileSync(join(ROOT, 'www/samples/chat.jsonl'), 'utf8').trimEnd().split('\n');
  lines.splice(2, 0, '{"messages": [{"role": "user", "content": "unterminated"}');
  writeFileSync(DATA, lines.join('\n') + '\n');
}

before(async () => {
  server = await startServer({ '/hub': join(TINY, 'hub') });
  ORIGIN = server.origin;
});

after(() => server?.stop());

async function dropData(page) {
  await page.evaluate(() => { document.querySelector('[data-testid="data-summary"]').textContent = ''; });
  await page.setInputFiles(tid('data-file'), DATA);
  // Its own summary, not one of a file read before it.
  await page.waitForFunction(() => /^chat-with-a-bad-line\.jsonl \(.*examples/.test(document.querySelector('[data-testid="data-summary"]').textContent),
    null, { timeout: 60_000 });
  const summary = await page.textContent(tid('data-summary'));
  assert.match(summary, /24 examples/);
  assert.match(summary, /1 bad line\b/);
  const problems = await page.locator(`${tid('data-problems')} li:not(.note)`).allTextContents();
  assert.equal(problems.length, 1);
  assert.match(problems[0], /^line 3: invalid JSON/);
  // The preview marks the assistant's answer as trained, the question not.
  const trained = await page.locator(`${tid('data-preview')} mark.trained`).allTextContents();
  assert.ok(trained.join('').includes('Paris'), `trained part: ${trained}`);
  const context = await page.locator(`${tid('data-preview')} span`).allTextContents();
  assert.ok(context.join('').includes('What is the capital of France?'));
}

async function trainToTheEnd(page, consoleLines, steps, onFirstStep) {
  await page.click(tid('start'));
  await page.waitForFunction(() => document.body.dataset.run === 'running', null, { timeout: 60_000 });
  await page.waitForFunction(() => Number(document.querySelector('[data-testid="loss-chart"]').dataset.points) >= 1,
    null, { timeout: 600_000 });
  if (onFirstStep) await onFirstStep();
  await page.waitForFunction(() => ['finished', 'stopped'].includes(document.body.dataset.run), null, { timeout: 600_000 });
  await expectNoErrors(page, consoleLines);
  assert.equal(await page.getAttribute('body', 'data-run'), 'finished');
  assert.equal(await page.getAttribute(tid('loss-chart'), 'data-points'), String(steps));
  assert.equal(await page.textContent(tid('stat-step')), `${steps} / ${steps}`);
  const losses = (await page.getAttribute(tid('loss-chart'), 'data-losses')).split(',').map(Number);
  assert.equal(losses.length, steps);
  assert.ok(losses.every((l) => Number.isFinite(l) && l > 0), `losses ${losses}`);
  assert.equal(await page.textContent(tid('stat-loss')), losses[steps - 1].toFixed(4));
  return losses;
}

async function generate(page, consoleLines, maxTokens) {
  await page.fill(tid('max-tokens'), String(maxTokens));
  await page.click(tid('generate'));
  await page.waitForFunction(() => document.body.dataset.generate === 'done', null, { timeout: 300_000 });
  await expectNoErrors(page, consoleLines);
  return { base: await page.textContent(tid('output-base')), tuned: await page.textContent(tid('output-tuned')) };
}

// Loads the tiny model from disk on `engine` and chooses the sample data,
// as a person does after a reload.
async function chooseTinyAndSample(page, consoleLines, engine) {
  await waitForEngine(page, engine);
  await page.check(tid('model-source-files'));
  await page.setInputFiles(tid('model-files'), readdirSync(TINY_DIR).map((f) => join(TINY_DIR, f)));
  await loadModel(page, consoleLines);
  await page.evaluate(() => { document.querySelector('[data-testid="data-summary"]').textContent = ''; });
  await page.setInputFiles(tid('data-file'), join(ROOT, 'www/samples/chat.jsonl'));
  await page.waitForFunction(() => /^chat\.jsonl \(/.test(document.querySelector('[data-testid="data-summary"]').textContent));
}

// Downloads the adapter of the best validation loss (not read back: the
// live adapter is the last one).
async function downloadBest(page, name) {
  const [download] = await Promise.all([page.waitForEvent('download', { timeout: 120_000 }), page.click(tid('download-best'))]);
  assert.equal(download.suggestedFilename(), 'tabtune-adapter-best.zip');
  const path = join(OUT, name);
  await download.saveAs(path);
  return path;
}

// Downloads with `button`; the page's check of the files, read back before
// the download (next to the button), must have passed.
async function downloadZip(page, name, button = 'download', suggested = 'tabtune-adapter.zip') {
  const line = button === 'download-gguf' ? 'self-check-gguf' : 'self-check-peft';
  await page.evaluate((id) => { document.querySelector(`[data-testid="${id}"]`).textContent = ''; }, line);
  const [download] = await Promise.all([page.waitForEvent('download', { timeout: 120_000 }), page.click(tid(button))]);
  assert.equal(download.suggestedFilename(), suggested);
  const path = join(OUT, name);
  await download.saveAs(path);
  const file = button === 'download-gguf' ? 'adapter\\.gguf' : 'adapter_model\\.safetensors';
  assert.match(await page.textContent(tid(line)),
    new RegExp(`^self-check passed: ${file} read back gives the live model's logits on \\d+ tokens`));
  return path;
}

function leavesLocalhost(requests) {
  return requests.filter((r) => !/^(https?:\/\/127\.0\.0\.1:\d+\/|blob:|data:)/.test(r.url)).map((r) => r.url);
}

// Downloads the merged model of `kind` (gguf, hf) in `type`; its check, read
// back as a model before the download, must have passed.
async function downloadMerged(page, kind, type, suggested) {
  await page.selectOption(tid(`merged-${kind}-type`), type);
  const [download] = await Promise.all([
    page.waitForEvent('download', { timeout: 300_000 }).catch(async (e) => {
      const line = await page.textContent(tid(`self-check-merged-${kind}`));
      throw new Error(`${e.message}; the page says: ${line} | ${await page.textContent(tid('errors'))}`);
    }),
    page.click(tid(`download-merged-${kind}`))]);
  assert.equal(download.suggestedFilename(), suggested);
  const path = join(OUT, suggested);
  await download.saveAs(path);
  const file = kind === 'gguf' ? 'the merged GGUF' : 'model\\.safetensors';
  assert.match(await page.textContent(tid(`self-check-merged-${kind}`)),
    new RegExp(`^self-check passed: ${file} read back gives the live model's logits on \\d+ tokens`));
  return path;
}

test('with WebGPU, a hub model trains, generates and downloads without a network request', async () => {
  const { browser, page, requests, consoleLines } = await open(ORIGIN, { webgpu: true });
  try {
    await waitForEngine(page, 'webgpu');
    assert.match(await page.textContent(tid('backend-reason')), /WebGPU on .*swiftshader/i);
    // The device's own buffer limit, which the engine's guard refuses by (SwiftShader: 1 GiB).
    assert.match(await page.textContent(tid('backend-reason')), /buffers up to 1024 MiB/);

    // Our GPU kernels (shaders/) against their Rust twins, on this device.
    // 81 cases on SwiftShader, a GPU emulated on this machine's CPUs: about 3 minutes on 2 idle
    // cores, more when they are busy.
    const selfTestStart = Date.now();
    await page.evaluate(() => window.tabtune.post({ type: 'selfTestKernels' }));
    await page.waitForFunction(() => window.tabtune.selfTest(), null, { timeout: 600_000 });
    console.log(`kernel check: ${((Date.now() - selfTestStart) / 1000).toFixed(0)} s`);
    const { checks, kernels: launched } = await page.evaluate(() => window.tabtune.selfTest());
    writeFileSync(join(OUT, 'kernel-checks.json'), JSON.stringify({ checks, launched }, null, 1));
    console.log('kernels against their twins:', JSON.stringify(checks), 'launched:', JSON.stringify(launched));
    // Each case ran our kernel, not a fallback: 5 expansions and a lookup, 5 few-rows products, 6 tiled products and 4 over joined rows (7 checks: each part apart),
    // a weight viewed inside joined rows expanded and multiplied by 8 rows and by 70,
    // 7 of LoRA's products, 2 pairs and 3 of its row kernel (4 and 6 checks: each output apart), 3 attentions forward and backward (6 and 12 checks: each output apart),
    // 3 RoPEs and 3 of two tensors in one launch (6 checks), 2 RMSNorms forward and backward, SwiGLU once forward and twice backward (5 checks),
    // and a join of 14 gradients in 3 launches (exact).
    assert.ok(launched.dequantize_blocks >= 7 && launched.matmul_blocks_few >= 6 && launched.matmul_blocks >= 11 && launched.lora_product >= 7 && launched.lora_rows >= 3 && launched.lora_pair >= 2
      && launched.attention_forward >= 3 && launched.attention_backward_dq >= 3 && launched.attention_backward_dkv >= 3
      && launched.rope >= 6 && launched.rms_norm_forward >= 2 && launched.rms_norm_backward >= 2
      && launched.swiglu_forward >= 1 && launched.swiglu_backward >= 2 && launched.join >= 3,
      JSON.stringify(launched));
    assert.equal(checks.length, 81, JSON.stringify(checks));
    for (const c of checks) {
      const what = JSON.stringify(c);
      assert.ok(c.values > 0 && c.non_finite === 0 && Number.isFinite(c.max_relative), what);
      if (/^(dequantize_blocks Q(8|4)_0|join)/.test(c.case)) assert.equal(c.differing, 0, what);
      else if (c.case.startsWith('dequantize_blocks')) assert.ok(c.max_relative <= 1e-6, what);
      else assert.ok(c.max_relative <= 1e-5, what);
    }

    await page.check(tid('model-source-hub'));
    await page.click(tid('hub-address'));
    await page.fill(tid('hub-base'), `${ORIGIN}/hub`);
    await page.fill(tid('hub-repo'), TINY_REPO);
    await loadModel(page, consoleLines);
    assert.ok(requests.some((r) => r.url.endsWith(`/hub/${TINY_REPO}/resolve/main/model.safetensors`)));
    assert.match(await page.textContent(tid('model-info')), /2 layers, width 64/);
    assert.equal(await page.inputValue(tid('base-name')), TINY_REPO);
    await dropData(page);
    await setSettings(page, { steps: 2, batch: 1, 'seq-len': 64, dropout: 0, seed: 42 });

    const quietFrom = requests.length;
    const losses = await trainToTheEnd(page, consoleLines, 2);
    // The engine's GPU buffers, counted where it makes and destroys them: at least the model
    // it loaded onto the GPU, and at their peak no fewer than now.
    const loaded = Number((await page.textContent(tid('model-info'))).match(/\(([\d.]+) MB loaded/)[1]) * 1e6;
    const gpuBytes = Number(await page.getAttribute(tid('gpu-memory'), 'data-bytes'));
    const gpuPeak = Number(await page.getAttribute(tid('gpu-memory'), 'data-peak'));
    assert.ok(gpuBytes >= loaded && gpuPeak >= gpuBytes, `GPU buffers ${gpuBytes} (peak ${gpuPeak}) for a model of ${loaded} bytes`);
    assert.match(await page.textContent(tid('gpu-memory')), /GPU buffers [\d.]+ MB \(peak [\d.]+ MB\)/);
    await generate(page, consoleLines, 4);
    const zip = await downloadZip(page, 'webgpu.zip');
    assert.deepEqual(requests.slice(quietFrom).map((r) => r.url), [], 'requests during training, generation, export');
    writeFileSync(join(OUT, 'webgpu.json'), JSON.stringify({
      zip, model: TINY_DIR, data: join(ROOT, 'www/samples/chat.jsonl'), base: TINY_REPO, losses,
      settings: { steps: 2, batch: 1, seq_len: 64, dropout: 0, seed: 42 },
    }));

    // A reload takes the model from browser storage: no request reaches the hub.
    await page.reload();
    await waitForEngine(page, 'webgpu');
    await page.check(tid('model-source-hub'));
    await page.click(tid('hub-address'));
    await page.fill(tid('hub-base'), `${ORIGIN}/hub`);
    await page.fill(tid('hub-repo'), TINY_REPO);
    const reloadFrom = requests.length;
    await loadModel(page, consoleLines);
    assert.deepEqual(requests.slice(reloadFrom).filter((r) => r.url.includes('/hub/')).map((r) => r.url), []);

    // Quantized at load, the base stays packed in GPU memory (Q4_0 projections,
    // the tied embedding Q8_0): our tiled kernel multiplies by the projections
    // where they lie, and the loss expands the tied head once for its chunks.
    // About a sixth of the bytes, and the CLI's losses on the same values
    // (tests/browser/check_adapters.py runs `--base-weights q4_0`).
    const loadedMb = async () => Number((await page.textContent(tid('model-info'))).match(/\(([\d.]+) MB loaded/)[1]);
    const stored = await loadedMb();
    await page.selectOption(tid('base-weights'), 'q4_0');
    await loadModel(page, consoleLines);
    assert.match(await page.textContent(tid('model-info')), /MB loaded, quantized to Q4_0\)/);
    const q4 = await loadedMb();
    assert.ok(q4 > 0 && q4 < stored * 0.35, `Q4_0 on the GPU: ${q4} MB loaded against ${stored} MB as stored`);
    await dropData(page);
    await setSettings(page, { steps: 2, batch: 1, 'seq-len': 64, dropout: 0, seed: 42 });
    const packedLosses = await trainToTheEnd(page, consoleLines, 2);
    const kernels = await page.evaluate(() => window.tabtune.lastKernels());
    // The packed base multiplied (and the head expanded) by our kernels; the adapters, attention,
    // RoPE, RMSNorm, SwiGLU and the gradients' join run as kernels of ours.
    const ours = ['matmul_blocks', 'dequantize_blocks', 'lora_rows', 'lora_pair', 'attention_forward', 'attention_backward_dq',
      'attention_backward_dkv', 'rope', 'rms_norm_forward', 'rms_norm_backward', 'swiglu_forward',
      'swiglu_backward', 'join'];
    assert.ok(ours.every((k) => (kernels[k] || 0) > 0), `the step's kernels: ${JSON.stringify(kernels)}`);
    // Decoding multiplies one row at a time by the packed weights where they lie.
    const packedText = await generate(page, consoleLines, 4);
    assert.ok(packedText.base.length > 0 && packedText.tuned.length > 0, JSON.stringify(packedText));
    const packedZip = await downloadZip(page, 'webgpu-q4_0.zip');
    writeFileSync(join(OUT, 'webgpu-q4_0.json'), JSON.stringify({
      zip: packedZip, model: TINY_DIR, data: join(ROOT, 'www/samples/chat.jsonl'), base: TINY_REPO,
      losses: packedLosses, settings: { steps: 2, batch: 1, seq_len: 64, dropout: 0, seed: 42, base_weights: 'q4_0' },
    }));
    assert.deepEqual(leavesLocalhost(requests), []);
  } finally {
    writeFileSync(join(OUT, 'webgpu-console.log'), consoleLines.join('\n'));
    await browser.close();
  }
});

// A family beyond Llama on WebGPU: a tiny Gemma 3 (make_tiny_model.py OUT gemma3) whose
// sliding layer's window (16) is shorter than the sequence, whose attention is scaled by
// query_pre_attn_scalar (24) rather than the head size, with GeGLU, q/k head norms and
// post-norms: the parts our fused kernels leave to burn's ops. check_adapters.py holds
// the page's run to the CLI's.
test('with WebGPU, a tiny Gemma 3 model trains like the CLI', async () => {
  const dir = join(TINY, 'tiny-gemma3');
  const { browser, page, consoleLines } = await open(ORIGIN, { webgpu: true });
  try {
    await waitForEngine(page, 'webgpu');
    await page.check(tid('model-source-files'));
    await page.setInputFiles(tid('model-files'), readdirSync(dir).map((f) => join(dir, f)));
    await loadModel(page, consoleLines);
    assert.match(await page.textContent(tid('model-info')), /2 layers, width 64/);
    await dropData(page);
    await setSettings(page, { steps: 2, batch: 1, 'seq-len': 64, dropout: 0, seed: 42 });
    const losses = await trainToTheEnd(page, consoleLines, 2);
    await page.fill(tid('base-name'), 'tiny-gemma3');
    const zip = await downloadZip(page, 'webgpu-gemma3.zip');
    writeFileSync(join(OUT, 'webgpu-gemma3.json'), JSON.stringify({
      zip, model: dir, data: join(ROOT, 'www/samples/chat.jsonl'), base: 'tiny-gemma3', losses,
      settings: { steps: 2, batch: 1, seq_len: 64, dropout: 0, seed: 42 },
    }));
  } finally {
    writeFileSync(join(OUT, 'webgpu-gemma3-console.log'), consoleLines.join('\n'));
    await browser.close();
  }
});

test('without WebGPU, the default model trains on the CPU and its adapter downloads', async () => {
  const { browser, page, requests, consoleLines } = await open(ORIGIN, { webgpu: false });
  try {
    await waitForEngine(page, 'cpu');
    assert.match(await page.textContent(tid('backend-reason')), /running on the CPU: /);

    // Local files chosen together load too (the tiny model's folder).
    await page.check(tid('model-source-files'));
    const files = readdirSync(TINY_DIR).map((f) => join(TINY_DIR, f));
    await page.setInputFiles(tid('model-files'), files);
    await loadModel(page, consoleLines);
    assert.match(await page.textContent(tid('model-info')), /2 layers/);

    // Quantized at load (Base weights), the same f32 files hold about a quarter of the bytes.
    const loadedMb = async () => Number((await page.textContent(tid('model-info'))).match(/\(([\d.]+) MB loaded/)[1]);
    const stored = await loadedMb();
    await page.selectOption(tid('base-weights'), 'q8_0');
    await loadModel(page, consoleLines);
    const q8 = await loadedMb();
    assert.match(await page.textContent(tid('model-info')), /MB loaded, quantized to Q8_0\)/);
    assert.ok(q8 > 0 && q8 < stored * 0.3, `Q8_0: ${q8} MB loaded against ${stored} MB as stored`);
    await page.selectOption(tid('base-weights'), 'stored');

    // Other formats: a CSV with Question/Answer columns trains as conversations.
    await page.setInputFiles(tid('data-file'), join(ROOT, 'tests/fixtures/data/formats/qa.csv'));
    await page.waitForFunction(() => /^qa\.csv/.test(document.querySelector('[data-testid="data-summary"]').textContent));
    assert.match(await page.textContent(tid('data-summary')),
      /^qa\.csv \(csv, prompt\/response columns\): 3 examples with 6 turns/);
    assert.match(await page.textContent(tid('data-preview')), /What is the capital of France\?/);

    // A wrong choice of files is explained in the page.
    await page.setInputFiles(tid('model-files'), [join(TINY_DIR, 'config.json')]);
    await page.click(tid('load-model'));
    await page.waitForSelector(`${tid('errors')} .error`);
    assert.match(await page.textContent(tid('errors')), /Missing model\.safetensors, tokenizer\.json/);
    await page.click(`${tid('errors')} .error button`);

    // Pause holds the run between steps, Resume goes on, Stop ends it.
    await dropData(page);
    await setSettings(page, { steps: 500, batch: 1, 'seq-len': 64, validation: 0.25 });
    await page.click(tid('start'));
    const points = () => page.getAttribute(tid('loss-chart'), 'data-points').then(Number);
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="loss-chart"]').dataset.points) >= 2);
    await page.click(tid('pause'));
    await page.waitForFunction(() => document.body.dataset.run === 'paused');
    assert.equal(await page.textContent(tid('pause')), 'Resume');
    const held = await points();
    await page.waitForTimeout(1000);
    assert.equal(await points(), held, 'no step while paused');
    await page.click(tid('pause'));
    await page.waitForFunction((n) => Number(document.querySelector('[data-testid="loss-chart"]').dataset.points) > n, held);
    await page.click(tid('stop'));
    await page.waitForFunction(() => document.body.dataset.run === 'stopped');
    assert.match(await page.textContent(tid('run-status')), /^Stopped after \d+ steps/);
    // 6 of the 24 examples were held out: their loss before and after shows.
    assert.match(await page.textContent(tid('stat-val')), /^\d+\.\d{4} → \d+\.\d{4}$/);
    assert.match(await page.getAttribute(tid('stat-val'), 'title'), /of 6 held-out examples/);
    await expectNoErrors(page, consoleLines);

    // A panic in the engine shows in the page; the engine restarts and the page goes on.
    await page.evaluate(() => window.tabtune.post({ type: 'selfTestPanic' }));
    await page.waitForSelector(`${tid('errors')} .error`);
    assert.match(await page.textContent(tid('errors')), /engine panicked: .*self-test panic requested by the page.*load the model again/s);
    await waitForEngine(page, 'cpu');
    await page.click(`${tid('errors')} .error button`);

    await page.check(tid('model-source-default'));
    await loadModel(page, consoleLines);
    assert.match(await page.textContent(tid('model-info')), /30 layers, width 576/);

    // A run too big for the engine's memory is refused before it starts,
    // saying what to lower: 8 examples of 2048 tokens need about 5 GiB.
    const long = join(OUT, 'long.jsonl');
    writeFileSync(long, Array.from({ length: 8 }, (_, i) => JSON.stringify({ text: `story ${i}:${' word'.repeat(3000)}` })).join('\n') + '\n');
    await setSettings(page, { steps: 2, batch: 8, 'seq-len': 2048 });
    // Leaving the field commits the length (data read after it is cut to it).
    await page.press(tid('setting-seq-len'), 'Tab');
    await page.setInputFiles(tid('data-file'), long);
    await page.waitForFunction(() => /^long\.jsonl \(/.test(document.querySelector('[data-testid="data-summary"]').textContent),
      null, { timeout: 120_000 });
    assert.equal(await page.isEnabled(tid('start')), true);
    await page.click(tid('start'));
    await page.waitForSelector(`${tid('errors')} .error`);
    assert.match(await page.textContent(tid('errors')),
      /a step of 8 examples × 2048 tokens needs about \d+ MiB, but the engine has \d+ MiB left of its 4096 MiB: lower Batch or Sequence length/);
    assert.notEqual(await page.evaluate(() => document.body.dataset.run), 'running', 'nothing started');
    await page.click(`${tid('errors')} .error button`);
    // A new length reads the data again: let that end before the next file.
    await page.evaluate(() => { document.querySelector('[data-testid="data-summary"]').textContent = ''; });
    await setSettings(page, { 'seq-len': 64 });
    await page.press(tid('setting-seq-len'), 'Tab');
    await page.waitForFunction(() => /^long\.jsonl \(/.test(document.querySelector('[data-testid="data-summary"]').textContent),
      null, { timeout: 120_000 });
    await dropData(page);
    // The sequence length is still 64 from the run above: the long example is noted.
    const notes = await page.locator(`${tid('data-problems')} li.note`).allTextContents();
    assert.equal(notes.length, 1, notes.join('\n'));
    assert.match(notes[0], /^line \d+: \d+ tokens, longer than the sequence length 64: cut to 64, so \d+ of its \d+ trained tokens are not learned$/);
    await setSettings(page, { steps: 2, batch: 1, 'seq-len': 64, seed: 42, validation: 0.1 });

    const quietFrom = requests.length;
    const losses = await trainToTheEnd(page, consoleLines, 2, async () => {
      if (process.env.TABTUNE_SCREENSHOT) await page.screenshot({ path: process.env.TABTUNE_SCREENSHOT, fullPage: true });
    });
    const out = await generate(page, consoleLines, 12);
    assert.ok(out.base.trim().length > 0, 'the base model says something');
    assert.ok(out.tuned.trim().length > 0, 'the tuned model says something');
    const zip = await downloadZip(page, 'cpu.zip');
    // The same adapter for llama.cpp / Ollama (check_adapters.py holds it to the CLI's export).
    const ggufZip = await downloadZip(page, 'cpu-gguf.zip', 'download-gguf', 'tabtune-adapter-gguf.zip');
    // The merged model, streamed to a file: Q8_0 GGUF and bf16 for transformers (check_adapters.py
    // holds both to the CLI's export of the page's adapter).
    const mergedGguf = await downloadMerged(page, 'gguf', 'q8_0', 'tabtune-merged.Q8_0.gguf');
    const mergedZip = await downloadMerged(page, 'hf', 'bf16', 'tabtune-merged-bf16.zip');
    // The hand-off to TRL (check_adapters.py holds it to `tabtune export --recipe`).
    const [trlDownload] = await Promise.all([page.waitForEvent('download', { timeout: 120_000 }), page.click(tid('download-trl'))]);
    assert.equal(trlDownload.suggestedFilename(), 'tabtune-trl.zip');
    const trlZip = join(OUT, 'cpu-trl.zip');
    await trlDownload.saveAs(trlZip);
    assert.deepEqual(requests.slice(quietFrom).map((r) => r.url), [], 'requests during training, generation, export');
    assert.deepEqual(leavesLocalhost(requests), []);
    writeFileSync(join(OUT, 'cpu.json'), JSON.stringify({
      zip, ggufZip, mergedGguf, mergedZip, trlZip, model: join(ROOT, 'www/models/SmolLM2-135M-Instruct.Q4_1.gguf'), data: join(ROOT, 'www/samples/chat.jsonl'), losses,
      base: 'HuggingFaceTB/SmolLM2-135M-Instruct',
      settings: { steps: 2, batch: 1, seq_len: 64, dropout: 0.05, seed: 42 },
      outputs: out,
    }));
  } finally {
    writeFileSync(join(OUT, 'cpu-console.log'), consoleLines.join('\n'));
    await browser.close();
  }
});

test('a large data file streams into the engine, and bad lines can be set to stop the run', async () => {
  const { browser, page, consoleLines } = await open(ORIGIN, { webgpu: false });
  const memory = () => page.getAttribute(tid('engine-memory'), 'data-bytes').then(Number);
  const useData = async (path, name) => {
    await page.setInputFiles(tid('data-file'), path);
    await page.waitForFunction((n) => document.querySelector('[data-testid="data-summary"]').textContent.startsWith(`${n} (`),
      name, { timeout: 300_000 });
    await expectNoErrors(page, consoleLines);
    return page.textContent(tid('data-summary'));
  };
  try {
    await waitForEngine(page, 'cpu');
    await page.check(tid('model-source-files'));
    await page.setInputFiles(tid('model-files'), readdirSync(TINY_DIR).map((f) => join(TINY_DIR, f)));
    await loadModel(page, consoleLines);

    // Bad lines: left out by default; set to stop, Start waits until they are fixed.
    await dropData(page);
    assert.equal(await page.isEnabled(tid('start')), true);
    await page.selectOption(tid('data-bad'), 'stop');
    assert.equal(await page.isEnabled(tid('start')), false);
    assert.match(await page.textContent(tid('data-summary')), /Training waits until this line is fixed/);
    await page.selectOption(tid('data-bad'), 'skip');
    assert.equal(await page.isEnabled(tid('start')), true);
    assert.match(await page.textContent(tid('data-summary')), /Bad lines are left out:$/);

    // A JSON array of 40 MB: the engine reads it a slice at a time, so its
    // memory grows by the tokens kept (the dashes tokenize 60 bytes to a
    // token), not by the file. Copying the file in whole would add its size.
    const record = (i) => JSON.stringify({ text: `record ${i}: ${'-'.repeat(600)}` });
    const small = join(OUT, 'small.json');
    const big = join(OUT, 'big.json');
    writeFileSync(small, `[\n${Array.from({ length: 10 }, (_, i) => record(i)).join(',\n')}\n]\n`);
    const records = 64_000;
    writeFileSync(big, `[\n${Array.from({ length: records }, (_, i) => record(i)).join(',\n')}\n]\n`);
    const size = statSync(big).size;
    await useData(small, 'small.json');
    const before = await memory();
    // Reading shows its progress in the page.
    await page.evaluate(() => {
      const el = document.querySelector('[data-testid="data-summary"]');
      window.seenSummaries = [];
      new MutationObserver(() => window.seenSummaries.push(el.textContent))
        .observe(el, { childList: true, characterData: true, subtree: true });
    });
    const summary = await useData(big, 'big.json');
    const seen = await page.evaluate(() => window.seenSummaries);
    assert.ok(seen.some((t) => /^Reading big\.json: \d+\.\d MB of 40\.1 MB \(\d+%\)…$/.test(t)), seen.join('\n'));
    assert.match(summary, new RegExp(`^big\\.json \\(json, text\\): ${records.toLocaleString('en-US')} examples`));
    const grew = (await memory()) - before;
    console.log(`big.json: ${(size / 1e6).toFixed(1)} MB file, engine memory ${(before / 1e6).toFixed(1)} MB grew ${(grew / 1e6).toFixed(1)} MB`);
    assert.ok(before > 0);
    assert.ok(grew < size / 2, `a ${size} byte file grew the engine's memory by ${grew} bytes`);
  } finally {
    writeFileSync(join(OUT, 'large-console.log'), consoleLines.join('\n'));
    await browser.close();
  }
});

test('every data format reads in the page as the CLI reads it, and trains', async () => {
  const { browser, page, requests, consoleLines } = await open(ORIGIN, { webgpu: false });
  const number = (t) => Number((t || '0').replaceAll(',', ''));
  try {
    await waitForEngine(page, 'cpu');
    await page.check(tid('model-source-files'));
    await page.setInputFiles(tid('model-files'), readdirSync(TINY_DIR).map((f) => join(TINY_DIR, f)));
    await loadModel(page, consoleLines);
    await setSettings(page, { steps: 1, batch: 1 });
    const quietFrom = requests.length;
    for (const file of ['messages.json', 'sharegpt.jsonl', 'alpaca.json', 'multi_turn.jsonl', 'qa.csv', 'qa.tsv', 'notes.md']) {
      const path = join(ROOT, 'tests/fixtures/data/formats', file);
      const cli = JSON.parse(execFileSync(CLI, ['data', 'inspect', '--model', TINY_DIR, '--data', path, '--json'], { encoding: 'utf8' }));
      await page.setInputFiles(tid('data-file'), path);
      await page.waitForFunction((n) => document.querySelector('[data-testid="data-summary"]').textContent.startsWith(`${n} (`),
        file, { timeout: 60_000 });
      await expectNoErrors(page, consoleLines);
      const text = await page.textContent(tid('data-summary'));
      const m = text.match(/^(\S+) \((\w+), ([^)]+)\): ([\d,]+) examples(?: with ([\d,]+) turns)?, ([\d,]+) tokens \(([\d,]+) trained\), (\d+) bad lines?/);
      assert.ok(m, text);
      assert.deepEqual(
        { format: m[2], schema: m[3], examples: number(m[4]), turns: number(m[5]), tokens: number(m[6]), trained: number(m[7]), bad: number(m[8]) },
        { format: cli.format, schema: cli.schema, examples: cli.examples, turns: cli.turns, tokens: cli.tokens, trained: cli.trained_tokens, bad: cli.problems.length },
        file,
      );
      const trained = (await page.locator(`${tid('data-preview')} mark.trained`).allTextContents()).join('');
      assert.equal(trained, cli.preview.filter((s) => s.trained).map((s) => s.text).join(''), file);
      await page.evaluate(() => { document.body.dataset.run = ''; });
      await page.click(tid('start'));
      await page.waitForFunction(() => document.body.dataset.run === 'finished', null, { timeout: 60_000 });
      assert.equal(await page.textContent(tid('stat-step')), '1 / 1', file);
      assert.ok(Number(await page.textContent(tid('stat-loss'))) > 0, file);
      await expectNoErrors(page, consoleLines);
    }
    assert.deepEqual(requests.slice(quietFrom).map((r) => r.url), [], 'requests while reading data and training');
  } finally {
    writeFileSync(join(OUT, 'formats-console.log'), consoleLines.join('\n'));
    await browser.close();
  }
});

// Values a setting must refuse, from the engine's description of it (as
// tests/run_settings.rs makes them for the CLI).
function badValues(s) {
  const v = ['', '-1', 'NaN', '4294967296', 'abc'];
  const k = s.kind;
  if (k.type === 'int') {
    v.push('0.5');
    if (k.min > 0) v.push(String(k.min - 1));
    v.push(String(k.max + 1));
  } else if (k.type === 'float') {
    v.push('inf');
    if (!k.min_included) v.push(String(k.min));
    if (!k.max_included) v.push(String(k.max));
    v.push(String(k.max * 2 + 1));
  }
  return s.empty ? v.filter((x) => x !== '') : v;
}

test('every setting refuses values out of its range in the page, naming it', async () => {
  const { browser, page, consoleLines } = await open(ORIGIN, { webgpu: false });
  const errorOf = (name) => page.locator(tid(`setting-error-${name}`));
  const check = async (name, value, want) => {
    await errorOf(name).evaluate((el) => { el.textContent = 'checking'; });
    const field = page.locator(tid(`setting-${name}`));
    await field.fill(value);
    await field.dispatchEvent('change');
    await page.waitForFunction((n) => document.querySelector(`[data-testid="setting-error-${n}"]`).textContent !== 'checking', name);
    const text = await errorOf(name).textContent();
    if (want) assert.ok(text.startsWith(want), `${name} = ${JSON.stringify(value)}: "${text}"`);
    else assert.equal(text, '', `${name} = ${JSON.stringify(value)}`);
  };
  try {
    await waitForEngine(page, 'cpu');
    const settings = await page.evaluate(() => window.tabtune.settings());
    // The form is the engine's: every setting is there with its default.
    for (const s of settings) {
      if (['int', 'float'].includes(s.kind.type)) assert.equal(await page.inputValue(tid(`setting-${s.name}`)), s.default, s.name);
    }
    let checked = 0;
    for (const s of settings.filter((x) => ['int', 'float'].includes(x.kind.type))) {
      for (const bad of badValues(s)) {
        await check(s.name, bad, `setting \`${s.name}\``);
        checked += 1;
      }
      await check(s.name, s.default, '');
    }
    // A choice and a switch cannot be set wrong in the form; the engine
    // still refuses a wrong value sent for them, naming the setting.
    for (const [name, bad] of [['schedule', 'step'], ['schedule', ''], ['rslora', 'maybe']]) {
      await errorOf(name).evaluate((el) => { el.textContent = 'checking'; });
      await page.evaluate(([n, v]) => window.tabtune.post({ type: 'checkSettings', values: { [n]: v } }), [name, bad]);
      await page.waitForFunction((n) => document.querySelector(`[data-testid="setting-error-${n}"]`).textContent !== 'checking', name);
      assert.ok((await errorOf(name).textContent()).startsWith(`setting \`${name}\``), `${name} = ${JSON.stringify(bad)}`);
      checked += 1;
    }
    assert.ok(checked > 100, `${checked} values checked`);
    // Targets are checkboxes: choosing none is refused.
    for (const t of ['q', 'k', 'v', 'o', 'gate', 'up', 'down']) await page.uncheck(tid(`target-${t}`));
    await page.waitForFunction(() => /^setting `targets`/.test(document.querySelector('[data-testid="setting-error-targets"]').textContent));
    await expectNoErrors(page, consoleLines);
  } finally {
    writeFileSync(join(OUT, 'settings-console.log'), consoleLines.join('\n'));
    await browser.close();
  }
});

// The CPU engine's two builds: rayon's pool in Web Workers (the page is
// cross-origin isolated by scripts/serve.py) and one thread (www/pkg).
test('the CPU engine on every core trains the same steps as on one thread', async () => {
  const cores = await (async () => {
    const { browser, page } = await open(ORIGIN, { webgpu: false });
    try {
      return await page.evaluate(() => navigator.hardwareConcurrency);
    } finally {
      await browser.close();
    }
  })();
  const run = async (threads) => {
    const { browser, page, consoleLines } = await open(ORIGIN, { webgpu: false, query: `?backend=cpu&threads=${threads}` });
    try {
      await waitForEngine(page, 'cpu');
      assert.equal(await page.getAttribute('body', 'data-threads'), String(threads));
      assert.match(await page.textContent(tid('backend')), threads === 1 ? /one thread/ : new RegExp(`${threads} threads`));
      assert.equal(await page.evaluate(() => globalThis.crossOriginIsolated), true, 'scripts/serve.py isolates the page');
      await loadModel(page, consoleLines);
      await dropData(page);
      await setSettings(page, { steps: 2, batch: 2, 'seq-len': 64, validation: 0, seed: 7 });
      return await trainToTheEnd(page, consoleLines, 2);
    } finally {
      writeFileSync(join(OUT, `threads-${threads}-console.log`), consoleLines.join('\n'));
      await browser.close();
    }
  };
  assert.ok(cores >= 2, `this test needs two cores; the browser reports ${cores}`);
  const one = await run(1);
  const many = await run(cores);
  for (let i = 0; i < one.length; i += 1) {
    assert.ok(Math.abs(many[i] - one[i]) <= 1e-5 * Math.abs(one[i]), `step ${i + 1}: ${many[i]} with ${cores} threads, ${one[i]} with one`);
  }
});

// The second family in the page: Gemma 3 270M from disk (a base model: no
// chat template, so conversations get Gemma's turns), after a model of a
// family tabtune does not read is refused before its weights are.
test('Gemma 3 270M loads from disk and trains a step on the CPU; an unsupported family is named first', async () => {
  const gemma = process.env.TABTUNE_GEMMA;
  assert.ok(gemma, 'TABTUNE_GEMMA names Gemma 3 270M (scripts/fetch-model.sh gemma3 fetches it)');
  // A family tabtune does not read: the tiny Qwen2 GGUF relabelled (keys and all) as Mamba.
  const mamba = join(OUT, 'tiny-mamba.gguf');
  writeFileSync(mamba, Buffer.from(readFileSync(join(ROOT, 'tests/fixtures/tiny_qwen2/tiny_qwen2.gguf'))
    .toString('latin1').replaceAll('qwen2', 'mamba'), 'latin1'));
  const { browser, page, consoleLines } = await open(ORIGIN, { webgpu: false });
  try {
    await waitForEngine(page, 'cpu');
    assert.match(await page.textContent('#model-section'), /Qwen2 \/ Qwen2\.5, Qwen3 and Gemma 3/);
    await page.check(tid('model-source-files'));
    await page.setInputFiles(tid('model-files'), [mamba]);
    await page.click(tid('load-model'));
    await page.waitForSelector(`${tid('errors')} .error`);
    assert.match(await page.textContent(tid('errors')), /architecture `mamba` is not supported: tabtune reads Llama .*Gemma 3/);
    await page.click(`${tid('errors')} .error button`);

    await page.setInputFiles(tid('model-files'), [gemma]);
    await loadModel(page, consoleLines);
    const info = await page.textContent(tid('model-info'));
    assert.match(info, /18 layers, width 640/);
    assert.match(info, /no chat template: conversations get Gemma's turns/);
    await page.setInputFiles(tid('data-file'), join(ROOT, 'tests/fixtures/data/completion.jsonl'));
    await page.waitForFunction(() => /^completion\.jsonl \(/.test(document.querySelector('[data-testid="data-summary"]').textContent),
      null, { timeout: 60_000 });
    assert.match(await page.textContent(tid('data-summary')), /8 examples/);
    await setSettings(page, { steps: 1, batch: 2, 'seq-len': 64, validation: 0 });
    const [loss] = await trainToTheEnd(page, consoleLines, 1);
    console.log(`Gemma 3 270M: loss ${loss.toFixed(4)} after one step`);
    assert.ok(Number.isFinite(loss) && loss > 0, `loss ${loss}`);
  } finally {
    writeFileSync(join(OUT, 'gemma-console.log'), consoleLines.join('\n'));
    await browser.close();
  }
});

// A 1B-class model in the page: Llama-3.2-1B's shapes (1.24 B parameters)
// with random Q4_0 weights (make_1b_model.py, 697 MB). Its projections and
// embedding stay packed and each block is recomputed in the backward pass,
// so one step fits in wasm32's 4 GiB.
test('a 1B-class Q4_0 model loads and trains a step on the CPU within the 4 GiB heap', async () => {
  const model = process.env.TABTUNE_1B;
  assert.ok(model, 'TABTUNE_1B names the 1B test model (scripts/test-browser.sh makes it)');
  const { browser, page, consoleLines } = await open(ORIGIN, { webgpu: false });
  try {
    await waitForEngine(page, 'cpu');
    await page.check(tid('model-source-files'));
    await page.setInputFiles(tid('model-files'), [model]);
    await loadModel(page, consoleLines);
    assert.match(await page.textContent(tid('model-info')), /16 layers, width 2048/);
    await dropData(page);
    await setSettings(page, { steps: 1, batch: 1, 'seq-len': 64, validation: 0 });
    const [loss] = await trainToTheEnd(page, consoleLines, 1);
    const memory = Number(await page.getAttribute(tid('engine-memory'), 'data-bytes'));
    console.log(`1B Q4_0: loss ${loss.toFixed(4)} after one step, engine memory ${(memory / 2 ** 20).toFixed(0)} MiB`);
    assert.ok(Number.isFinite(loss) && loss > 5, `loss ${loss} of random weights over 128,256 tokens`);
    // A run that did not fit in wasm32's 4 GiB would have trapped above; this
    // also holds the margin (2351 MiB measured when it was written).
    assert.ok(memory > 697e6 && memory < 3.25 * 2 ** 30, `${memory} bytes`);
  } finally {
    writeFileSync(join(OUT, '1b-console.log'), consoleLines.join('\n'));
    await browser.close();
  }
});

test('a run reloaded mid-way resumes from its checkpoint into the same adapter; running out of memory, discarding and a second start are handled', async () => {
  const { browser, page, consoleLines, dialogs } = await open(ORIGIN, { webgpu: false, query: '?backend=cpu&threads=1' });
  const sample = join(ROOT, 'www/samples/chat.jsonl');
  const chooseModelAndData = () => chooseTinyAndSample(page, consoleLines, 'cpu');
  const settings = { steps: 120, batch: 2, 'seq-len': 64, validation: 0.25, 'eval-every': 40, 'save-every': 3 };
  const losses = () => page.getAttribute(tid('loss-chart'), 'data-losses');
  const finished = () => page.waitForFunction(() => ['finished', 'stopped'].includes(document.body.dataset.run), null, { timeout: 120_000 });
  try {
    // The whole run, uninterrupted.
    await chooseModelAndData();
    await setSettings(page, settings);
    // Start twice at once: one run.
    await page.dblclick(tid('start'));
    await finished();
    await expectNoErrors(page, consoleLines);
    const whole = await losses();
    assert.equal(whole.split(',').length, 120);
    const wholeVal = await page.textContent(tid('stat-val'));
    // The validation loss is the chart's second series: before, every 40 steps, after.
    const wholeSeries = await page.getAttribute(tid('loss-chart'), 'data-validation');
    assert.deepEqual(wholeSeries.split(',').map((p) => p.split(':')[0]), ['0', '40', '80', '120']);
    const wholeZip = readFileSync(await downloadZip(page, 'resume-whole.zip'));
    // The stop check asked 5 held-out prompts; the best validation's adapter is kept.
    const wholeCheck = await page.getAttribute(tid('stop-check'), 'data-ended');
    assert.match(wholeCheck, /^\d\/5$/);
    const wholeBestStep = await page.getAttribute(tid('best-info'), 'data-step');
    assert.ok(['40', '80', '120'].includes(wholeBestStep), `best at ${wholeBestStep}`);
    const wholeBest = readFileSync(await downloadBest(page, 'resume-best-whole.zip'));

    // Again, reloaded once a checkpoint past step 3 is stored: the browser
    // asks before the page goes.
    await page.click(tid('start'));
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="resume-run"]').dataset.step) >= 6
      && document.body.dataset.run === 'running', null, { timeout: 120_000 });
    await page.reload();
    assert.ok(dialogs.some((d) => d.type === 'beforeunload'), JSON.stringify(dialogs));
    await waitForEngine(page, 'cpu');
    await page.waitForSelector(`${tid('resume-box')}:not([hidden])`);
    const stored = Number(await page.getAttribute(tid('resume-run'), 'data-step'));
    assert.ok(stored >= 6 && stored < 120, `stored at step ${stored}`);
    assert.match(await page.textContent(tid('resume-text')), new RegExp(`step ${stored} of 120, model local model, data chat\\.jsonl`));
    assert.equal(await page.isDisabled(tid('resume-run')), true, 'not before the model and data are chosen');

    // Other data (one example fewer) is refused by its fingerprint.
    await chooseModelAndData();
    const fewer = join(OUT, 'fewer.jsonl');
    writeFileSync(fewer, readFileSync(sample, 'utf8').split('\n').slice(1).join('\n'));
    await page.setInputFiles(tid('data-file'), fewer);
    await page.waitForFunction(() => /^fewer\.jsonl \(/.test(document.querySelector('[data-testid="data-summary"]').textContent));
    await page.click(tid('resume-run'));
    await page.waitForSelector(`${tid('errors')} .error`);
    assert.match(await page.textContent(tid('errors')), /the run was trained on chat\.jsonl \(24 examples\) and the data chosen now \(fewer\.jsonl, 23 examples\) is different/);
    await page.click(`${tid('errors')} .error button`);

    // The same files: it goes on from its step into the uninterrupted run's
    // losses, validation losses and adapter, byte for byte.
    await page.setInputFiles(tid('data-file'), sample);
    await page.waitForFunction(() => /^chat\.jsonl \(/.test(document.querySelector('[data-testid="data-summary"]').textContent));
    await page.click(tid('resume-run'));
    await page.waitForFunction((n) => document.querySelector('[data-testid="run-status"]').textContent.startsWith(`Resumed from step ${n} of 120`)
      || document.body.dataset.run !== 'running', stored);
    await finished();
    await expectNoErrors(page, consoleLines);
    assert.equal(await losses(), whole);
    assert.equal(await page.textContent(tid('stat-val')), wholeVal);
    assert.equal(await page.getAttribute(tid('loss-chart'), 'data-validation'), wholeSeries);
    assert.ok(readFileSync(await downloadZip(page, 'resume-resumed.zip')).equals(wholeZip), 'the same adapter zip');
    assert.equal(await page.getAttribute(tid('stop-check'), 'data-ended'), wholeCheck);
    assert.equal(await page.getAttribute(tid('best-info'), 'data-step'), wholeBestStep);
    assert.ok(readFileSync(await downloadBest(page, 'resume-best-resumed.zip')).equals(wholeBest), 'the same best adapter zip');

    // Running out of memory in the engine is reported as such; the engine
    // restarts and offers the stored run (kept when the run finished).
    await page.evaluate(() => window.tabtune.post({ type: 'selfTestExhaustMemory' }));
    await page.waitForSelector(`${tid('errors')} .error`, { timeout: 120_000 });
    assert.match(await page.textContent(tid('errors')),
      /the engine ran out of memory: it asked for 268 MB more with \d+ MB in use.*Reduce the batch, the sequence length or the rank.*resume the run from its checkpoint at step 120/s);
    await waitForEngine(page, 'cpu');
    await page.waitForSelector(`${tid('resume-box')}:not([hidden])`);
    assert.equal(await page.getAttribute(tid('resume-run'), 'data-step'), '120');
    await page.click(`${tid('errors')} .error button`);
    await chooseModelAndData();
    await page.evaluate(() => { document.body.dataset.run = ''; });
    await page.click(tid('resume-run'));
    await page.waitForFunction(() => document.querySelector('[data-testid="run-status"]').textContent.startsWith('Finished 120 steps'));
    await expectNoErrors(page, consoleLines);
    assert.equal(await losses(), whole, 'the finished run comes back whole');
    assert.equal(await page.getAttribute(tid('loss-chart'), 'data-validation'), wholeSeries);

    // Its adapter was not downloaded since: loading a model asks first, and
    // "no" keeps it.
    const asked = dialogs.length;
    dialogs.dismissNext = true;
    await page.click(tid('load-model'));
    assert.equal(dialogs.length, asked + 1);
    assert.match(dialogs.at(-1).message, /Loading a model discards the adapter you trained, which has not been downloaded/);
    assert.equal(await page.evaluate(() => document.body.dataset.model), 'loaded', 'nothing was loaded');
    // So does changing the engine; "no" puts the choice back.
    dialogs.dismissNext = true;
    await page.selectOption(tid('setting-backend'), 'auto');
    assert.match(dialogs.at(-1).message, /^Changing the engine discards/);
    assert.equal(await page.inputValue(tid('setting-backend')), 'cpu');
    assert.equal(await page.evaluate(() => document.body.dataset.engine), 'cpu');

    // Two start requests reaching the engine at once: the second is refused.
    await page.evaluate(() => {
      window.tabtune.post({ type: 'start', settings: {}, badLines: 'skip' });
      window.tabtune.post({ type: 'start', settings: {}, badLines: 'skip' });
    });
    await page.waitForSelector(`${tid('errors')} .error`);
    assert.match(await page.textContent(tid('errors')), /a run is already going/);
  } finally {
    await browser.close();
  }
});

test('a lesson: the Quick lesson preset fills the form, samples show the model every few steps, the stop check reports how many answers ended, and early stopping keeps the best adapter', async () => {
  const { browser, page, consoleLines } = await open(ORIGIN, { webgpu: false, query: '?backend=cpu&threads=1' });
  const files = readdirSync(TINY_DIR).map((f) => join(TINY_DIR, f));
  const ended = () => page.waitForFunction(() => ['finished', 'stopped'].includes(document.body.dataset.run), null, { timeout: 120_000 });
  try {
    await waitForEngine(page, 'cpu');
    await page.check(tid('model-source-files'));
    await page.setInputFiles(tid('model-files'), files);
    await loadModel(page, consoleLines);
    // The sample data brings new questions to ask while it trains.
    await page.click(tid('sample-data'));
    await page.waitForFunction(() => /^sample-chat\.jsonl \(/.test(document.querySelector('[data-testid="data-summary"]').textContent));
    assert.equal(await page.inputValue(tid('sample-prompts')),
      'What is the capital of Italy?\nHow many hours are in a day?\nWho painted the Mona Lisa?');
    await page.selectOption(tid('preset'), 'lesson');
    assert.match(await page.textContent(tid('preset-help')), /visibly changes the model/);
    assert.equal(await page.inputValue(tid('setting-lr')), '0.001');
    assert.equal(await page.inputValue(tid('setting-sample-every')), '6');
    assert.equal(await page.inputValue(tid('setting-schedule')), 'cosine');
    // The tiny model's shorter sequences; 13 steps.
    await setSettings(page, { 'seq-len': 64, batch: 2, steps: 13 });
    await page.click(tid('start'));
    await ended();
    await expectNoErrors(page, consoleLines);
    // Newest first: the stop check, then steps 12 and 6, then the original model.
    const rounds = await page.$$eval('[data-testid="sample-round"]', (els) => els.map((e) => `${e.dataset.when}:${e.dataset.step}`));
    assert.deepEqual(rounds, ['after:13', 'during:12', 'during:6', 'before:0']);
    const replies = await page.$$eval('[data-testid="sample-round"]', (els) => els.map((e) => e.querySelectorAll('[data-testid="sample-reply"]').length));
    assert.deepEqual(replies, [3, 3, 3, 3]);
    const prompts = await page.$$eval('[data-testid="sample-round"][data-step="6"] .sample-prompt', (els) => els.map((e) => e.textContent));
    assert.deepEqual(prompts, ['What is the capital of Italy?', 'How many hours are in a day?', 'Who painted the Mona Lisa?']);
    // 24 examples hold none out: the stop check asks the person's prompts.
    assert.match(await page.textContent(tid('stop-check')),
      /^Stop check: [0-3] of 3 your prompts ended with the end-of-turn token within \d+ tokens \(the longest answer in the data\)/);
    assert.equal(await page.isDisabled(tid('download-best')), true, 'no validation, no best');

    // Back to the defaults: no samples.
    await page.selectOption(tid('preset'), '');
    assert.equal(await page.inputValue(tid('setting-sample-every')), '0');

    // Early stopping: a rate that overshoots, validated every step, patience 2.
    await setSettings(page, { 'seq-len': 64, batch: 2, steps: 40, lr: 0.05, validation: 0.25, 'eval-every': 1, patience: 2, dropout: 0 });
    await page.selectOption(tid('setting-schedule'), 'constant');
    await page.evaluate(() => { document.body.dataset.run = ''; });
    await page.click(tid('start'));
    await ended();
    await expectNoErrors(page, consoleLines);
    assert.equal(await page.getAttribute('body', 'data-run'), 'stopped');
    const status = await page.textContent(tid('run-status'));
    const m = status.match(/^Stopped early after (\d+) steps: the validation loss did not improve for 2 validations\. The best \([\d.]+, step (\d+)\) is kept/);
    assert.ok(m, status);
    assert.ok(Number(m[1]) < 40 && Number(m[2]) < Number(m[1]), status);
    assert.equal(await page.getAttribute(tid('best-info'), 'data-step'), m[2]);
    const zip = readFileSync(await downloadBest(page, 'early-best.zip'));
    assert.ok(zip.includes(Buffer.from('adapter_model.safetensors')) && zip.includes(Buffer.from('adapter_config.json')));
  } finally {
    await browser.close();
  }
});

test('with WebGPU, a run reloaded mid-way resumes into the uninterrupted run, within the WebGPU tolerance', async () => {
  const { browser, page, consoleLines } = await open(ORIGIN, { webgpu: true });
  const chooseModelAndData = () => chooseTinyAndSample(page, consoleLines, 'webgpu');
  const settings = { steps: 8, batch: 2, 'seq-len': 64, validation: 0.25, 'eval-every': 4, 'save-every': 2 };
  const series = async () => (await page.getAttribute(tid('loss-chart'), 'data-losses')).split(',').map(Number);
  const finished = () => page.waitForFunction(() => ['finished', 'stopped'].includes(document.body.dataset.run), null, { timeout: 600_000 });
  try {
    await chooseModelAndData();
    await setSettings(page, settings);
    await page.click(tid('start'));
    await finished();
    await expectNoErrors(page, consoleLines);
    const whole = await series();
    assert.equal(whole.length, 8);
    const wholeVal = (await page.getAttribute(tid('loss-chart'), 'data-validation')).split(',');
    const wholeZip = await downloadZip(page, 'webgpu-resume-whole.zip');

    // Again, reloaded once a checkpoint is stored mid-run.
    await page.evaluate(() => { document.body.dataset.run = ''; });
    await page.click(tid('start'));
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="resume-run"]').dataset.step) >= 2
      && document.body.dataset.run === 'running', null, { timeout: 600_000 });
    await page.reload();
    await waitForEngine(page, 'webgpu');
    await page.waitForSelector(`${tid('resume-box')}:not([hidden])`);
    const stored = Number(await page.getAttribute(tid('resume-run'), 'data-step'));
    assert.ok(stored >= 2 && stored < 8, `stored at step ${stored}`);
    await chooseModelAndData();
    await page.click(tid('resume-run'));
    await page.waitForFunction((n) => document.querySelector('[data-testid="run-status"]').textContent.startsWith(`Resumed from step ${n} of 8`)
      || ['finished', 'stopped'].includes(document.body.dataset.run), stored);
    await finished();
    await expectNoErrors(page, consoleLines);
    assert.equal(await page.getAttribute('body', 'data-run'), 'finished');
    // Every loss within the WebGPU tests' tolerance of the uninterrupted run's
    // (1e-3 relative, as the page's against the CLI's).
    const resumed = await series();
    assert.equal(resumed.length, 8);
    const worst = Math.max(...resumed.map((l, i) => Math.abs(l - whole[i]) / whole[i]));
    assert.ok(worst <= 1e-3, `losses ${resumed} vs ${whole}: relative ${worst}`);
    const resumedVal = (await page.getAttribute(tid('loss-chart'), 'data-validation')).split(',');
    assert.deepEqual(resumedVal.map((p) => p.split(':')[0]), wholeVal.map((p) => p.split(':')[0]));
    resumedVal.forEach((p, i) => {
      const [a, b] = [Number(p.split(':')[1]), Number(wholeVal[i].split(':')[1])];
      assert.ok(Math.abs(a - b) / b <= 1e-3, `validation ${p} vs ${wholeVal[i]}`);
    });
    // The adapters: compared by check_adapters.py (every module's update
    // within the WebGPU tolerance).
    const resumedZip = await downloadZip(page, 'webgpu-resume-resumed.zip');
    writeFileSync(join(OUT, 'webgpu-resume.json'), JSON.stringify({
      whole: wholeZip, resumed: resumedZip, stored, worstLossRelative: worst,
    }));
  } finally {
    await browser.close();
  }
});

test('a run whose loss is not a finite number stops by itself in the page, naming the steps and the cause, and keeps the adapter it had', async () => {
  // The tiny model with one weight of its last MLP set to NaN: every loss is NaN.
  const dir = join(OUT, 'tiny-nan');
  mkdirSync(dir, { recursive: true });
  for (const f of readdirSync(TINY_DIR)) {
    let bytes = readFileSync(join(TINY_DIR, f));
    if (f === 'model.safetensors') {
      const len = Number(bytes.readBigUInt64LE(0));
      const header = JSON.parse(bytes.subarray(8, 8 + len).toString('utf8'));
      const t = header['model.layers.1.mlp.down_proj.weight'];
      assert.equal(t.dtype, 'F32');
      bytes = Buffer.from(bytes);
      bytes.writeFloatLE(NaN, 8 + len + t.data_offsets[0] + 3 * 4);
    }
    writeFileSync(join(dir, f), bytes);
  }
  const { browser, page, consoleLines } = await open(ORIGIN, { webgpu: false, query: '?backend=cpu&threads=1' });
  try {
    await waitForEngine(page, 'cpu');
    await page.check(tid('model-source-files'));
    await page.setInputFiles(tid('model-files'), readdirSync(dir).map((f) => join(dir, f)));
    await loadModel(page, consoleLines);
    await page.setInputFiles(tid('data-file'), join(ROOT, 'www/samples/chat.jsonl'));
    await page.waitForFunction(() => /^chat\.jsonl \(/.test(document.querySelector('[data-testid="data-summary"]').textContent));
    await setSettings(page, { steps: 10, batch: 2, 'seq-len': 64, validation: 0 });
    await page.click(tid('start'));
    await page.waitForFunction(() => ['finished', 'stopped'].includes(document.body.dataset.run), null, { timeout: 120_000 });
    assert.equal(await page.getAttribute('body', 'data-run'), 'stopped');
    assert.match(await page.textContent(tid('run-status')),
      /^Stopped after 3 steps: steps 1 to 3 had a loss or gradient norm that is not a finite number .*after step 0\. The base model's own loss on these examples is not finite/);
    assert.match(await page.textContent(tid('errors')), /The run stopped by itself: steps 1 to 3/);
    assert.equal(await page.textContent(tid('stat-loss')), 'NaN (update skipped)');
    assert.equal(await page.getAttribute(tid('loss-chart'), 'data-points'), '0', 'no NaN is plotted');
    // The adapter it had (as initialised: every update was skipped)
    // downloads; the check says why it cannot compare logits.
    await page.click(`${tid('errors')} .error button`);
    const [download] = await Promise.all([page.waitForEvent('download', { timeout: 120_000 }), page.click(tid('download'))]);
    assert.equal(download.suggestedFilename(), 'tabtune-adapter.zip');
    await download.saveAs(join(OUT, 'nan-run.zip'));
    assert.match(await page.textContent(tid('self-check-peft')),
      /^self-check FAILED: the live model's own logits are not finite numbers \(NaN or infinite\) on \d+ tokens, so adapter_model\.safetensors cannot be compared with them/);
  } finally {
    await browser.close();
  }
});
