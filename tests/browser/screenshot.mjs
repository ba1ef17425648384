// Makes the README's picture (www/screenshot.png): the default flow on the
// CPU path, captured mid-training. Run after scripts/build-web.sh:
//   node tests/browser/screenshot.mjs [OUT.png] [STEP]

import { join } from 'node:path';
import { ROOT, startServer, open, tid, waitForEngine, loadModel, setSettings } from './driver.mjs';

const out = process.argv[2] || join(ROOT, 'www/screenshot.png');
const at = Number(process.argv[3] || 12);
const server = await startServer();
const { browser, page, consoleLines } = await open(server.origin, { webgpu: false });
try {
  await waitForEngine(page, 'cpu');
  await loadModel(page, consoleLines);
  await page.click(tid('sample-data'));
  await page.waitForFunction(() => /examples/.test(document.querySelector('[data-testid="data-summary"]').textContent));
  await setSettings(page, { steps: 24, batch: 2, 'seq-len': 96, lr: 0.001 });
  await page.click(tid('start'));
  await page.waitForFunction((n) => Number(document.querySelector('[data-testid="loss-chart"]').dataset.points) >= n,
    at, { timeout: 600_000 });
  await page.screenshot({ path: out, fullPage: true });
  console.log(`wrote ${out} at step ${at}`);
} finally {
  await browser.close();
  server.stop();
}
