// Model files over HTTP with progress, kept in the browser's Cache Storage
// so a reload does not download them again. Used for the default model
// (same origin) and for Hugging Face repositories.

const CACHE = 'tabtune-models-v1';

export class HttpError extends Error {
  constructor(url, status) {
    super(`${url}: the server answered ${status}`);
    this.status = status;
  }
}

// Bytes of `url`; `onProgress(received, total)` as they arrive (total 0
// when unknown). With `keep`, the response is stored and later calls are
// answered from storage without any request.
export async function download(url, { onProgress = () => {}, keep = false, optional = false } = {}) {
  const cache = keep && 'caches' in self ? await caches.open(CACHE) : null;
  const hit = cache && (await cache.match(url));
  if (hit && hit.status === 404 && optional) return undefined; // known to be absent
  if (hit && hit.ok) {
    const bytes = await hit.arrayBuffer();
    onProgress(bytes.byteLength, bytes.byteLength);
    return bytes;
  }
  let response;
  try {
    response = await fetch(url, { credentials: 'omit' });
  } catch (e) {
    throw new Error(`${url}: could not connect (${e.message}); check the address and your connection`);
  }
  if (!response.ok) {
    if (optional && response.status === 404) {
      // Remember the absence too, so a reload asks nothing of the hub.
      if (cache) await cache.put(url, new Response(null, { status: 404 }));
      return undefined;
    }
    throw new HttpError(url, response.status);
  }
  const total = Number(response.headers.get('content-length')) || 0;
  const reader = response.body.getReader();
  const chunks = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.byteLength;
    onProgress(received, total);
  }
  const bytes = new Uint8Array(received);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.byteLength;
  }
  if (cache) await cache.put(url, new Response(bytes, { headers: { 'content-type': 'application/octet-stream' } }));
  return bytes.buffer;
}

// Deletes every stored model download.
export async function forgetAll() {
  if ('caches' in self) await caches.delete(CACHE);
}

const REPO = /^[A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*$/;

// Checks the hub fields and returns the URL of one of the repo's files.
export function hubUrl({ base, repo, revision }, file) {
  let u;
  try {
    u = new URL(base);
  } catch {
    throw new Error(`Hub base URL "${base}" is not a URL`);
  }
  if (u.protocol !== 'https:' && u.hostname !== '127.0.0.1' && u.hostname !== 'localhost') {
    throw new Error(`Hub base URL "${base}" must use https`);
  }
  if (!REPO.test(repo)) throw new Error(`Repository "${repo}" should look like owner/name`);
  if (!/^[A-Za-z0-9._\/-]+$/.test(revision)) throw new Error(`Revision "${revision}" is not a branch, tag or commit`);
  return `${u.href.replace(/\/$/, '')}/${repo}/resolve/${encodeURIComponent(revision)}/${file.split('/').map(encodeURIComponent).join('/')}`;
}

// The files of a Hugging Face repository as [{name, bytes}]: one GGUF file
// when `gguf` is given, else those the engine says a model needs
// (`files.required`) and those present of `files.optional`.
export async function fetchRepo(spec, files, onProgress) {
  if (spec.gguf) {
    if (!spec.gguf.endsWith('.gguf')) throw new Error(`GGUF file "${spec.gguf}" should end in .gguf`);
    const bytes = await download(hubUrl(spec, spec.gguf), { keep: true, onProgress: (r, t) => onProgress(spec.gguf, r, t) });
    return [{ name: spec.gguf, bytes }];
  }
  // The weights last: a repository missing a small file fails before them.
  const wanted = [...files.required.map((name) => [name, false]), ...files.optional.map((name) => [name, true])]
    .sort((a, b) => a[0].endsWith('.safetensors') - b[0].endsWith('.safetensors'));
  const got = [];
  for (const [name, optional] of wanted) {
    try {
      const bytes = await download(hubUrl(spec, name), {
        keep: true, optional, onProgress: (r, t) => onProgress(name, r, t),
      });
      if (bytes) got.push({ name, bytes });
    } catch (e) {
      if (name === 'model.safetensors' && e.status === 404) {
        throw new Error(`${spec.repo} has no model.safetensors (sharded checkpoints are not supported yet; a .gguf file works too)`);
      }
      throw e;
    }
  }
  return got;
}
