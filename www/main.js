// The page: wires the form to the worker (worker.js) and renders what it
// reports. Nothing heavy runs here, so the page stays responsive.

import { download, fetchRepo, forgetAll } from './hub.js';
import { LossChart } from './chart.js';

const DEFAULT_MODEL = {
  url: 'models/SmolLM2-135M-Instruct.Q4_1.gguf',
  name: 'SmolLM2-135M-Instruct.Q4_1.gguf',
  base: 'HuggingFaceTB/SmolLM2-135M-Instruct',
};
const SAMPLE_DATA = 'samples/chat.jsonl';

const $ = (id) => document.getElementById(id);
const state = {
  worker: null,
  ready: false,
  model: null, // {load message, info}
  data: null, // {file, handle: the File}
  summary: null,
  running: false,
  paused: false,
  trained: false,
  generating: 0,
};
let chart;
let lastModelSource = null;

// ---- errors, shown in the page ----------------------------------------
function showError(text) {
  const box = $('errors');
  const item = document.createElement('div');
  item.className = 'error';
  item.dataset.testid = 'error';
  item.textContent = text;
  const close = document.createElement('button');
  close.type = 'button';
  close.textContent = '×';
  close.title = 'Dismiss';
  close.onclick = () => item.remove();
  item.append(close);
  box.append(item);
}
function clearErrors() {
  $('errors').replaceChildren();
}

