"""Score instance sets with the official OoDIS scorer, offline, to get reference values for denseood's tests.

Usage:
    python tools/oodis_reference.py MIRROR [--cases tests/eval/oodis_cases.py] [--only NAME ...]

MIRROR is a local git mirror of kumuji/anomaly-benchmark-suite (as the ``fetch`` tool leaves it, e.g.
/work/.mirror/kumuji+anomaly-benchmark-suite/repo); nothing is downloaded. The tool extracts
``scoring_program/`` from the mirror's HEAD into a temporary folder, writes every case of the cases module
(``all_cases()``: name -> list of ``(pred_masks, scores, gt_instances, void)``) as an OoDIS submission and label
folder, runs ``scoring_program/evaluate.py``'s ``main`` on them and prints one JSON object:
``{"scorer_commit": ..., "cases": {name: {"ap", "ap50", "ap_per_iou"} | {"crash": "Type: message"}}}``,
AP in [0, 1] (the scorer's scores.txt holds 100x these).

Encoding (docs/metrics.md, "OoDIS instance AP"): label image uint16 with void -> 0 (Cityscapes "unlabeled",
ignoreInEval), ground-truth instance k (k-th distinct id, ascending, void pixels removed) -> 26000 + k, every
other pixel -> 7 ("road"); one 8-bit 0/255 mask png per prediction; an image without predictions gets one
all-zero mask (the scorer skips empty masks, and it refuses an empty prediction file).
Compatibility with NumPy 2 (results unchanged): NumPy >= 2.4 has no ``np.in1d``, so the tool provides it as
``np.isin`` of the flattened input; and ``np.count_nonzero`` now returns NumPy integers, which the scorer's
side output matches.json cannot serialise, so that writer is given a JSON default for NumPy scalars.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

VOID_ID, BACKGROUND_ID, ANOMALY_BASE = 0, 7, 26000


def extract_scorer(mirror: Path, dest: Path) -> str:
    """Unpack scoring_program/ of the mirror's HEAD into dest; returns the commit hash."""
    commit = subprocess.run(["git", "--git-dir", str(mirror), "rev-parse", "HEAD"], check=True,
                            capture_output=True, text=True).stdout.strip()
    blob = subprocess.run(["git", "--git-dir", str(mirror), "archive", "--format=tar", commit, "scoring_program"],
                          check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(dest, filter="data")
    return commit


def label_image(gt: np.ndarray, void: np.ndarray) -> np.ndarray:
    """(H,W) uint16 Cityscapes instanceIds image of one frame (see the module docstring)."""
    out = np.full(gt.shape, BACKGROUND_ID, np.uint16)
    ids = np.unique(gt[(gt > 0) & ~void])
    if len(ids) > 999:
        raise ValueError(f"{len(ids)} instances in one image; the Cityscapes encoding holds at most 999")
    for k, i in enumerate(ids, start=1):
        out[(gt == i) & ~void] = ANOMALY_BASE + k
    out[void] = VOID_ID
    return out


def write_case(images: list, sub: Path, labels: Path) -> None:
    """One OoDIS submission folder and one label folder for a list of images."""
    for f, (preds, scores, gt, void) in enumerate(images):
        stem = f"case_000000_{f:06d}_gtCoarse"
        Image.fromarray(label_image(np.asarray(gt), np.asarray(void, bool))).save(labels / f"{stem}_instanceIds.png")
        masks = list(np.asarray(preds, bool)) or [np.zeros(np.shape(gt), bool)]
        confs = [float(s) for s in scores] or [0.0]
        lines = []
        for n, (m, s) in enumerate(zip(masks, confs)):
            name = f"{stem}_instanceIds_{n}_1.png"
            Image.fromarray(m.astype(np.uint8) * 255).save(sub / name)
            lines.append(f"{name} 1 {s!r}")
        (sub / f"{stem}_instanceIds_pred.txt").write_text("\n".join(lines) + "\n")


def score_case(evaluate, images: list, work: Path) -> dict:
    """Run the scorer's main() on one case inside ``work``; AP values or the crash."""
    sub, labels, out = work / "submission", work / "labels", work / "out"
    for d in (sub, labels):
        d.mkdir(parents=True)
    write_case(images, sub, labels)
    ce = evaluate.cityscapes_eval
    seen: dict = {}
    original = ce.evaluateImgLists

    def capture(*a):
        seen.update(original(*a))
        return seen

    ce.evaluateImgLists = capture
    cwd = os.getcwd()
    try:
        os.chdir(work)  # the scorer writes matches.json into the working directory
        with contextlib.redirect_stdout(io.StringIO()):
            evaluate.main(str(sub), str(labels), str(out))
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the crash is the result
        return {"crash": f"{type(e).__name__}: {e}"}
    finally:
        os.chdir(cwd)
        ce.evaluateImgLists = original
    txt = dict(line.split(": ") for line in (out / "scores.txt").read_text().split("\n") if line)
    res = {"ap": float(seen["averages"]["allAp"]), "ap50": float(seen["averages"]["allAp50%"]),
           "ap_per_iou": [float(v) for v in np.asarray(seen["resultApMatrix"])[0, seen["instLabels"].index("car")]]}
    assert abs(float(txt["AP"]) / 100 - res["ap"]) < 1e-12 or np.isnan(res["ap"]), (txt, res)
    return res


def load_scorer(root: Path):
    if not hasattr(np, "in1d"):
        np.in1d = lambda a, b, *r, **k: np.isin(np.ravel(a), b, *r, **k)
    sys.path.insert(0, str(root / "scoring_program"))
    import evaluate  # the official scorer, from the extracted mirror

    def write_json(data, file_name):
        with open(file_name, "w") as f:
            json.dump(data, f, default=lambda o: o.item() if isinstance(o, np.generic) else o.__dict__)

    evaluate.cityscapes_eval.writeDict2JSON = write_json
    return evaluate


def load_cases(path: Path) -> dict:
    spec = importlib.util.spec_from_file_location("oodis_cases", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.all_cases()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mirror", type=Path, help="git mirror of kumuji/anomaly-benchmark-suite")
    ap.add_argument("--cases", type=Path, default=Path(__file__).resolve().parents[1] / "tests/eval/oodis_cases.py")
    ap.add_argument("--only", nargs="*", default=None, help="case names to score (default: all)")
    args = ap.parse_args(argv)
    cases = load_cases(args.cases)
    with tempfile.TemporaryDirectory(prefix="oodis-ref-") as tmp:
        tmp = Path(tmp)
        commit = extract_scorer(args.mirror, tmp / "scorer")
        evaluate = load_scorer(tmp / "scorer")
        res = {name: score_case(evaluate, imgs, tmp / f"case{i}") for i, (name, imgs) in enumerate(cases.items())
               if args.only is None or name in args.only}
    json.dump({"scorer_commit": commit, "cases": res}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
