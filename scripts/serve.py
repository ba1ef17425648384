#!/usr/bin/env python3
"""Serves www/ as static files on 127.0.0.1 (no server logic).

It adds the headers a static host should send: the page's
Content-Security-Policy also for the worker script (a <meta> policy does
not reach workers), COOP/COEP for cross-origin isolation (the CPU engine's
threads need it), correct types for .wasm/.mjs, and no caching of the
app's own files so a rebuild shows at once. `--mount /PATH=DIR` serves
another folder under /PATH (the tests use it to serve a stand-in for the
Hugging Face hub with the same URL layout).
"""
import argparse
import functools
import http.server
import os
import sys

CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; "
       "connect-src 'self' https://huggingface.co https://*.huggingface.co https://*.hf.co; "
       "img-src 'self' data: blob:; style-src 'self'; font-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'none'")


class Handler(http.server.SimpleHTTPRequestHandler):
    mounts = {}
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript",
                      ".mjs": "text/javascript", ".jsonl": "application/jsonl"}

    def translate_path(self, path):
        for prefix, folder in self.mounts.items():
            if path == prefix or path.startswith(prefix + "/"):
                return self._under(folder, path[len(prefix):] or "/")
        return super().translate_path(path)

    def _under(self, folder, rest):
        saved = self.directory
        self.directory = folder
        try:
            return super().translate_path(rest)
        finally:
            self.directory = saved

    def end_headers(self):
        self.send_header("Content-Security-Policy", CSP)
        # Cross-origin isolation: lets the engine share its memory with
        # worker threads (SharedArrayBuffer), so training on the CPU uses
        # every core. Hub downloads still work: they are CORS requests.
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, fmt, *args):
        if os.environ.get("TABTUNE_SERVE_QUIET") != "1":
            super().log_message(fmt, *args)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--dir", default=os.path.join(os.path.dirname(__file__), "..", "www"))
    p.add_argument("--mount", action="append", default=[], metavar="/PATH=DIR")
    a = p.parse_args()
    for m in a.mount:
        prefix, _, folder = m.partition("=")
        if not prefix.startswith("/") or not os.path.isdir(folder):
            sys.exit(f"--mount {m}: expected /PATH=DIR with an existing DIR")
        Handler.mounts[prefix.rstrip("/")] = os.path.abspath(folder)
    handler = functools.partial(Handler, directory=os.path.abspath(a.dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), handler)
    print(f"serving {os.path.abspath(a.dir)} on http://127.0.0.1:{a.port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