// ---- formatting --------------------------------------------------------
const mb = (n) => `${(n / 1e6).toFixed(1)} MB`;
function duration(ms) {
  if (!Number.isFinite(ms)) return '–';
  const s = Math.round(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${r}s` : `${r}s`;
}
const count = (n) => n.toLocaleString('en-US');

// ---- the worker ----------------------------------------------------------
function startWorker() {
  if (state.worker) state.worker.terminate();
  state.ready = false;
  state.model = null;
  state.running = false;
  state.trained = false;
  $('backend').textContent = 'starting…';
  document.body.dataset.engine = '';
  $('backend-reason').textContent = '';
  const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  worker.onmessage = ({ data }) => onWorker(data);
  worker.onerror = (e) => {
    showError(`The engine could not start: ${e.message || 'the worker failed to load'}`);
    e.preventDefault();
  };
  state.worker = worker;
  worker.postMessage({ type: 'init', backend: settingsForm().backend.value });
  refresh();
}

function send(msg, transfer) {
  state.worker.postMessage(msg, transfer || []);
}

function onWorker(msg) {
  if (msg.memory) {
    $('engine-memory').textContent = `· memory ${mb(msg.memory)}`;
    $('engine-memory').dataset.bytes = String(msg.memory);
  }
  switch (msg.type) {
    case 'ready':
      state.ready = true;
      $('backend').textContent = msg.backend === 'webgpu' ? 'WebGPU' : 'CPU (WebAssembly)';
      $('backend').dataset.backend = msg.backend;
      $('backend-reason').textContent = `(${msg.reason})`;
      $('version').textContent = msg.version;
      document.body.dataset.engine = msg.backend;
      break;
    case 'model':
      state.model = { info: msg.info, source: lastModelSource };
      state.trained = false; // the worker dropped the old run with the old model
      state.summary = null;
      renderSummary(null);
      modelProgress(null);
      $('model-info').textContent = `${msg.info.name}: ${msg.info.layers} layers, width ${msg.info.hidden}, `
        + `${count(msg.info.parameters)} parameters, vocabulary ${count(msg.info.vocab)}`
        + `${msg.info.chat_template ? ', chat template' : ', no chat template'}.`;
      if (!$('base-name').value || $('base-name').dataset.auto === '1') {
        $('base-name').value = lastModelSource?.base || msg.info.name;
        $('base-name').dataset.auto = '1';
      }
      document.body.dataset.model = 'loaded';
      if (state.data) prepareData();
      break;
    case 'data-progress':
      $('data-summary').textContent = `Reading ${msg.file}: ${mb(msg.read)} of ${mb(msg.size)} `
        + `(${Math.floor((100 * msg.read) / Math.max(msg.size, 1))}%)…`;
      break;
    case 'data':
      state.summary = msg.summary;
      renderSummary(msg.summary);
      break;
    case 'started':
      state.running = true;
      state.paused = false;
      state.trained = true;
      chart.clear();
      $('run-status').textContent = `Training ${count(msg.info.examples)} examples for ${msg.info.steps} steps, `
        + `${count(msg.info.trainable_parameters)} trainable parameters`
        + (msg.info.truncated ? `; ${msg.info.truncated} example${msg.info.truncated === 1 ? '' : 's'} cut to the sequence length` : '')
        + (msg.info.skipped ? `; ${msg.info.skipped} left out with nothing to train after the cut` : '') + '.';
      $('stat-step').textContent = `0 / ${msg.info.steps}`;
      $('stat-val').textContent = msg.info.validation_examples ? '…' : 'none (too few examples)';
      delete $('stat-val').dataset.before;
      delete $('stat-val').dataset.after;
      document.body.dataset.run = 'running';
      break;
    case 'step': {
      const r = msg.report;
      chart.add(r.step, r.loss);
      $('stat-step').textContent = `${r.step} / ${r.steps}`;
      $('stat-loss').textContent = r.loss.toFixed(4);
      $('stat-tps').textContent = msg.tokensPerSecond.toFixed(1);
      $('stat-elapsed').textContent = duration(msg.elapsedMs);
      $('stat-eta').textContent = duration(msg.etaMs);
      break;
    }
    case 'validation': {
      const el = $('stat-val');
      if (msg.when === 'before') el.textContent = `${msg.loss.toFixed(4)} → …`;
      else el.textContent = el.textContent.replace('…', msg.loss.toFixed(4));
      el.title = `mean loss over ${msg.tokens} tokens of ${msg.examples} held-out examples`;
      el.dataset[msg.when] = String(msg.loss);
      break;
    }
    case 'paused':
      document.body.dataset.run = 'paused';
      $('run-status').textContent = 'Paused. Resume to continue, or try the adapter as it is now.';
      break;
    case 'resumed':
      document.body.dataset.run = 'running';
      $('run-status').textContent = 'Training…';
      break;
    case 'finished':
      state.running = false;
      state.paused = false;
      document.body.dataset.run = msg.stopped ? 'stopped' : 'finished';
      $('run-status').textContent = msg.stopped
        ? `Stopped after ${msg.steps} steps. The adapter so far can be tried and downloaded.`
        : `Finished ${msg.steps} steps. Try the adapter below, then download it.`;
      $('stat-eta').textContent = '0s';
      break;
    case 'gen-text':
      $(msg.id === 'tuned' ? 'out-tuned' : 'out-base').textContent += msg.text;
      break;
    case 'gen-done':
      $(msg.id === 'tuned' ? 'out-tuned' : 'out-base').textContent = msg.text;
      state.generating -= 1;
      if (!state.generating) document.body.dataset.generate = 'done';
      break;
    case 'zip':
      saveZip(msg.bytes);
      break;
    case 'error':
      if (msg.where === 'loadGguf' || msg.where === 'loadHf') {
        modelProgress(null);
        document.body.dataset.model = state.model ? 'loaded' : '';
      }
      if (msg.where === 'generate') {
        state.generating = Math.max(0, state.generating - 1);
        if (!state.generating) document.body.dataset.generate = 'done';
      }
      if (msg.where === 'data') {
        state.summary = null;
        renderSummary(null);
      }
      if (msg.where === 'init') $('backend').textContent = 'not started';
      showError(msg.message);
      break;
    case 'fatal':
      showError(`${msg.message}. The engine was restarted; load the model again to go on.`);
      document.body.dataset.model = '';
      if (state.running) {
        document.body.dataset.run = 'stopped';
        $('run-status').textContent = 'The run ended with the engine. Load the model and start again.';
      }
      startWorker();
      break;
    default:
      break;
  }
  refresh();
}

// ---- model -----------------------------------------------------------------
function modelSource() {
  return document.querySelector('input[name="model-source"]:checked').value;
}

function modelProgress(text, fraction) {
  const bar = $('model-progress');
  if (text === null) {
    bar.hidden = true;
    $('model-progress-text').textContent = '';
    return;
  }
  bar.hidden = false;
  if (fraction === undefined) bar.removeAttribute('value');
  else bar.value = fraction;
  $('model-progress-text').textContent = text;
}

async function loadModel() {
  clearErrors();
  // The loaded model (if any) stays in use until a new one has loaded.
  document.body.dataset.model = 'loading';
  refresh();
  try {
    const source = modelSource();
    if (source === 'default') {
      const bytes = await download(DEFAULT_MODEL.url, {
        onProgress: (r, t) => modelProgress(`Downloading ${mb(r)}${t ? ` of ${mb(t)}` : ''}`, t ? r / t : undefined),
      });
      lastModelSource = { base: DEFAULT_MODEL.base };
      modelProgress('Loading the model…');
      send({ type: 'loadGguf', name: DEFAULT_MODEL.name, bytes }, [bytes]);
    } else if (source === 'files') {
      await loadLocalFiles([...$('model-files').files]);
    } else {
      const spec = {
        base: $('hub-base').value.trim(),
        repo: $('hub-repo').value.trim(),
        revision: $('hub-revision').value.trim() || 'main',
        gguf: $('hub-file').value.trim(),
      };
      const got = await fetchRepo(spec, (file, r, t) =>
        modelProgress(`${file}: ${mb(r)}${t ? ` of ${mb(t)}` : ''}`, t ? r / t : undefined));
      lastModelSource = { base: spec.repo };
      modelProgress('Loading the model…');
      if (got.kind === 'gguf') send({ type: 'loadGguf', name: got.name, bytes: got.bytes }, [got.bytes]);
      else send({ type: 'loadHf', name: got.name, files: got.files }, Object.values(got.files).filter(Boolean));
    }
  } catch (e) {
    modelProgress(null);
    document.body.dataset.model = state.model ? 'loaded' : '';
    showError(e.message);
  }
  refresh();
}

async function loadLocalFiles(files) {
  if (!files.length) throw new Error('Choose a .gguf file, or model.safetensors + config.json + tokenizer.json');
  const gguf = files.filter((f) => f.name.endsWith('.gguf'));
  if (gguf.length > 1) throw new Error(`Choose one .gguf file, not ${gguf.length}`);
  if (gguf.length === 1) {
    const bytes = await gguf[0].arrayBuffer();
    lastModelSource = { base: gguf[0].name.replace(/\.gguf$/, '') };
    modelProgress('Loading the model…');
    send({ type: 'loadGguf', name: gguf[0].name, bytes }, [bytes]);
    return;
  }
  const byName = Object.fromEntries(files.map((f) => [f.name, f]));
  const missing = ['config.json', 'model.safetensors', 'tokenizer.json'].filter((n) => !byName[n]);
  if (missing.length) {
    throw new Error(`Missing ${missing.join(', ')}: choose model.safetensors, config.json and tokenizer.json together `
      + `(you chose ${files.map((f) => f.name).join(', ')})`);
  }
  const read = async (n) => (byName[n] ? byName[n].arrayBuffer() : undefined);
  const fileSet = {
    config: await read('config.json'),
    weights: await read('model.safetensors'),
    tokenizer: await read('tokenizer.json'),
    tokenizer_config: await read('tokenizer_config.json'),
    chat_template: await read('chat_template.jinja'),
  };
  const name = 'local model';
  lastModelSource = { base: name };
  modelProgress('Loading the model…');
  send({ type: 'loadHf', name, files: fileSet }, Object.values(fileSet).filter(Boolean));
}

// ---- data --------------------------------------------------------------------
function useDataFile(file) {
  clearErrors();
  // The page keeps the File, not its bytes: the worker reads it a slice at
  // a time, so only its tokens are ever held.
  state.data = { file: file.name, handle: file };
  prepareData();
}

async function prepareData() {
  if (!state.data) return;
  if (!state.model) {
    $('data-summary').textContent = `${state.data.file}: ${mb(state.data.handle.size)}, read once a model is loaded.`;
    return;
  }
  const seqLen = Number(settingsForm().seq_len.value) || 256;
  state.summary = null;
  $('data-summary').textContent = `Reading ${state.data.file}…`;
  refresh();
  send({
    type: 'data', file: state.data.file, blob: state.data.handle, seqLen,
    format: $('data-format').value, columns: $('data-columns').value.trim(),
    allTokens: $('data-all-tokens').checked,
  });
}

// The person's choice for bad lines: leave them out, or stop until fixed.
const stopAtBadLines = () => $('data-bad').value === 'stop';
const blockedByBadLines = () => !!(state.summary && state.summary.problems.length && stopAtBadLines());

function badLinesNote(n) {
  return stopAtBadLines()
    ? ` Training waits until ${n === 1 ? 'this line is' : `these ${count(n)} lines are`} fixed (or bad lines are set to be left out):`
    : ' Bad lines are left out:';
}

function renderSummary(s) {
  const problems = $('data-problems');
  problems.replaceChildren();
  if (!s) {
    $('data-summary').textContent = '';
    $('data-preview').replaceChildren();
    $('data-preview-box').hidden = true;
    return;
  }
  $('data-summary').textContent = `${s.file} (${s.format}, ${s.schema}): ${count(s.examples)} examples`
    + (s.turns ? ` with ${count(s.turns)} turns` : '') + `, ${count(s.tokens)} tokens `
    + `(${count(s.trained_tokens)} trained), ${s.problems.length} bad line${s.problems.length === 1 ? '' : 's'}`
    + (s.longer_than_seq_len ? `, ${s.longer_than_seq_len} longer than ${s.seq_len} tokens (they will be cut)` : '') + '.'
    + (s.problems.length ? badLinesNote(s.problems.length) : '');
  for (const n of s.notes.slice(0, 50)) {
    const li = document.createElement('li');
    li.className = 'note';
    li.textContent = `line ${n.line}: ${n.reason}`;
    li.dataset.line = n.line;
    problems.append(li);
  }
  for (const p of s.problems.slice(0, 200)) {
    const li = document.createElement('li');
    li.textContent = `line ${p.line}: ${p.reason}`;
    li.dataset.line = p.line;
    problems.append(li);
  }
  if (s.problems.length > 200) {
    const li = document.createElement('li');
    li.textContent = `… and ${s.problems.length - 200} more`;
    problems.append(li);
  }
  const pre = $('data-preview');
  pre.replaceChildren();
  for (const seg of s.preview) {
    const el = document.createElement(seg.trained ? 'mark' : 'span');
    if (seg.trained) el.className = 'trained';
    el.textContent = seg.text;
    pre.append(el);
  }
  $('data-preview-box').hidden = false;
}

// ---- settings, run, generate, download -----------------------------------
function settingsForm() {
  return $('settings').elements;
}

function readSettings() {
  const f = settingsForm();
  const num = (name, { int = false } = {}) => {
    const raw = f[name].value.trim();
    const v = Number(raw);
    if (raw === '' || !Number.isFinite(v) || (int && !Number.isInteger(v))) {
      throw new Error(`Setting ${f[name].closest('label').firstChild.textContent.trim()}: "${raw}" is not ${int ? 'a whole number' : 'a number'}`);
    }
    return v;
  };
  const targets = [...document.querySelectorAll('input[name="target"]:checked')].map((c) => c.value);
  if (!targets.length) throw new Error('Setting Targets: choose at least one projection');
  const settings = {
    rank: num('rank', { int: true }),
    alpha: num('alpha'),
    lr: num('lr'),
    epochs: num('epochs'),
    batch: num('batch', { int: true }),
    seq_len: num('seq_len', { int: true }),
    dropout: num('dropout'),
    seed: num('seed', { int: true }),
    validation: num('validation'),
    targets: targets.join(','),
  };
  if (f.steps.value.trim() !== '') settings.steps = num('steps', { int: true });
  return settings;
}

function start() {
  clearErrors();
  if (blockedByBadLines()) {
    showError(`${state.summary.file}: ${state.summary.problems.length} bad lines; fix them, or set Bad lines to leave them out`);
    return;
  }
  let settings;
  try {
    settings = readSettings();
  } catch (e) {
    showError(e.message);
    return;
  }
  $('out-tuned').textContent = '';
  send({ type: 'start', settings });
}

function pauseResume() {
  if (!state.running) return;
  state.paused = !state.paused;
  send({ type: state.paused ? 'pause' : 'resume' });
  refresh();
}

function generateBoth() {
  clearErrors();
  const prompt = $('prompt').value;
  const maxTokens = Number($('max-tokens').value);
  if (!prompt.trim()) return showError('Write a prompt first');
  if (!Number.isInteger(maxTokens) || maxTokens < 1 || maxTokens > 2048) {
    return showError('New tokens at most: choose a whole number from 1 to 2048');
  }
  document.body.dataset.generate = 'running';
  $('out-base').textContent = '';
  $('out-tuned').textContent = '';
  state.generating = 1;
  send({ type: 'generate', id: 'base', prompt, maxTokens, tuned: false });
  if (state.trained) {
    state.generating += 1;
    send({ type: 'generate', id: 'tuned', prompt, maxTokens, tuned: true });
  } else {
    $('out-tuned').textContent = '(train first)';
  }
  refresh();
}

function saveZip(bytes) {
  const blob = new Blob([bytes], { type: 'application/zip' });
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = 'tabtune-adapter.zip';
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
}

function refresh() {
  const modelLoaded = !!state.model;
  $('load-model').disabled = !state.ready || state.running;
  $('start').disabled = !(state.ready && modelLoaded && state.summary && !state.running && !blockedByBadLines());
  $('pause').disabled = !state.running;
  $('pause').textContent = state.paused ? 'Resume' : 'Pause';
  $('stop').disabled = !state.running;
  $('generate').disabled = !(modelLoaded && !state.generating);
  $('download').disabled = !(state.trained && modelLoaded);
  $('model-files-row').hidden = modelSource() !== 'files';
  $('model-hub-row').hidden = modelSource() !== 'hub';
}

// ---- wiring ----------------------------------------------------------------
function wire() {
  chart = new LossChart($('chart'));
  for (const r of document.querySelectorAll('input[name="model-source"]')) r.onchange = refresh;
  $('load-model').onclick = loadModel;
  $('forget-models').onclick = async () => {
    await forgetAll();
    $('model-progress-text').textContent = 'Downloaded models forgotten.';
  };
  $('data-file').onchange = (e) => e.target.files[0] && useDataFile(e.target.files[0]);
  $('sample-data').onclick = async () => {
    try {
      const bytes = await download(SAMPLE_DATA);
      useDataFile(new File([bytes], 'sample-chat.jsonl'));
    } catch (e) {
      showError(e.message);
    }
  };
  const drop = $('drop');
  drop.ondragover = (e) => {
    e.preventDefault();
    drop.classList.add('over');
  };
  drop.ondragleave = () => drop.classList.remove('over');
  drop.ondrop = (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const file = e.dataTransfer.files[0];
    if (file) useDataFile(file);
  };
  settingsForm().seq_len.onchange = prepareData;
  $('data-format').onchange = prepareData;
  $('data-columns').onchange = prepareData;
  $('data-all-tokens').onchange = prepareData;
  $('data-bad').onchange = () => {
    renderSummary(state.summary);
    refresh();
  };
  settingsForm().backend.onchange = () => {
    clearErrors();
    $('model-info').textContent = '';
    document.body.dataset.model = '';
    startWorker();
  };
  $('start').onclick = start;
  $('pause').onclick = pauseResume;
  $('stop').onclick = () => send({ type: 'stop' });
  $('generate').onclick = generateBoth;
  $('download').onclick = () => {
    clearErrors();
    send({ type: 'export', baseModel: $('base-name').value.trim() || state.model.info.name });
  };
  $('base-name').oninput = () => { $('base-name').dataset.auto = '0'; };
  window.addEventListener('error', (e) => showError(`Page error: ${e.message}`));
  window.addEventListener('unhandledrejection', (e) => showError(`Page error: ${e.reason?.message || e.reason}`));
  startWorker();
  // A handle for scripts that drive the page: post a worker request.
  window.tabtune = { post: (msg) => send(msg) };
}

wire();
