// Shared by the browser tests and the screenshot script: the static server,
// Debian's headless Chromium (WebGPU on its SwiftShader adapter) and the page's common moves.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const FLAGS = ['--no-sandbox', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run', '--disable-quic', '--disable-gpu-sandbox'];

// scripts/serve.py on a random port; `mounts` maps URL prefixes to folders.
export async function startServer(mounts = {}) {
  const port = 8000 + Math.floor(Math.random() * 900);
  const args = [join(ROOT, 'scripts/serve.py'), '--port', String(port), '--dir', join(ROOT, 'www')];
  for (const [prefix, dir] of Object.entries(mounts)) args.push('--mount', `${prefix}=${dir}`);
  const server = spawn('python3', args, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, TABTUNE_SERVE_QUIET: '1' } });
  await new Promise((resolve, reject) => {
    server.stdout.once('data', resolve);
    server.once('exit', (code) => reject(new Error(`serve.py exited with ${code}`)));
  });
  return { origin: `http://127.0.0.1:${port}`, stop: () => server.kill() };
}

// A fresh browser on the page (`query`: e.g. '?threads=1'); every request
// and console line is recorded.
export async function open(origin, { webgpu, query = '' }) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: webgpu ? [...FLAGS, '--enable-unsafe-webgpu'] : FLAGS,
  });
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1100, height: 1500 } });
  const requests = [];
  context.on('request', (r) => requests.push({ url: r.url(), at: Date.now() }));
  const page = await context.newPage();
  // The page's questions (confirm, beforeunload) are recorded and accepted,
  // as a person who means it would; `dialogs.dismissNext` says no once.
  const dialogs = [];
  page.on('dialog', (d) => {
    dialogs.push({ type: d.type(), message: d.message() });
    if (dialogs.dismissNext) {
      dialogs.dismissNext = false;
      d.dismiss();
    } else {
      d.accept();
    }
  });
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  await page.goto(`${origin}/${query}`);
  return { browser, context, page, requests, consoleLines, dialogs };
}

export const tid = (id) => `[data-testid="${id}"]`;

export async function expectNoErrors(page, consoleLines) {
  const errors = await page.locator(`${tid('errors')} .error`).allTextContents();
  assert.deepEqual(errors, [], `errors shown in the page:\n${errors.join('\n')}\nconsole:\n${consoleLines.join('\n')}`);
}

export async function waitForEngine(page, backend) {
  await page.waitForFunction((b) => document.body.dataset.engine === b, backend, { timeout: 60_000 });
}

export async function loadModel(page, consoleLines) {
  await page.click(tid('load-model'));
  await page.waitForFunction(() => document.body.dataset.model === 'loaded' || document.querySelector('#errors .error'),
    null, { timeout: 300_000 });
  await expectNoErrors(page, consoleLines);
}

export async function setSettings(page, settings) {
  for (const [id, value] of Object.entries(settings)) await page.fill(tid(`setting-${id}`), String(value));
}
