"""The HTML report (issue 23 items 1 and 4): the per-frame records of eval, the report's numbers against
independent references, ``denseood report`` with two runs, and the page in headless Chromium (``browser``)."""
from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from denseood.cli import main as cli_main
from tests.commands.test_eval import _eval_args, world  # noqa: F401  (the tiny checkpoint + synthetic world fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(world, tmp_path_factory):  # noqa: F811
    """One eval run with S2M objects on 4 frames (report.html written by eval itself)."""
    out = tmp_path_factory.mktemp("report") / "run"
    assert cli_main(_eval_args(world, out, "--limit", "4", "--s2m", "--prompter", "peak", "--prompt-model", "grabcut",
                               scores="msp,maxlogit,jsd")) == 0
    return out


# ----------------------------------------------------------------------------------------------- pieces
def test_average_precision_of_a_histogram_equals_sklearn(rng):
    from denseood.commands.report.build import average_precision

    y = rng.random(3000) < 0.2
    s = np.round(rng.normal(size=3000) + y, 1)  # ties
    ap = average_precision(s, y.astype(float), (~y).astype(float))
    assert ap == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_frame_numbers_count_the_pixels_at_a_threshold_on_the_float16_map(rng, tmp_path):
    """FP = inlier pixels with map >= t, missed = anomaly pixels below t, per instance hits, void left out;
    counted on the float16-rounded map, as numpy counts them here."""
    from denseood.commands.eval.frames import FrameRecords
    from denseood.commands.report.build import frame_numbers

    h, w = 40, 60
    mask = np.zeros((h, w), np.uint8)
    mask[5:15, 5:15] = 1       # instance 1 (100 px)
    mask[25:35, 30:50] = 1     # instance 2 (200 px)
    mask[0:3, :] = 255         # void
    amap = rng.normal(size=(h, w)).astype(np.float32) + 2.0 * (mask == 1)
    smp = SimpleNamespace(name="f0", image=np.zeros((h, w, 3), np.uint8), ood_mask=mask, instances=None)
    rec = FrameRecords(tmp_path, ["s"])
    rec.update(smp, {"s": amap})
    rec.write()
    t = 1.0
    a16 = amap.astype(np.float16).astype(np.float32)
    with np.load(tmp_path / "frames" / rec.records[0]["file"]) as z:
        got = frame_numbers(z, "s", t)
    assert got["fp"] == int(((a16 >= t) & (mask == 0)).sum())
    assert got["missed"] == int(((a16 < t) & (mask == 1)).sum())
    assert got["inst_tp"] == [int((a16[5:15, 5:15] >= t).sum()), int((a16[25:35, 30:50] >= t).sum())]
    valid = mask != 255
    assert got["ap"] == pytest.approx(average_precision_score(mask[valid] == 1, a16[valid]), abs=1e-12)
    assert [i["area"] for i in rec.records[0]["instances"]] == [100, 200]
    meta = json.loads((tmp_path / "frames" / "frames.json").read_text())
    assert [f["name"] for f in meta["frames"]] == ["f0"]


def test_ground_truth_instances_and_best_iou():
    from denseood.commands.eval.frames import best_iou, ground_truth_instances
    from denseood.commands.report.layout import NO_INSTANCE

    mask = np.zeros((10, 10), np.uint8)
    mask[0:4, 0:4] = 1
    mask[6:10, 6:10] = 1
    ids = np.zeros((10, 10), np.int32)
    ids[0:4, 0:4] = 7           # the second square has no instance id
    gt = ground_truth_instances(mask, ids)
    assert set(np.unique(gt)) == {0, 1, NO_INSTANCE} and (gt[0:4, 0:4] == 1).all()
    objects = np.zeros((10, 10), np.int32)
    objects[0:4, 0:2] = 1       # half of instance 1: IoU 0.5
    assert best_iou(gt, objects, 1).tolist() == [0.5]
    assert ground_truth_instances(mask, None).max() == 2  # components when the dataset has no ids


def test_ci_of_reads_the_ci95_layout_and_gives_none_when_absent():
    from denseood.commands.report.build import ci_of

    assert ci_of({"ap": 0.5, "ci95": {"ap": [0.4, 0.6]}}, "ap") == [0.4, 0.6]
    assert ci_of({"ap": 0.5, "ap_ci95": [0.4, 0.6]}, "ap") is None  # one layout: docs/metrics.md
    assert ci_of({"ap": 0.5}, "ap") is None and ci_of({"ap": 0.5, "ci95": {"fpr95": [0, 1]}}, "ap") is None


def _cells(page: str, score: str) -> dict[str, str]:
    row = re.search(rf'<tr data-run="[^"]*" data-score="{score}">(.*?)</tr>', page, re.S).group(1)
    return dict(re.findall(r'<td data-key="(\w+)" data-value="([^"]*)"', row))


