"""The README's quickstarts run, in order, in one temporary directory: each Python block alone in a fresh
interpreter (a reader may copy any one of them; only files, never variables, pass from one block to the next), and
the marked shell block (``seqlevel generate`` on the saved SequenceMatch model, ``seqlevel train --objective cat``,
``seqlevel explain``, ``seqlevel generate --steer``) runs against the files they saved."""

import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
MARK = "<!-- executed by tests/test_readme.py"
SHELL = re.findall(re.escape(MARK) + r"[^\n]*\n```bash\n(.*?)```", README, flags=re.S)


def test_readme_has_quickstarts():
    assert len(BLOCKS) >= 2 and len(SHELL) >= 1


def test_readme_blocks_each_run_alone_in_a_fresh_interpreter(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    for i, block in enumerate(BLOCKS):
        res = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
        assert res.returncode == 0, f"README python block {i} failed alone:\n{block}\n{res.stderr[-4000:]}"
        assert "strongly recommend passing in an `attention_mask`" not in res.stderr, f"python block {i}"
    assert (tmp_path / "runs" / "sm" / "config.json").is_file()
    for i, block in enumerate(SHELL):
        script = f'seqlevel() {{ "{sys.executable}" -m seqlevel "$@"; }}\nset -e\n{block}'
        res = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
        assert res.returncode == 0, f"README shell block {i} failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    assert (tmp_path / "runs" / "cat-cli" / "explain.png").is_file()
    assert "credit(a=1)" in res.stdout
    assert res.stdout.rstrip().splitlines()[-2].startswith("the food was")  # the steered continuations
