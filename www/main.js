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
// New questions (not in the sample data) whose answers show its style.
const SAMPLE_PROMPTS = ['What is the capital of Italy?', 'How many hours are in a day?', 'Who painted the Mona Lisa?'];
// Sample rounds kept on the page (the newest first).
const SAMPLE_ROUNDS = 12;

const $ = (id) => document.getElementById(id);
const state = {
  worker: null,
  ready: false,
  model: null, // {load message, info}
  data: null, // {file, handle: the File}
  summary: null,
  badLines: [], // what each bad-lines choice means for the data (from the engine)
  settings: null, // the engine's description of each setting
  hubFiles: null, // the files a hub repository must / may have (from the engine)
  running: false,
  starting: false, // Start or Resume sent, no answer yet: neither can be sent again
  paused: false,
  trained: false,
  downloaded: false, // the trained adapter went out in some download
  checkpoint: null, // the stored run's description (worker.js), or null
  generating: 0,
  // each step of this run: {step, tokens, elapsedMs (stepping time so far),
  // gpu: {dispatches, copies} (its kernel launches and buffer copies on WebGPU)}
  timings: [],
  lastKernels: {}, // the last step's launches by kernel name (WebGPU)
  presets: [], // the engine's presets, each with every setting's value
  best: null, // the run's best validation loss {step, loss}, or null
};
let chart;
let lastModelSource = null;

