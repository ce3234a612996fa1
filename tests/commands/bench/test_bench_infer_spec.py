"""``denseood bench infer --checkpoint SPEC`` times the given model, not a random smp one."""
from __future__ import annotations

import json

from denseood.cli import main as cli_main

FACTORY = '''
import torch.nn as nn

def make():
    return nn.Conv2d(3, 4, 3, padding=1)
'''


def test_bench_infer_times_the_given_model(tmp_path, capsys):
    (tmp_path / "tiny.py").write_text(FACTORY)
    spec = f"python:{tmp_path / 'tiny.py'}:make"
    out = tmp_path / "b.json"
    rc = cli_main(["bench", "infer", "--checkpoint", spec, "--sizes", "32x48", "--iters", "1", "--device", "cpu",
                   "--json", str(out)])
    assert rc == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["arch"] for r in rows] == [spec] * len(rows) and rows[0]["encoder"] is None
    assert rows[0]["size"] == [32, 48] and rows[0]["images_per_s"] > 0
    assert spec in capsys.readouterr().out
