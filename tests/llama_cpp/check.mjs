// llama.cpp loads the GGUF LoRA that `tabtune export --gguf` writes and
// gives the same losses as tabtune.
//
// Trains an adapter with the tabtune CLI on BASE (all seven projections, so
// q/k's row order matters), exports it, and evaluates the data file with
// `tabtune eval` with and without it (`--dump-tokens` gives the exact ids
// and trained positions). llama.cpp (node-llama-cpp's prebuilt CPU binary)
// then loads a base GGUF, alone and with the adapter, and scores the same
// trained tokens: the mean NLL over them, what `tabtune eval` reports.
//
// - On F32 (BASE expanded to f32 by the `gguf` package, f32_copy.py) both
//   compute in f32: each mean within REL_TOL of tabtune's, and the adapter's
//   effect (with minus without) within EFFECT_TOL of tabtune's. Measured on
//   the default model: 1.1e-4 and 8.7e-5, effect 0.013% off; the same adapter
//   with q/k's lora_b rows left in HF order gave 7.9e-3, effect 0.73% off.
//   Gemma 3 270M on tests/fixtures/data/completion.jsonl: 1.1e-4 and 4.4e-5,
//   effect 0.014% off. rsLoRA on q, k, o and down of the default model: 6.3e-5
//   with the adapter, effect 0.016% off.
// - On BASE itself (the file people run) within QUANT_TOL: llama.cpp rounds
//   the activations it multiplies a quantized matrix by to 8 bits, where
//   tabtune expands the weights to f32. Measured on the default model
//   (Q4_1): 4.2e-3 without the adapter, 7.5e-4 with it; on Gemma 3 270M
//   (Q4_K_M: Q4_K, Q5_0, Q6_K, Q8_0) 3.1e-3 and 1.05e-2.
// - With --texts (a JSON of {cases: [{text, ids}]}, ids with BOS first, as
//   transformers gives them and tabtune's tests hold tabtune's to), llama.cpp
//   tokenizes each text to the same ids.
//
// - The merged model (`tabtune export --merged-gguf`, f16 and Q8_0) run alone
//   gives tabtune's loss with the adapter (MERGED below).
//
// Usage: node check.mjs --bin TABTUNE --model BASE.gguf --f32 F32.gguf --data DATA [--steps N] [--lr X]
//        [--texts CASES.json] [--quant-tol X] [--targets LIST] [--rslora] [--via-hf [--hf-texts CASES.json]]

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';

const REL_TOL = 1e-3;
const EFFECT_TOL = 2e-3;
// On the stored file: 1e-2 unless --quant-tol says otherwise (Gemma's mixed
// k-quants measure 1.05e-2 with the adapter; the script gives it 2e-2).
const QUANT_TOL_DEFAULT = '1e-2';

// The merged GGUFs (`export --merged-gguf`), run by llama.cpp with no
// adapter: their loss against tabtune's with the adapter, as a share of the
// adapter's effect (tabtune's loss with it minus without), so that a merge
// that lost the adapter is 100% off. Measured: f16 0.014% (the default
// model) and 0.0004% (Gemma 3 270M); Q8_0, whose blocks round the merged
// weights again, 0.09% and 0.56% (relative to the loss: 1.0e-3 and 2.8e-2,
// Gemma's loss being 0.86 over 30 tokens).
const MERGED = [['f16', 2e-3], ['q8_0', 1.5e-2]];

// --via-hf: an f16 GGUF written from a directory base against tabtune's
// loss; f16 rounding as for the merged GGUFs above. Measured on the default
// model: 2.5e-4 relative, and transformers' ids for all 8 texts.
const VIA_HF_TOL = 2e-3;

const { values: args } = parseArgs({
  options: {
    bin: { type: 'string' }, model: { type: 'string' }, f32: { type: 'string' }, data: { type: 'string' },
    steps: { type: 'string', default: '6' }, lr: { type: 'string', default: '5e-3' }, texts: { type: 'string' },
    targets: { type: 'string', default: 'all' }, rslora: { type: 'boolean', default: false },
    'via-hf': { type: 'boolean', default: false }, 'hf-texts': { type: 'string' },
    'quant-tol': { type: 'string', default: QUANT_TOL_DEFAULT },
  },
});
for (const k of ['bin', 'model', 'f32', 'data']) if (!args[k]) throw new Error(`--${k} is required`);