// ---- errors, shown in the page ----------------------------------------
// What the model-info line says about the template conversations get.
function chatFormatText(format) {
  switch (format) {
    case 'own': return ', its own chat template';
    case 'gemma': return ', no chat template: conversations get Gemma\'s turns (<start_of_turn>user … <end_of_turn>)';
    case 'chat_ml': return ', no chat template: conversations get ChatML (<|im_start|>user … <|im_end|>)';
    default: return ', no tokenizer';
  }
}

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
  state.starting = false;
  state.model = null;
  state.running = false;
  state.trained = false;
  state.best = null;
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
  const form = settingsForm();
  worker.postMessage({ type: 'init', backend: form.backend.value, threads: Number(form.threads.value) || 1 });
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
  if (msg.gpuMemory !== undefined) {
    $('gpu-memory').textContent = `· GPU buffers ${mb(msg.gpuMemory)} (peak ${mb(msg.gpuPeak)})`;
    $('gpu-memory').dataset.bytes = String(msg.gpuMemory);
    $('gpu-memory').dataset.peak = String(msg.gpuPeak);
  }
  switch (msg.type) {
    case 'ready':
      state.ready = true;
      if (msg.backend !== 'webgpu') {
        $('gpu-memory').textContent = '';
        delete $('gpu-memory').dataset.bytes;
        delete $('gpu-memory').dataset.peak;
      }
      $('backend').textContent = msg.backend === 'webgpu' ? 'WebGPU'
        : `CPU (WebAssembly, ${msg.threads === 1 ? 'one thread' : `${msg.threads} threads`})`;
      document.body.dataset.threads = String(msg.threads);
      $('backend').dataset.backend = msg.backend;
      $('backend-reason').textContent = `(${msg.reason})`;
      $('version').textContent = msg.version;
      document.body.dataset.engine = msg.backend;
      state.hubFiles = msg.hubFiles;
      buildSettings(msg.settings);
      buildPresets(msg.presets);
      buildBadLines(msg.badLines);
      state.checkpoint = msg.checkpoint;
      break;
    case 'checkpoint':
      state.checkpoint = msg.info;
      break;
    case 'settings-check':
      showFieldErrors(msg.errors);
      break;
    case 'model':
      state.model = { info: msg.info, source: lastModelSource };
      state.trained = false; // the worker dropped the old run with the old model
      state.summary = null;
      renderSummary(null);
      modelProgress(null);
      $('model-info').textContent = `${msg.info.name}: ${msg.info.layers} layers, width ${msg.info.hidden}, `
        + `${count(msg.info.parameters)} parameters (${mb(msg.info.weight_bytes)} loaded${msg.info.base_weights === 'stored' ? '' : `, quantized to ${msg.info.base_weights.toUpperCase()}`}${msg.info.requantized ? `, ${msg.info.requantized} k-quant matrices requantized to Q8_0 for the GPU` : ''}), vocabulary ${count(msg.info.vocab)}`
        + `${chatFormatText(msg.info.chat_format)}.`;
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
      state.badLines = msg.bad_lines;
      renderSummary(msg.summary);
      break;
    case 'started':
      state.running = true;
      state.starting = false;
      state.paused = false;
      state.trained = true;
      state.downloaded = false;
      chart.clear();
      state.timings = [];
      $('stat-kernels').textContent = '–';
      $('run-status').textContent = `Training ${count(msg.info.examples)} examples for ${msg.info.steps} steps, `
        + `${count(msg.info.trainable_parameters)} trainable parameters`
        + (msg.info.truncated ? `; ${msg.info.truncated} example${msg.info.truncated === 1 ? '' : 's'} cut to the sequence length` : '')
        + (msg.info.skipped ? `; ${msg.info.skipped} left out with nothing to train after the cut` : '') + '.';
      $('stat-step').textContent = `${msg.info.resumed_at} / ${msg.info.steps}`;
      $('stat-val').textContent = msg.info.validation_examples ? '…' : 'none (too few examples)';
      delete $('stat-val').dataset.before;
      delete $('stat-val').dataset.after;
      delete $('stat-val').dataset.during;
      document.body.dataset.run = 'running';
      $('samples').replaceChildren();
      $('stop-check').textContent = '';
      delete $('stop-check').dataset.ended;
      state.best = msg.best || null;
      renderBest();
      // A resumed run: its steps and validation losses before the checkpoint.
      if (msg.info.resumed_at) {
        for (const r of msg.history || []) if (!r.skipped) chart.add(r.step, r.loss);
        for (const v of msg.validations || []) onWorker({ type: 'validation', ...v });
        $('run-status').textContent = `Resumed from step ${msg.info.resumed_at} of ${msg.info.steps}.`;
      }
      break;
    case 'step': {
      const r = msg.report;
      if (!r.skipped) chart.add(r.step, r.loss);
      state.timings.push({ step: r.step, tokens: r.tokens, elapsedMs: msg.elapsedMs,
        gpu: { dispatches: msg.gpu.dispatches, copies: msg.gpu.copies } });
      state.lastKernels = msg.gpu.kernels;
      $('stat-step').textContent = `${r.step} / ${r.steps}`;
      $('stat-loss').textContent = r.skipped ? `${r.loss} (update skipped)` : r.loss.toFixed(4);
      $('stat-tps').textContent = msg.tokensPerSecond.toFixed(1);
      $('stat-elapsed').textContent = duration(msg.elapsedMs);
      $('stat-eta').textContent = duration(msg.etaMs);
      $('stat-kernels').textContent = msg.gpu.dispatches ? count(msg.gpu.dispatches) : '–';
      break;
    }
    case 'validation': {
      chart.addValidation(msg.step, msg.loss);
      const el = $('stat-val');
      const before = el.dataset.before ? Number(el.dataset.before).toFixed(4) : '–';
      if (msg.when === 'before') el.textContent = `${msg.loss.toFixed(4)} → …`;
      else if (msg.when === 'during') el.textContent = `${before} → ${msg.loss.toFixed(4)} (step ${msg.step}) → …`;
      else el.textContent = `${before} → ${msg.loss.toFixed(4)}`;
      el.title = `mean loss over ${msg.tokens} tokens of ${msg.examples} held-out examples`;
      el.dataset[msg.when] = String(msg.loss);
      if (msg.best !== undefined) {
        state.best = msg.best;
        renderBest();
      }
      break;
    }
    case 'samples':
      renderSamples(msg);
      break;
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
      $('run-status').textContent = msg.reason
        ? `Stopped after ${msg.steps} steps: ${msg.reason}`
        : msg.early
          ? `Stopped early after ${msg.steps} steps: the validation loss did not improve for ${msg.early.patience} validations. `
            + `The best (${msg.early.best_loss.toFixed(4)}, step ${msg.early.best_step}) is kept: download it below.`
        : msg.stopped
          ? `Stopped after ${msg.steps} steps. The adapter so far can be tried and downloaded.`
          : `Finished ${msg.steps} steps. Try the adapter below, then download it.`;
      if (msg.reason) showError(`The run stopped by itself: ${msg.reason}`);
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
    case 'zip': {
      saveZip(msg.bytes, msg.file);
      state.downloaded = true;
      if (!msg.check) break;
      // The check of the files just downloaded, next to their button.
      const line = $(msg.kind === 'gguf' ? 'self-check-gguf' : 'self-check-peft');
      line.textContent = msg.check.message;
      line.className = msg.check.passed ? 'check-passed' : 'check-failed';
      break;
    }
    case 'merged-progress':
      $(`self-check-merged-${msg.kind}`).textContent = `Writing the merged model: ${mb(msg.written)} so far…`;
      $(`self-check-merged-${msg.kind}`).className = '';
      break;
    case 'merged': {
      saveBlob(msg.file, msg.name);
      state.downloaded = true;
      const line = $(`self-check-merged-${msg.kind}`);
      line.textContent = msg.check.message;
      line.className = msg.check.passed === null ? '' : msg.check.passed ? 'check-passed' : 'check-failed';
      state.merging = false;
      refresh();
      break;
    }
    case 'self-test':
      state.selfTest = { checks: msg.checks, kernels: msg.kernels };
      break;
    case 'error':
      if (msg.where === 'loadFiles') {
        modelProgress(null);
        document.body.dataset.model = state.model ? 'loaded' : '';
      }
      if (msg.where === 'generate') {
        state.generating = Math.max(0, state.generating - 1);
        if (!state.generating) document.body.dataset.generate = 'done';
      }
      if (msg.where === 'start' || msg.where === 'resumeRun') state.starting = false;
      if (msg.where === 'data') {
        state.summary = null;
        renderSummary(null);
      }
      if (msg.where === 'init') $('backend').textContent = 'not started';
      if (msg.where === 'exportMerged') {
        state.merging = false;
        for (const kind of ['gguf', 'hf']) {
          const line = $(`self-check-merged-${kind}`);
          if (line.textContent.startsWith('Writing')) line.textContent = `Not written: ${msg.message}`;
        }
        refresh();
      }
      showError(msg.message);
      break;
    case 'fatal':
      showError(`${msg.message}. The engine was restarted; load the model again to go on${state.checkpoint ? `, or resume the run from its checkpoint at step ${state.checkpoint.step}` : ''}.`);
      document.body.dataset.model = '';
      state.merging = false;
      state.starting = false;
      if (state.running) {
        document.body.dataset.run = 'stopped';
        $('run-status').textContent = state.checkpoint
          ? `The run ended with the engine. Load the same model and data, then resume from step ${state.checkpoint.step}.`
          : 'The run ended with the engine. Load the model and start again.';
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

// Asks before `action` drops an adapter trained in this page and not yet
// downloaded (its last checkpoint stays in this browser's storage until
// the next run starts).
function confirmDiscard(action) {
  if (!state.trained || state.downloaded) return true;
  return window.confirm(`${action} discards the adapter you trained, which has not been downloaded. `
    + 'Its last checkpoint stays in this browser until the next run starts. Go on?');
}

async function loadModel() {
  if (!confirmDiscard('Loading a model')) return;
  clearErrors();
  // The loaded model (if any) stays in use until a new one has loaded.
  document.body.dataset.model = 'loading';
  refresh();
  try {
    const source = modelSource();
    let name;
    let files;
    if (source === 'default') {
      const bytes = await download(DEFAULT_MODEL.url, {
        onProgress: (r, t) => modelProgress(`Downloading ${mb(r)}${t ? ` of ${mb(t)}` : ''}`, t ? r / t : undefined),
      });
      lastModelSource = { base: DEFAULT_MODEL.base };
      name = DEFAULT_MODEL.name;
      files = [{ name, bytes }];
    } else if (source === 'files') {
      // The engine picks the model's files out of those chosen, or says what is missing.
      lastModelSource = null;
      name = 'local model';
      files = [...$('model-files').files];
    } else {
      const spec = {
        base: $('hub-base').value.trim(),
        repo: $('hub-repo').value.trim(),
        revision: $('hub-revision').value.trim() || 'main',
        gguf: $('hub-file').value.trim(),
      };
      files = await fetchRepo(spec, state.hubFiles, (file, r, t) =>
        modelProgress(`${file}: ${mb(r)}${t ? ` of ${mb(t)}` : ''}`, t ? r / t : undefined));
      lastModelSource = { base: spec.repo };
      name = spec.repo;
    }
    modelProgress('Loading the model…');
    // Downloaded bytes move to the worker; a File is only a handle.
    send({ type: 'loadFiles', name, files, baseWeights: $('base-weights').value }, files.filter((f) => !(f instanceof Blob)).map((f) => f.bytes));
  } catch (e) {
    modelProgress(null);
    document.body.dataset.model = state.model ? 'loaded' : '';
    showError(e.message);
  }
  refresh();
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
  state.summary = null;
  $('data-summary').textContent = `Reading ${state.data.file}…`;
  refresh();
  send({
    type: 'data', file: state.data.file, blob: state.data.handle,
    request: {
      format: $('data-format').value, columns: $('data-columns').value.trim(),
      allTokens: $('data-all-tokens').checked, dropDuplicates: $('data-drop-duplicates').checked,
      seqLen: settingsForm()['seq-len'].value,
    },
  });
}

// The person's choice for bad lines, and what the engine says it means for this file.
const badLinesChoice = () => state.badLines.find((c) => c.policy === $('data-bad').value);
const blockedByBadLines = () => !!(state.summary && badLinesChoice()?.blocked);

function buildBadLines(choices) {
  const select = $('data-bad');
  if (select.options.length) return;
  for (const c of choices) select.append(new Option(c.label, c.policy));
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
  // The engine keeps the first 1,000 bad lines with their reasons and counts the rest.
  const bad = s.problems.length + s.more_problems;
  $('data-summary').textContent = `${s.file} (${s.format}, ${s.schema}): ${count(s.examples)} examples`
    + (s.turns ? ` with ${count(s.turns)} turns` : '') + `, ${count(s.tokens)} tokens `
    + `(${count(s.trained_tokens)} trained), ${count(bad)} bad line${bad === 1 ? '' : 's'}`
    + (s.longer_than_seq_len ? `, ${s.longer_than_seq_len} longer than ${s.seq_len} tokens (they will be cut)` : '') + '.'
    + (badLinesChoice()?.note || '');
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
  if (bad > 200) {
    const li = document.createElement('li');
    li.textContent = `… and ${count(bad - 200)} more`;
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

// The form is built from the engine's description of each setting, so its
// labels, defaults and help are the CLI's; values go to the engine as typed
// and it names any it refuses.
function buildSettings(list) {
  state.settings = list;
  const box = $('settings-fields');
  if (box.childElementCount) return; // a restarted engine keeps the form as it is
  for (const s of list) {
    const help = document.createElement('small');
    help.textContent = s.help;
    const error = document.createElement('small');
    error.className = 'field-error';
    error.dataset.testid = `setting-error-${s.name}`;
    error.id = `setting-error-${s.name}`;
    if (s.kind.type === 'targets') {
      const set = document.createElement('fieldset');
      set.className = 'targets';
      const legend = document.createElement('legend');
      legend.append(`${s.label} `, help);
      set.append(legend);
      const on = s.default === 'all' ? s.kind.choices : s.default.split(',');
      for (const t of s.kind.choices) {
        const label = document.createElement('label');
        const check = document.createElement('input');
        Object.assign(check, { type: 'checkbox', name: 'target', value: t, checked: on.includes(t) });
        check.dataset.testid = `target-${t}`;
        check.onchange = checkSettings;
        label.append(check, t);
        set.append(label);
      }
      set.append(error);
      box.append(set);
      continue;
    }
    const label = document.createElement('label');
    let input;
    if (s.kind.type === 'choice') {
      input = document.createElement('select');
      for (const c of s.kind.choices) input.append(new Option(c, c, false, c === s.default));
    } else if (s.kind.type === 'flag') {
      input = Object.assign(document.createElement('input'), { type: 'checkbox', checked: s.default === 'true' });
      label.className = 'switch';
    } else {
      input = Object.assign(document.createElement('input'), {
        type: 'text', value: s.default, placeholder: s.empty || '',
        inputMode: s.kind.type === 'int' ? 'numeric' : 'decimal', spellcheck: false,
      });
    }
    input.name = s.name;
    input.dataset.testid = `setting-${s.name}`;
    input.setAttribute('aria-describedby', error.id);
    input.onchange = checkSettings;
    label.append(`${s.label} `, input, help, error);
    box.append(label);
  }
}

// The form's values as text, by setting name.
function formValues() {
  const f = settingsForm();
  const values = {};
  for (const s of state.settings || []) {
    if (s.kind.type === 'targets') {
      values[s.name] = [...document.querySelectorAll('input[name="target"]:checked')].map((c) => c.value).join(',');
    } else if (s.kind.type === 'flag') {
      values[s.name] = String(f[s.name].checked);
    } else {
      values[s.name] = f[s.name].value;
    }
  }
  return values;
}

// The presets fill the form: every setting's value under the preset.
function buildPresets(list) {
  state.presets = list;
  const select = $('preset');
  if (select.options.length > 1) return;
  for (const p of list) select.append(new Option(p.label, p.name));
  select.onchange = () => {
    const p = state.presets.find((x) => x.name === select.value);
    const values = p ? p.settings : Object.fromEntries(state.settings.map((s) => [s.name, s.default]));
    $('preset-help').textContent = p ? p.help : 'Fills the settings below; change any of them afterwards.';
    const f = settingsForm();
    for (const s of state.settings) {
      const v = values[s.name] ?? '';
      if (s.kind.type === 'targets') {
        const on = v === 'all' ? s.kind.choices : v.split(',');
        for (const c of document.querySelectorAll('input[name="target"]')) c.checked = on.includes(c.value);
      } else if (s.kind.type === 'flag') {
        f[s.name].checked = v === 'true';
      } else {
        f[s.name].value = v;
      }
    }
    checkSettings();
  };
}

// The sample prompts, one a line, blank lines left out.
function samplePrompts() {
  return $('sample-prompts').value.split('\n').map((l) => l.trim()).filter(Boolean);
}

// One round of samples (the newest first), or the stop check after training.
function renderSamples(m) {
  const whose = { yours: 'your', held_out: 'held-out', training: 'training' }[m.source];
  if (m.when === 'after') {
    $('stop-check').textContent = `Stop check: ${m.ended} of ${m.samples.length} ${whose} prompts ended with the end-of-turn token `
      + `within ${m.max_tokens} tokens (the longest answer in the data)`
      + (m.ended < m.samples.length ? '; those that did not are marked below. More steps, or examples that end their answers, help.' : '.');
    $('stop-check').dataset.ended = `${m.ended}/${m.samples.length}`;
  }
  const round = document.createElement('details');
  round.open = true;
  round.dataset.testid = 'sample-round';
  round.dataset.step = String(m.step);
  round.dataset.when = m.when;
  const title = document.createElement('summary');
  title.textContent = m.when === 'before' ? 'Before training (the original model)'
    : m.when === 'after' ? `After training (step ${m.step}): the stop check` : `Step ${m.step}`;
  round.append(title);
  for (const x of m.samples) {
    const q = document.createElement('p');
    q.className = 'sample-prompt';
    q.textContent = x.prompt;
    const a = document.createElement('pre');
    a.className = 'sample-reply';
    a.dataset.testid = 'sample-reply';
    a.textContent = x.text + (m.when === 'after' && !x.ended ? ` … [did not end within ${m.max_tokens} tokens]` : '');
    round.append(q, a);
  }
  for (const old of $('samples').querySelectorAll('details')) old.open = false;
  $('samples').prepend(round);
  while ($('samples').childElementCount > SAMPLE_ROUNDS) $('samples').lastElementChild.remove();
}

function renderBest() {
  const b = state.best;
  $('best-info').textContent = b
    ? `Validation loss ${b.loss.toFixed(4)} at step ${b.step}, the lowest so far.`
    : 'The adapter with the lowest validation loss, kept while the run goes on (needs Validate every).';
  $('best-info').dataset.step = b ? String(b.step) : '';
}

function checkSettings() {
  send({ type: 'checkSettings', values: formValues() });
}

function showFieldErrors(errors) {
  for (const s of state.settings || []) {
    const el = $(`setting-error-${s.name}`);
    const e = errors.find((x) => x.name === s.name);
    el.textContent = e ? e.message : '';
    const input = settingsForm()[s.name];
    if (input && input.setAttribute) input.setAttribute('aria-invalid', e ? 'true' : 'false');
  }
}

function start() {
  if (state.starting || state.running) return;
  if (!confirmDiscard('Starting again')) return;
  clearErrors();
  if (blockedByBadLines()) {
    showError(`${state.summary.file}: ${state.summary.problems.length + state.summary.more_problems} bad lines; fix them, or set Bad lines to leave them out`);
    return;
  }
  $('out-tuned').textContent = '';
  state.starting = true;
  refresh();
  send({ type: 'start', settings: formValues(), badLines: $('data-bad').value, prompts: samplePrompts() });
}

// Goes on with the stored run, on the model and data chosen now.
function resumeRun() {
  if (state.starting || state.running) return;
  if (!confirmDiscard('Resuming the stored run')) return;
  clearErrors();
  $('out-tuned').textContent = '';
  state.starting = true;
  refresh();
  send({ type: 'resumeRun', prompts: samplePrompts() });
}

function renderCheckpoint() {
  const c = state.checkpoint;
  $('resume-box').hidden = !c || state.running;
  if (!c) {
    delete $('resume-run').dataset.step;
    return;
  }
  $('resume-text').textContent = `A run is stored in this browser: step ${c.step} of ${c.steps}, `
    + `model ${c.model}, data ${c.dataFile}, saved ${new Date(c.savedAt).toLocaleString()}. `
    + 'To go on with it, load that model and choose that data file, then resume.';
  $('resume-run').textContent = `Resume from step ${c.step}`;
  $('resume-run').dataset.step = String(c.step);
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

function saveZip(bytes, file) {
  saveBlob(new Blob([bytes], { type: 'application/zip' }), file);
}

// Hands `blob` (bytes, or a File on disk) to the browser's download.
function saveBlob(blob, file) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = file;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
}

function refresh() {
  const modelLoaded = !!state.model;
  $('load-model').disabled = !state.ready || state.running || state.starting;
  const idle = !state.running && !state.starting;
  $('start').disabled = !(state.ready && modelLoaded && state.summary && idle && !blockedByBadLines());
  renderCheckpoint();
  $('resume-run').disabled = !(state.ready && modelLoaded && state.summary && idle && state.checkpoint);
  $('discard-run').disabled = !idle;
  $('pause').disabled = !state.running;
  $('pause').textContent = state.paused ? 'Resume' : 'Pause';
  $('stop').disabled = !state.running;
  $('generate').disabled = !(modelLoaded && !state.generating);
  $('download').disabled = !(state.trained && modelLoaded);
  $('download-best').disabled = !(state.trained && modelLoaded && state.best);
  $('download-gguf').disabled = !(state.trained && modelLoaded);
  // A merged GGUF copies the base GGUF's vocabulary and chat template.
  const refused = modelLoaded ? state.model.info.merged_gguf_refused : null;
  // Not while a step could change the adapter between the export and its check.
  const settled = state.trained && modelLoaded && !state.running && !state.merging;
  $('download-merged-gguf').disabled = !(settled && !refused);
  $('download-merged-gguf').title = refused || '';
  $('download-merged-hf').disabled = !settled;
  $('download-trl').disabled = !(state.trained && modelLoaded && state.summary && !state.running);
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
  $('data-file').onchange = (e) => {
    const file = e.target.files[0];
    // Cleared, so choosing the same file again (edited, say) reads it again.
    e.target.value = '';
    if (file) useDataFile(file);
  };
  $('sample-data').onclick = async () => {
    try {
      const bytes = await download(SAMPLE_DATA);
      useDataFile(new File([bytes], 'sample-chat.jsonl'));
      if (!$('sample-prompts').value.trim()) $('sample-prompts').value = SAMPLE_PROMPTS.join('\n');
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
  $('settings').addEventListener('change', (e) => { if (e.target.name === 'seq-len') prepareData(); });
  $('data-format').onchange = prepareData;
  $('data-columns').onchange = prepareData;
  $('data-all-tokens').onchange = prepareData;
  $('data-drop-duplicates').onchange = prepareData;
  $('data-bad').onchange = () => {
    renderSummary(state.summary);
    refresh();
  };
  // The engine's choices; `?backend=cpu&threads=1` in the address presets them.
  const params = new URLSearchParams(location.search);
  const form = settingsForm();
  const cores = navigator.hardwareConcurrency || 1;
  form.threads.max = String(cores);
  form.threads.value = String(Math.min(cores, Math.max(1, Number(params.get('threads')) || cores)));
  if (['auto', 'webgpu', 'cpu'].includes(params.get('backend'))) form.backend.value = params.get('backend');
  let engineChoice = { backend: form.backend.value, threads: form.threads.value };
  form.backend.onchange = form.threads.onchange = () => {
    if (!confirmDiscard('Changing the engine')) {
      form.backend.value = engineChoice.backend;
      form.threads.value = engineChoice.threads;
      return;
    }
    engineChoice = { backend: form.backend.value, threads: form.threads.value };
    clearErrors();
    $('model-info').textContent = '';
    document.body.dataset.model = '';
    startWorker();
  };
  $('start').onclick = start;
  $('resume-run').onclick = resumeRun;
  $('discard-run').onclick = () => {
    if (window.confirm('Delete the stored run from this browser?')) send({ type: 'discardCheckpoint' });
  };
  // Closing or reloading the tab while a run goes, or with an adapter not
  // downloaded: the browser asks first.
  window.addEventListener('beforeunload', (e) => {
    if (state.running || (state.trained && !state.downloaded)) {
      e.preventDefault();
      e.returnValue = '';
    }
  });
  $('pause').onclick = pauseResume;
  $('stop').onclick = () => send({ type: 'stop' });
  $('generate').onclick = generateBoth;
  $('download').onclick = () => {
    clearErrors();
    send({ type: 'export', baseModel: $('base-name').value.trim() || state.model.info.name });
  };
  $('download-best').onclick = () => {
    clearErrors();
    send({ type: 'exportBest', baseModel: $('base-name').value.trim() || state.model.info.name });
  };
  $('download-gguf').onclick = () => {
    clearErrors();
    send({ type: 'exportGguf' });
  };
  $('download-trl').onclick = () => {
    clearErrors();
    send({ type: 'exportRecipe', baseModel: $('base-name').value.trim() || state.model.info.name });
  };
  for (const kind of ['gguf', 'hf']) {
    $(`download-merged-${kind}`).onclick = () => {
      clearErrors();
      state.merging = true;
      refresh();
      $(`self-check-merged-${kind}`).textContent = 'Writing the merged model…';
      $(`self-check-merged-${kind}`).className = '';
      send({ type: 'exportMerged', kind, format: $(`merged-${kind}-type`).value });
    };
  }
  $('base-name').oninput = () => { $('base-name').dataset.auto = '0'; };
  window.addEventListener('error', (e) => showError(`Page error: ${e.message}`));
  window.addEventListener('unhandledrejection', (e) => showError(`Page error: ${e.reason?.message || e.reason}`));
  startWorker();
  // A handle for scripts that drive the page: post a worker request, read
  // the engine's description of the settings.
  window.tabtune = { post: (msg) => send(msg), settings: () => state.settings, timings: () => state.timings,
    lastKernels: () => state.lastKernels, selfTest: () => state.selfTest };
}

wire();
