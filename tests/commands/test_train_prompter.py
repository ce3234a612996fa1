"""`denseood train-prompter`: a few training steps end to end, the stored prompter, option checks."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from denseood.cli import main
from denseood.s2m.learned import LearnedPrompter

from tests.s2m.s2m_helpers import _ckpt_master, ckpt, write_synthetic_train  # noqa: E402, F401  (fixtures)


@pytest.mark.slow
def test_train_prompter_few_steps(tmp_path, ckpt):
    from denseood.models.checkpoint import read_checkpoint

    ck = ckpt
    root = write_synthetic_train(tmp_path / "syn", n=2)
    rc = main(["train-prompter", "--checkpoint", str(ck), "--root", str(root), "--steps", "2", "--batch-size", "2",
               "--crop", "64", "--device", "cpu", "--pool-size", "2", "--force"])  # 2 steps: below the F1 floor
    assert rc == 0
    st = read_checkpoint(ck)["extra"]["prompter"]
    lp = LearnedPrompter.from_state(st)
    assert lp.train_info["steps"] == 2 and lp.train_info["pool"] == 2 and np.isfinite(lp.train_info["final_loss"])
    assert lp.ref_height == 64 and lp.score_name == "jsd" and lp.arch["backbone"] == "tiny"
    assert "calibration" in lp.train_info and 0.0 <= lp.score_thresh <= 1.0
    # calibration table = quantiles of the pool's pixel scores: increasing, within the range of the jsd score
    assert lp.quantiles.size == 101 and np.all(np.diff(lp.quantiles) >= 0)
    assert -np.log(2) - 1e-6 <= lp.quantiles[0] and lp.quantiles[-1] <= 1e-6
    # the stored prompter is usable: with its cut at 0 the detector yields candidate boxes on a map with a hot
    # square (an empty result here means detection silently returns nothing), and with its stored cut it returns
    # exactly the candidates that pass the cut, in the same order
    amap = np.full((64, 128), lp.quantiles[0], np.float32)
    amap[20:44, 40:80] = lp.quantiles[-1]
    cut = lp.score_thresh
    lp.score_thresh = 0.0
    raw_b, raw_s = lp.detect(amap)
    assert len(raw_b) > 0 and raw_b.shape[1] == 4
    lp.score_thresh = cut
    b, s = lp.detect(amap)
    keep = raw_s >= cut
    assert b.shape == (int(keep.sum()), 4) and np.all(s >= cut)
    np.testing.assert_allclose(b, raw_b[keep], atol=1e-4)
    np.testing.assert_allclose(s, raw_s[keep], atol=1e-6)
    assert len(lp(amap)) == len(b)


@pytest.mark.parametrize("flag, value", [("--score-thresh", "1.5"), ("--score-thresh", "high"), ("--steps", "0"),
                                         ("--lr", "-1")])
def test_train_prompter_rejects_bad_values_at_parse_time(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as e:
        main(["train-prompter", "--checkpoint", str(tmp_path / "m.pt"), "--root", str(tmp_path), flag, value])
    assert e.value.code == 2 and flag in capsys.readouterr().err


def test_score_thresh_arg():
    from denseood.commands.train_prompter import score_thresh_arg

    assert score_thresh_arg("auto") == "auto" and score_thresh_arg("0.25") == 0.25 and score_thresh_arg("1") == 1.0


def _stub_prompter(f1: float | None):
    """A small untrained prompter whose train_info says it reached held-out box F1 ``f1`` (None: not calibrated)."""
    lp = LearnedPrompter.build("tiny", quantiles=np.linspace(0.0, 0.4, 11), ref_height=64, score_thresh=0.3)
    cal = {} if f1 is None else {"f1": f1, "precision": f1, "recall": f1, "n_gt": 5, "images": 2}
    lp.train_info = {"steps": 10, "final_loss": 1.0, "calibration": cal}
    return lp


@pytest.mark.parametrize("f1, force, stored", [(0.0, False, False), (0.05, True, True), (0.5, False, True),
                                               (None, False, True)])
def test_prompter_below_the_f1_floor_warns_and_stays_out_of_the_checkpoint(tmp_path, ckpt, capsys, monkeypatch,
                                                                           f1, force, stored):
    import denseood.train.prompter as tp
    from denseood.models.checkpoint import read_checkpoint

    assert tp.MIN_HELDOUT_F1 == 0.1
    monkeypatch.setattr(tp, "train_prompter", lambda *a, **k: _stub_prompter(f1))
    before = ckpt.read_bytes()
    rc = main(["train-prompter", "--checkpoint", str(ckpt), "--root", str(tmp_path), "--device", "cpu"]
              + (["--force"] if force else []))
    assert rc == 0
    err = capsys.readouterr().err
    warned = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    side = tmp_path / "m.prompter.pt"
    if f1 is not None and f1 < tp.MIN_HELDOUT_F1:
        assert len(warned) == 1 and f"{f1:.3f}" in warned[0] and "below the floor 0.1" in warned[0]
    else:
        assert warned == []
    if stored:
        assert "prompter" in read_checkpoint(ckpt)["extra"] and not side.exists()
    else:  # the checkpoint is not touched; the prompter is in NAME.prompter.pt, named in the warning
        assert ckpt.read_bytes() == before and "--force" in warned[0] and str(side) in warned[0]
        assert LearnedPrompter.load(side).train_info["calibration"]["f1"] == 0.0


def test_prompter_below_the_floor_goes_to_out_when_given(tmp_path, ckpt, capsys, monkeypatch):
    import denseood.train.prompter as tp

    monkeypatch.setattr(tp, "train_prompter", lambda *a, **k: _stub_prompter(0.0))
    before = ckpt.read_bytes()
    out = tmp_path / "p" / "weak.pt"
    assert main(["train-prompter", "--checkpoint", str(ckpt), "--root", str(tmp_path), "--out", str(out)]) == 0
    assert out.is_file() and ckpt.read_bytes() == before
    assert len([ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]) == 1