const tmp = mkdtempSync(join(tmpdir(), 'tabtune-llama-cpp-'));
const tabtune = (...a) => execFileSync(args.bin, a, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
try {
  const adapter = join(tmp, 'adapter');
  const gguf = join(tmp, 'gguf');
  tabtune('train', '--model', args.model, '--data', args.data, '--out', adapter, '--steps', args.steps,
    '--batch', '2', '--seq-len', '128', '--lr', args.lr, '--rank', '8', '--targets', args.targets, '--seed', '7',
    ...(args.rslora ? ['--rslora'] : []));
  tabtune('export', '--model', args.model, '--adapter', adapter, '--gguf', gguf);
  const ours = {};
  for (const [name, extra] of [['base', []], ['lora', ['--adapter', adapter]]]) {
    const dump = join(tmp, `${name}.json`);
    ours[name] = JSON.parse(tabtune('eval', '--model', args.model, '--data', args.data, '--seq-len', '128',
      '--dump-tokens', dump, ...extra));
    ours[name].examples = JSON.parse(readFileSync(dump, 'utf8')).examples;
  }

  const llama = await getLlama({ gpu: false, logLevel: LlamaLogLevel.error });
  const longest = Math.max(...ours.base.examples.map((e) => e.ids.length));
  // The mean NLL of each example's trained tokens, as llama.cpp computes it.
  async function score(model, lora) {
    const context = await model.createContext({
      // One thread a core: node-llama-cpp's default (4 here, on 2 cores) ran 25x slower.
      contextSize: Math.max(256, longest + 16), sequences: 1, batchSize: 512, threads: llama.cpuMathCores,
      ...(lora ? { lora: { adapters: [{ filePath: lora, scale: 1 }] } } : {}),
    });
    const sequence = context.getSequence();
    let nll = 0;
    let count = 0;
    for (const { ids, trained } of ours.base.examples) {
      await sequence.clearHistory();
      // Position p asks for the distribution of token p + 1 when that token is trained.
      const input = ids.map((id, p) => (p + 1 < ids.length && trained[p + 1]
        ? [id, { generateNext: { probabilities: true } }] : id));
      const results = await sequence.controlledEvaluate(input);
      for (let p = 0; p + 1 < ids.length; p++) {
        if (!trained[p + 1]) continue;
        const prob = results[p]?.next?.probabilities?.get(ids[p + 1]);
        if (!(prob > 0)) throw new Error(`llama.cpp gave no probability for token ${p + 1} of an example`);
        nll -= Math.log(prob);
        count += 1;
      }
    }
    await context.dispose();
    return { loss: nll / count, tokens: count };
  }
  let failed = false;
  // The merged files: llama.cpp runs them alone and gives the loss tabtune
  // gives with the adapter.
  for (const [type, tol] of MERGED) {
    const file = join(tmp, `merged-${type}.gguf`);
    tabtune('export', '--model', args.model, '--adapter', adapter, '--merged-gguf', file, '--gguf-type', type);
    const model = await llama.loadModel({ modelPath: file });
    const theirs = await score(model, null);
    await model.dispose();
    const rel = Math.abs(theirs.loss - ours.lora.loss) / ours.lora.loss;
    const off = Math.abs(theirs.loss - ours.lora.loss) / Math.abs(ours.lora.loss - ours.base.loss);
    console.log(`merged ${type}: llama.cpp ${theirs.loss.toFixed(6)} over ${theirs.tokens} tokens with no adapter, `
      + `tabtune ${ours.lora.loss.toFixed(6)} with it (relative difference ${rel.toExponential(2)}); `
      + `off by ${(100 * off).toFixed(3)}% of the adapter's effect (tolerance ${100 * tol}%)`);
    if (off > tol || theirs.tokens !== ours.lora.tokens) failed = true;
  }
  for (const [what, path, tol] of [['f32 copy', args.f32, REL_TOL], ['as stored', args.model, Number(args['quant-tol'])]]) {
    const model = await llama.loadModel({ modelPath: path });
    if (args.texts && path === args.model) {
      const { cases } = JSON.parse(readFileSync(args.texts, 'utf8'));
      for (const { text, ids } of cases) {
        const theirs = Array.from(model.tokenize(text, true));
        const same = theirs.length === ids.length - 1 && theirs.every((id, i) => id === ids[i + 1]);
        if (!same) {
          console.error(`llama.cpp tokenizes ${JSON.stringify(text)} as ${theirs}, tabtune as ${ids.slice(1)}`);
          failed = true;
        }
      }
      console.log(`tokenizer: llama.cpp gives tabtune's ids for ${cases.length} texts${failed ? ' except the ones above' : ''}`);
    }
    const theirs = { base: await score(model, null), lora: await score(model, join(gguf, 'adapter.gguf')) };
    await model.dispose();
    for (const name of ['base', 'lora']) {
      const rel = Math.abs(theirs[name].loss - ours[name].loss) / ours[name].loss;
      console.log(`${what}, ${name}: llama.cpp ${theirs[name].loss.toFixed(6)} over ${theirs[name].tokens} tokens, `
        + `tabtune ${ours[name].loss.toFixed(6)} over ${ours[name].tokens}; relative difference ${rel.toExponential(2)} (tolerance ${tol})`);
      if (rel > tol || theirs[name].tokens !== ours[name].tokens) failed = true;
    }
    if (path === args.f32) {
      const effect = { ours: ours.lora.loss - ours.base.loss, theirs: theirs.lora.loss - theirs.base.loss };
      const off = Math.abs(effect.theirs - effect.ours) / Math.abs(effect.ours);
      console.log(`${what}, the adapter's effect on the loss: llama.cpp ${effect.theirs.toFixed(6)}, tabtune ${effect.ours.toFixed(6)}; `
        + `off by ${(100 * off).toFixed(3)}% (tolerance ${100 * EFFECT_TOL}%)`);
      if (off > EFFECT_TOL) failed = true;
    }
  }
  // --via-hf: the base as a Hugging Face directory (tabtune's merged f32
  // export, which holds the adapter once), merged again with the adapter
  // into an f16 GGUF whose metadata tabtune writes from config.json and
  // tokenizer.json (merge/gguf_meta.rs). llama.cpp runs it alone: the loss
  // of `tabtune eval --model DIR --adapter`, and with --hf-texts (ids with no
  // BOS, as transformers gives them) the same tokens.
  if (args['via-hf']) {
    const dir = join(tmp, 'hf-base');
    tabtune('export', '--model', args.model, '--adapter', adapter, '--merged', dir, '--dtype', 'f32');
    const file = join(tmp, 'from-hf.F16.gguf');
    tabtune('export', '--model', dir, '--adapter', adapter, '--merged-gguf', file, '--gguf-type', 'f16');
    const dump = join(tmp, 'via-hf.json');
    const viaHf = JSON.parse(tabtune('eval', '--model', dir, '--adapter', adapter, '--data', args.data,
      '--seq-len', '128', '--dump-tokens', dump));
    const same = JSON.stringify(JSON.parse(readFileSync(dump, 'utf8')).examples) === JSON.stringify(ours.base.examples);
    if (!same) {
      console.error('the directory base tokenizes the data otherwise than the GGUF base');
      failed = true;
    }
    const model = await llama.loadModel({ modelPath: file });
    if (args['hf-texts']) {
      const { cases } = JSON.parse(readFileSync(args['hf-texts'], 'utf8'));
      let bad = 0;
      for (const { text, ids } of cases) {
        // `true`: special tokens written in the text are read as such, as transformers does.
        const theirs = Array.from(model.tokenize(text, true));
        if (theirs.length !== ids.length || theirs.some((id, i) => id !== ids[i])) {
          console.error(`llama.cpp tokenizes ${JSON.stringify(text)} as ${theirs} with the vocabulary written from tokenizer.json, transformers as ${ids}`);
          bad += 1;
        }
      }
      console.log(`from a directory base, tokenizer: llama.cpp gives transformers' ids for ${cases.length - bad} of ${cases.length} texts`);
      if (bad) failed = true;
    }
    const theirs = await score(model, null);
    await model.dispose();
    const rel = Math.abs(theirs.loss - viaHf.loss) / viaHf.loss;
    console.log(`from a directory base, merged f16: llama.cpp ${theirs.loss.toFixed(6)} over ${theirs.tokens} tokens, `
      + `tabtune ${viaHf.loss.toFixed(6)} over ${viaHf.tokens}; relative difference ${rel.toExponential(2)} (tolerance ${VIA_HF_TOL})`);
    if (rel > VIA_HF_TOL || theirs.tokens !== viaHf.tokens) failed = true;
  }
  await llama.dispose();
  if (failed) {
    console.error('llama.cpp check FAILED');
    process.exitCode = 1;
  } else {
    console.log('llama.cpp check passed');
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