# ----------------------------------------------------------------------------------------------- eval -> page
def test_eval_writes_a_report_whose_numbers_are_results_json(run_dir):
    res = json.loads((run_dir / "results.json").read_text())
    page = (run_dir / "report.html").read_text()
    assert "<script src" not in page and "<link" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")  # nothing to fetch
    for s, m in res["scores"].items():
        cells = _cells(page, s)
        for k in ("ap", "fpr95", "auroc", "sIoU", "PPV", "mean_F1"):
            assert float(cells[k]) == m[k], (s, k)
    assert "Only 4 frames" in page                                # the small-n banner
    assert "oracle: chosen on the test labels" in page
    assert f"min segment {res['component_sizes'][0]} px" in page
    assert res["checkpoint"]["sha256"] in page
    meta = json.loads((run_dir / "frames" / "frames.json").read_text())
    assert len(meta["frames"]) == res["n_images"] == 4
    assert all(f["n_objects"] is not None for f in meta["frames"])  # S2M ran
    # per-frame numbers at the jsd (S2M score) 95 %-TPR threshold add up to the frames' anomaly pixels
    from denseood.commands.report.build import load_run

    run = load_run(run_dir)
    assert run.primary == "jsd" and run.threshold == res["scores"]["jsd"]["threshold_at_tpr95"]
    assert sum(f["n_anomaly"] for f in run.frames) == res["scores"]["jsd"]["n_anomaly"]
    assert all(f["tp"] + f["missed"] == f["n_anomaly"] for f in run.frames)
    for uri in re.findall(r'src="data:image/(?:jpeg|png);base64,([^"]+)"', page):
        assert len(base64.b64decode(uri)) > 100


def test_thumbnails_are_at_most_320_px_wide(run_dir):
    for p in (run_dir / "frames").glob("*.npz"):
        with np.load(p) as z:
            assert z["image"].shape[1] <= 320 and z["mask"].shape == z["image"].shape[:2]


def test_a_page_of_100_full_hd_frames_stays_under_20_mb(run_dir, tmp_path):
    """3 frames of 1024x2048 (a synthetic frame scaled up, a smooth map): the page per frame, times 100, < 20 MB."""
    import cv2

    from denseood.commands.eval.frames import FrameRecords
    from denseood.commands.report.page import write_report

    with np.load(next((run_dir / "frames").glob("*.npz"))) as z:
        image = cv2.resize(z["image"], (2048, 1024), interpolation=cv2.INTER_CUBIC)
        mask = cv2.resize(z["mask"], (2048, 1024), interpolation=cv2.INTER_NEAREST)
    gen = np.random.default_rng(0)
    rec = FrameRecords(tmp_path, ["s"])
    for i in range(3):
        amap = cv2.GaussianBlur(gen.normal(size=(1024, 2048)).astype(np.float32), (0, 0), 8) + (mask == 1)
        rec.update(SimpleNamespace(name=f"f{i}", image=image, ood_mask=mask, instances=None), {"s": amap})
    rec.write()
    row = {"ap": 0.5, "fpr95": 0.5, "auroc": 0.5, "threshold_at_tpr95": 0.5, "best_f1_threshold": 0.5}
    (tmp_path / "results.json").write_text(json.dumps({"dataset": "x", "split": "val", "n_images": 3,
                                                       "has_labels": True, "scores": {"s": row}}))
    size = write_report([tmp_path], tmp_path / "r.html").stat().st_size
    assert size / 3 * 100 < 20e6, size


