"""The README's quickstarts run, in order, in one temporary directory: what a Python block trains it saves where
the next command reads it, and the marked shell block (``seqlevel generate`` on the saved SequenceMatch model,
``seqlevel train --objective cat`` then ``seqlevel explain``) runs against those files."""

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


def test_readme_blocks_run_in_order_and_chain(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = {"__name__": "readme"}  # one session: a block may use what an earlier block defined, as a reader would
    for i, block in enumerate(BLOCKS):
        exec(compile(block, f"README.md[python block {i}]", "exec"), ns)
    assert (tmp_path / "runs" / "sm" / "config.json").is_file()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    for i, block in enumerate(SHELL):
        script = f'seqlevel() {{ "{sys.executable}" -m seqlevel "$@"; }}\nset -e\n{block}'
        res = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
        assert res.returncode == 0, f"README shell block {i} failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    assert (tmp_path / "runs" / "cat-cli" / "explain.png").is_file()
    assert "credit(a=1)" in res.stdout
