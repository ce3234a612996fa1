"""`denseood demo --quick`: the CLI chain train -> train-prompter -> eval --s2m -> segment on the synthetic world."""
from __future__ import annotations

import json

from denseood.cli import main


def test_demo_quick_end_to_end(tmp_path):
    w = tmp_path / "w.pt"
    assert main(["demo", "--quick", "--out", str(tmp_path / "d"), "--weights", str(w)]) == 0
    res = json.loads((tmp_path / "d" / "eval" / "results.json").read_text())
    assert set(res["scores"]) == {"msp", "maxlogit", "energy", "entropy", "sml", "jsd"}
    for m in res["scores"].values():
        assert 0.0 <= m["ap"] <= 1.0 and 0.0 <= m["auroc"] <= 1.0
    # the learned prompter was trained on jsd maps, so S2M must run on jsd even though msp is listed first
    assert res["s2m_score"] == "jsd"
    assert "s2m" in res["s2m"] and "threshold@bestF1" in res["s2m"]
    assert "on the jsd map" in (tmp_path / "d" / "eval" / "results.md").read_text()
    overlays = sorted((tmp_path / "d" / "segment" / "overlays").glob("*.png"))
    lines = (tmp_path / "d" / "segment" / "objects.json").read_text().strip().splitlines()
    assert len(overlays) == len(lines) == 2
    # a second run reuses the weights instead of training again
    mtime = w.stat().st_mtime_ns
    assert main(["demo", "--quick", "--out", str(tmp_path / "d"), "--weights", str(w)]) == 0
    assert w.stat().st_mtime_ns == mtime


def test_demo_quick_refuses_the_real_weights_path(tmp_path):
    assert main(["demo", "--quick", "--out", str(tmp_path / "d")]) == 2
