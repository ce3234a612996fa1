"""InstanceAP(protocol="oodis") equals the official OoDIS scorer (kumuji/anomaly-benchmark-suite,
scoring_program/evaluate.py with its vendored Cityscapes evalInstanceLevelSemanticLabeling.py).

Every REFERENCE value below was printed by the official scorer run offline on the cases of oodis_cases.py:

    python tools/oodis_reference.py /work/.mirror/kumuji+anomaly-benchmark-suite/repo
    (scorer commit 110a3601b35459e955964d36596a64c114601b20, NumPy 2.4.6 with the tool's two shims)

as (ap, ap50, ap per IoU threshold 0.50..0.95), AP in [0, 1] (the scorer's scores.txt holds 100x). With
DENSEOOD_OODIS_MIRROR=<that mirror> the last test reruns the scorer itself.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tests.eval.oodis_cases import all_cases, crash_cases, designed_cases

from denseood.errors import ConfigError
from denseood.eval.instance_ap import InstanceAP
from denseood.eval.instance_ap_oodis import IOU_THRESHOLDS, average_precision

NAN = float("nan")
TOL = 1e-9

REFERENCE = {
    "iou_exactly_050": (0.125, 0.125, [0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125]),
    "iou_exactly_075": (0.5625, 1.0, [1.0, 1.0, 1.0, 1.0, 1.0, 0.125, 0.125, 0.125, 0.125, 0.125]),
    "duplicates": (0.875, 1.0, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.375, 0.375]),
    "prediction_mostly_void": (0.275, 0.5, [0.5, 0.5, 0.5, 0.5, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125]),
    "object_quarter_void": (0.5625, 1.0, [1.0, 1.0, 1.0, 1.0, 1.0, 0.125, 0.125, 0.125, 0.125, 0.125]),
    "prediction_below_10px": (0.41666666666666663, 0.41666666666666663, [0.41666666666666663, 0.41666666666666663,
        0.41666666666666663, 0.41666666666666663, 0.41666666666666663, 0.41666666666666663, 0.41666666666666663,
        0.41666666666666663, 0.41666666666666663, 0.41666666666666663]),
    "gt_below_10px": (0.625, 1.0, [1.0, 1.0, 1.0, 1.0, 1.0, 0.25, 0.25, 0.25, 0.25, 0.25]),
    "more_than_100_predictions": (0.016847466353238687, 0.01684746635323869, [0.01684746635323869,
        0.01684746635323869, 0.01684746635323869, 0.01684746635323869, 0.01684746635323869, 0.01684746635323869,
        0.01684746635323869, 0.01684746635323869, 0.01684746635323869, 0.01684746635323869]),
    "image_without_gt": (0.25, 0.25, [0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25]),
    "ties_across_images": (0.5555555555555556, 0.5555555555555556, [0.5555555555555556, 0.5555555555555556,
        0.5555555555555556, 0.5555555555555556, 0.5555555555555556, 0.5555555555555556, 0.5555555555555556,
        0.5555555555555556, 0.5555555555555556, 0.5555555555555556]),
    "no_predictions": (0.0, 0.0, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
    "no_gt_anywhere": (NAN, NAN, [NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN]),
    "random_0": (0.1321751253132832, 0.4898026315789474, [0.4898026315789474, 0.22828947368421051,
        0.22828947368421051, 0.22828947368421051, 0.06543233082706766, 0.03344298245614035, 0.03344298245614035,
        0.005000000000000001, 0.005000000000000001, 0.004761904761904762]),
    "random_1": (0.1279783435253423, 0.28302641734255884, [0.28302641734255884, 0.2802499850576774,
        0.20237533122148507, 0.07974941724941725, 0.07974941724941725, 0.07974941724941725, 0.07974941724941725,
        0.07974941724941725, 0.057692307692307696, 0.057692307692307696]),
    "random_2": (0.17622377622377622, 0.31185481185481184, [0.31185481185481184, 0.31185481185481184,
        0.21645021645021645, 0.21645021645021645, 0.21645021645021645, 0.21645021645021645, 0.09090909090909091,
        0.09090909090909091, 0.09090909090909091, 0.0]),
    "random_3": (0.11499355802927232, 0.18607503607503606, [0.18607503607503606, 0.17899659863945577,
        0.17899659863945577, 0.17899659863945577, 0.1498299319727891, 0.1498299319727891, 0.10068027210884353,
        0.019387755102040816, 0.0035714285714285713, 0.0035714285714285713]),
    "random_4": (0.04083021272523561, 0.08865497425280033, [0.08865497425280033, 0.08865497425280033,
        0.05894748367574454, 0.03671157059314954, 0.03671157059314954, 0.03671157059314954, 0.03671157059314954,
        0.0251984126984127, 0.0, 0.0]),
    "random_5": (0.049999999999999996, 0.14814814814814814, [0.14814814814814814, 0.14814814814814814,
        0.14814814814814814, 0.009259259259259259, 0.009259259259259259, 0.009259259259259259, 0.009259259259259259,
        0.009259259259259259, 0.009259259259259259, 0.0]),
    "random_6": (0.24350544063779359, 0.315930699202758, [0.315930699202758, 0.315930699202758, 0.315930699202758,
        0.315930699202758, 0.284680699202758, 0.23781512605042016, 0.23781512605042016, 0.23781512605042016,
        0.16952906162464987, 0.003676470588235294]),
    "random_7": (0.23009089766442709, 0.40798417269005505, [0.40798417269005505, 0.40798417269005505,
        0.3269762100644453, 0.20376045523104347, 0.17620320855614974, 0.17620320855614974, 0.17620320855614974,
        0.17620320855614974, 0.17620320855614974, 0.07318792318792319]),
    "random_8": (0.27583305583305584, 0.31153846153846154, [0.31153846153846154, 0.31153846153846154,
        0.31153846153846154, 0.31153846153846154, 0.31153846153846154, 0.31153846153846154, 0.31153846153846154,
        0.2442279942279942, 0.2222222222222222, 0.1111111111111111]),
    "random_9": (0.1887380952380952, 0.26428571428571423, [0.26428571428571423, 0.26428571428571423,
        0.24880952380952379, 0.24880952380952379, 0.24880952380952379, 0.24880952380952379, 0.1988095238095238,
        0.09952380952380954, 0.06023809523809523, 0.005000000000000001]),
}


def run(images, protocol="oodis"):
    m = InstanceAP(protocol=protocol)
    for im in images:
        m.update(*im)
    return m.compute()


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= TOL


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_equals_official_scorer(name):
    ap, ap50, per_iou = REFERENCE[name]
    out = run(all_cases()[name])
    assert out["protocol"] == "oodis"
    assert same(out["ap"], ap) and same(out["ap50"], ap50), (out["ap"], ap, out["ap50"], ap50)
    assert all(same(a, b) for a, b in zip(out["ap_per_iou"], per_iou)), (out["ap_per_iou"], per_iou)


def test_every_designed_case_is_referenced():
    assert set(designed_cases()) <= set(REFERENCE)


@pytest.mark.parametrize("name", sorted(crash_cases()))
def test_scorer_crash_cases_give_the_intended_zero(name):
    # The official scorer raises "IndexError: index -1 is out of bounds for axis 0 with size 0" on these
    # (tools/oodis_reference.py, same commit): at every threshold no prediction is matched and every prediction
    # is ignored, so its detection list is empty. The value it means is AP 0 (ground truth exists, nothing found):
    # its own formula on an empty list is the single point (recall 0, precision 1), area 0.
    out = run(crash_cases()[name])
    assert out["ap"] == 0.0 and out["ap50"] == 0.0 and out["n_gt"] == 1


def test_thresholds_are_the_scorers_bits():
    # the scorer uses numpy.arange(0.5, 1., 0.05); 0.6, 0.65, ... differ from linspace in the last bit, which
    # decides the strictly-greater match of an IoU such as 0.7 (7/10)
    assert IOU_THRESHOLDS.tolist() == np.arange(0.5, 1.0, 0.05).tolist()
    assert len(IOU_THRESHOLDS) == 10


def test_trapezoid_by_hand():
    # two ground-truth objects; detections 0.9 (false), 0.8 (true): points (0,1), (0,0), (0.5,0.5):
    # area = 0.5 * (0 + 0.5) / 2 = 0.125 (the iou_exactly_050 case, where the scorer gave 0.125 too)
    tp = np.array([[False, True]])
    fp = ~tp
    assert average_precision(np.array([0.9, 0.8]), tp, fp, 2)[0] == pytest.approx(0.125, abs=1e-15)
    assert np.isnan(average_precision(np.array([0.9]), tp[:, :1], fp[:, :1], 0)[0])


def test_differs_from_coco_where_the_rules_differ():
    # COCO removes void from the masks (quarter-void object: IoU 1) and ignores a 6 px false positive
    cases = designed_cases()
    for name in ("object_quarter_void", "prediction_below_10px"):
        assert run(cases[name], "coco")["ap"] == pytest.approx(1.0)
        assert run(cases[name])["ap"] < 0.6


def test_protocol_options_are_checked():
    with pytest.raises(ConfigError, match="protocol"):
        InstanceAP(protocol="cityscapes")
    with pytest.raises(ConfigError, match="max_dets"):
        InstanceAP(protocol="oodis", max_dets=100)
    assert InstanceAP().protocol == "oodis"


@pytest.mark.skipif(not os.environ.get("DENSEOOD_OODIS_MIRROR"), reason="set DENSEOOD_OODIS_MIRROR to a mirror "
                    "of kumuji/anomaly-benchmark-suite to rerun the official scorer")
def test_live_official_scorer():
    tool = Path(__file__).resolve().parents[2] / "tools" / "oodis_reference.py"
    got = subprocess.run([sys.executable, "-W", "ignore", str(tool), os.environ["DENSEOOD_OODIS_MIRROR"]],
                         check=True, capture_output=True, text=True).stdout
    ref = json.loads(got)["cases"]
    for name, images in all_cases().items():
        out = run(images)
        if "crash" in ref[name]:
            assert out["ap"] == 0.0, name
            continue
        assert same(out["ap"], ref[name]["ap"]) and same(out["ap50"], ref[name]["ap50"]), name