def test_report_lays_two_runs_side_by_side(run_dir, tmp_path, capsys):
    other = tmp_path / "flow"
    shutil.copytree(run_dir, other)
    res = json.loads((other / "results.json").read_text())
    res["scores"]["jsd"]["ap"] = 0.99  # a better run B: its AP cell is the one marked best
    (other / "results.json").write_text(json.dumps(res))
    out = tmp_path / "both.html"
    assert cli_main(["report", str(run_dir), str(other), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    page = out.read_text()
    assert 'data-run="run" data-score="jsd"' in page and 'data-run="flow" data-score="jsd"' in page
    assert re.search(r'data-run="flow" data-score="jsd">.*?<td data-key="ap" data-value="0.99" class="best">',
                     page, re.S)
    assert "2 runs side by side" in page


def test_report_refuses_a_folder_without_results_and_an_existing_file(run_dir, tmp_path, capsys):
    assert cli_main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    assert "has no results.json" in capsys.readouterr().err
    (tmp_path / "r.html").write_text("mine")
    assert cli_main(["report", str(run_dir), "--out", str(tmp_path / "r.html")]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and (tmp_path / "r.html").read_text() == "mine"
    assert cli_main(["report", str(run_dir), "--out", str(tmp_path / "r.html"), "--overwrite"]) == 0


def test_intervals_and_a_deployment_threshold_are_shown(run_dir, tmp_path):
    """results.json's ci95 beside its number, at_threshold columns and the threshold's source."""
    from denseood.commands.report.page import write_report

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    res = json.loads((run / "results.json").read_text())
    res["scores"]["msp"]["ci95"] = {"ap": [0.0123, 0.4567]}
    res["scores"]["jsd"].setdefault("ci95", {})["auroc"] = [0.25, 0.75]
    res["scores"]["jsd"]["at_threshold"] = {"threshold": 0.125, "fpr": 0.01, "tpr": 0.5, "precision": 0.25,
                                            "f1": 0.3, "source": "calibrate on cityscapes/val (inliers)"}
    (run / "results.json").write_text(json.dumps(res))
    page = write_report([run], tmp_path / "r.html").read_text()
    msp, jsd = _cells(page, "msp"), _cells(page, "jsd")
    assert float(jsd["at_fpr"]) == 0.01 and jsd["at_tpr"] == "0.5" and msp["at_fpr"] == ""
    assert "[1.2, 45.7]" in page and "[25.0, 75.0]" in page
    assert "chosen on calibrate on cityscapes/val (inliers)" in page and "0.125" in page


def test_the_browser_test_fails_without_chromium_saying_how_to_install_it(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium chromium-driver"):
        _driver()


# ----------------------------------------------------------------------------------------------- browser
CHROMIUM_HELP = ("the browser test needs Chromium and chromedriver: `apt-get install chromium chromium-driver` "
                 "(Debian/Ubuntu; .ci/run does this) and `pip install selenium` (the dev extra)")


def _driver():
    try:
        from selenium import webdriver
    except ImportError:
        pytest.fail(f"selenium is not installed; {CHROMIUM_HELP}")
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.fail(f"no Chromium found (chromium: {binary}, chromedriver: {driver}); {CHROMIUM_HELP}")
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(a)
    opts.binary_location = binary
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(driver))


@pytest.mark.browser
def test_report_in_headless_chromium(run_dir, tmp_path):
    from selenium.webdriver.common.by import By

    res = json.loads((run_dir / "results.json").read_text())
    page = tmp_path / "report.html"
    shutil.copy(run_dir / "report.html", page)  # alone: nothing beside it to load
    d = _driver()
    try:
        d.get(page.as_uri())
        urls = [json.loads(e["message"])["message"]["params"].get("request", {}).get("url", "")
                for e in d.get_log("performance")
                if json.loads(e["message"])["message"]["method"] == "Network.requestWillBeSent"]
        assert [u for u in urls if not u.startswith(("file://", "data:"))] == []
        assert [e for e in d.get_log("browser") if e["level"] == "SEVERE"] == []
        imgs = d.find_elements(By.TAG_NAME, "img")
        assert imgs and all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) > 0
                            for i in imgs)
        rows = d.find_elements(By.CSS_SELECTOR, "#score-table tbody tr")
        assert sorted(r.get_attribute("data-score") for r in rows) == sorted(res["scores"])
        for r in rows:
            m = res["scores"][r.get_attribute("data-score")]
            for c in r.find_elements(By.CSS_SELECTOR, "td[data-key]"):
                key = c.get_attribute("data-key")
                if key in m:
                    assert float(c.get_attribute("data-value")) == m[key]
                    assert f"{100 * m[key]:.2f}" in c.text.split()  # the number shown, in %
        table = d.find_element(By.CSS_SELECTOR, "table.frame-table")
        col = [h.text for h in table.find_elements(By.CSS_SELECTOR, "thead th")].index("false-positive px")

        def column() -> list[int]:
            return [int(r.find_elements(By.TAG_NAME, "td")[col].text)
                    for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")]

        assert len(set(column())) > 1  # else sorting could not be seen
        table.find_elements(By.CSS_SELECTOR, "thead th")[col].click()
        assert column() == sorted(column())
        table.find_elements(By.CSS_SELECTOR, "thead th")[col].click()
        assert column() == sorted(column(), reverse=True)
        link = d.find_elements(By.CSS_SELECTOR, "a.worst-link")[0]
        target = link.get_attribute("href").split("#")[1]
        link.click()
        assert d.execute_script("return location.hash") == f"#{target}"
        top, height = d.execute_script(f"return [document.getElementById('{target}').getBoundingClientRect().top, "
                                       "window.innerHeight]")
        assert d.execute_script("return window.scrollY") > 0 and -2 <= top < height / 2, top  # scrolled to the view
        assert d.find_element(By.ID, target).find_elements(By.TAG_NAME, "img")
        d.save_screenshot(str(tmp_path / "report.png"))
    finally:
        d.quit()
    assert (tmp_path / "report.png").stat().st_size > 1000
