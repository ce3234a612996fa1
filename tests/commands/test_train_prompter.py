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
               "--crop", "64", "--device", "cpu", "--pool-size", "2"])
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
