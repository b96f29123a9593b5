"""Progress on a file (a batch system's log, a pod worker's output): plain lines, never redrawn bars."""
from ltr_jax import progress


def test_periodic_plain_lines_when_output_is_not_a_terminal(capsys):
  bar = progress.bar(10, "stage 1", every=0.0)  # pytest's captured stderr is no terminal
  for _ in range(10):
    bar.update(1)
  bar.set_postfix(loss="0.5", img_s="900")
  bar.close()
  err = capsys.readouterr().err
  assert "\r" not in err and err.count("\n") == 11  # a line per update (every 0 s here) and one at the end
  last = err.strip().splitlines()[-1]
  assert last.startswith("stage 1: 10/10 (100%)") and "ETA" in last and last.endswith("loss=0.5, img_s=900")


def test_a_short_transient_bar_prints_nothing(capsys):
  bar = progress.bar(3, "validation", leave=False)  # every 60 s: done long before its first line
  for _ in range(3):
    bar.update(1)
  bar.close()
  assert capsys.readouterr().err == ""


def test_importing_ipykernel_does_not_make_a_notebook(capsys):
  import ipykernel  # noqa: F401  (imported by nbclient in the notebook tests of the same process)
  test_a_short_transient_bar_prints_nothing(capsys)
