"""The one way the check scripts (peft_check.py, trl_check.py,
merged_check.py) run a command: its output, or the run ends with the
command and the end of what it wrote to stderr."""
import subprocess
import sys


def run(cmd, both=False, **kw):
    """Runs `cmd` (any items, made strings); returns its stdout, with its
    stderr after it when `both`. `kw` goes to subprocess.run (env, cwd)."""
    cmd = [str(c) for c in cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return out.stdout + out.stderr if both else out.stdout
