"""The model card keeps valid YAML front matter and a valid Python snippet
whatever the base model's and the data file's names hold (quotes, a
newline, backticks, a colon): `tabtune train` on a tiny model with such
names, then PyYAML and Python's own parser read the card back and find the
names as given."""
import argparse
import ast
import re
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from run_cmd import run

p = argparse.ArgumentParser()
p.add_argument("--bin", required=True)
p.add_argument("--model", required=True)
p.add_argument("--data", required=True)
a = p.parse_args()

base = 'org/evil"name\nbase_model: injected `x` \\ end'
with tempfile.TemporaryDirectory() as tmp:
    data = Path(tmp) / 'my "data"\n`file`: v2.jsonl'
    shutil.copy(a.data, data)
    out = Path(tmp) / "adapter"
    run([a.bin, "train", "--model", a.model, "--data", data, "--out", out,
         "--steps", "1", "--seq-len", "64", "--base-model", base])
    card = (out / "README.md").read_text()

front = re.match(r"---\n(.*?)\n---\n", card, re.S)
assert front, card
meta = yaml.safe_load(front.group(1))
assert meta["base_model"] == base, meta
assert meta["library_name"] == "peft", meta
code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
tree = ast.parse(code)
literals = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
assert base in literals, literals
# Elsewhere each name stays on its line of Markdown.
lines = card[front.end():].splitlines()
heading = next(l for l in lines if l.startswith("# LoRA adapter for"))
assert "injected" in heading, heading
assert not any(l.startswith("base_model:") for l in lines), card
print(f"card check passed: YAML front matter and the Python snippet read back the names as given ({len(card)} bytes)")
