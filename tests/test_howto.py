"""The README's how-to for a new stage-2 method, followed literally: its code blocks, as written in README.md, added
to a copy of the repository, change exactly three files and give a method that the config check, the registry and
the report handle like every other."""
import filecmp
import json
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK = re.compile(r'<!-- howto stage2: (\S+) (append|after "(.*?)") -->\n( *)```python\n(.*?)\n *```', re.S)


def _readme_blocks() -> list[tuple[str, str | None, str]]:
  """(file, anchor line or None to append, code) of each stage-2 how-to block, its list indentation removed."""
  blocks = []
  for path, _, anchor, indent, code in BLOCK.findall(open(os.path.join(ROOT, "README.md")).read()):
    lines = [line[len(indent):] if line.startswith(indent) else line for line in code.split("\n")]
    blocks.append((path, anchor or None, "\n".join(lines) + "\n"))
  return blocks


def _apply(root: str, path: str, anchor: str | None, code: str) -> None:
  target = os.path.join(root, path)
  text = open(target).read()
  if anchor is None:
    text = text.rstrip("\n") + "\n\n\n" + code
  else:
    line_end = text.index("\n", text.index(anchor)) + 1  # the README names a line that is there
    text = text[:line_end] + code + text[line_end:]
  open(target, "w").write(text)


def _changed(a: str, b: str) -> list[str]:
  compared = filecmp.dircmp(a, b, ignore=["__pycache__"])
  return ([os.path.join(a, n) for n in compared.diff_files + compared.left_only + compared.right_only] +
          [f for sub in compared.subdirs for f in _changed(os.path.join(a, sub), os.path.join(b, sub))])


def test_a_new_stage2_method_following_the_readme(tmp_path):
  blocks = _readme_blocks()
  assert [path for path, _, _ in blocks
         ] == ["ltr_jax/stage2/on_features.py", "ltr_jax/stage2/registry.py", "configs/base.py"]
  copy = tmp_path / "repo"
  for folder in ("ltr_jax", "configs", "tests"):
    shutil.copytree(os.path.join(ROOT, folder), copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
  for block in blocks:
    _apply(str(copy), *block)
  changed = sorted(
      os.path.relpath(p, ROOT)
      for folder in ("ltr_jax", "configs", "tests")
      for p in _changed(os.path.join(ROOT, folder), str(copy / folder)))
  assert changed == ["configs/base.py", "ltr_jax/stage2/on_features.py", "ltr_jax/stage2/registry.py"]
  env = {**os.environ, "PYTHONPATH": str(copy)}
  out = subprocess.run([sys.executable, str(copy / "tests" / "howto_script.py")], cwd=copy, env=env,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["module"] == os.path.join(str(copy), "ltr_jax", "stage2", "on_features.py")
  assert result["refused"] == [
      "config key stage2.prior_shift.strength = -1.0: out of range; it must be a finite number >= 0",
      "config key stage2.prior_shift.tau: a method of type 'prior_shift' does not read it; it reads strength"
  ]
  entry, joint = result["entry"], result["joint"]
  assert entry["label"] == "Prior shift" and entry["paper"] is False and entry["runs_on"] == "features"
  assert entry["hyper"]["strength"] == 1.0
  assert entry["few"] > joint["few"] + 10.0, (entry, joint)
