"""`denseood demo --quick`: world -> base + two fine-tunes -> prompter -> eval (both) -> segment, through the
Python verbs; the comparison table; the demo never deletes a folder it did not write."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from denseood.cli import main
from denseood.commands.demo import MARKER, comparison_table


def test_demo_quick_end_to_end(tmp_path, capsys):
    w = tmp_path / "w.pt"
    assert main(["demo", "--quick", "--out", str(tmp_path / "d"), "--weights", str(w)]) == 0
    printed = capsys.readouterr().out
    res = json.loads((tmp_path / "d" / "eval" / "results.json").read_text())
    assert set(res["scores"]) == {"msp", "maxlogit", "energy", "entropy", "sml", "jsd"}
    for m in res["scores"].values():
        assert 0.0 <= m["ap"] <= 1.0 and 0.0 <= m["auroc"] <= 1.0
    none = json.loads((tmp_path / "d" / "eval_none" / "results.json").read_text())
    assert set(none["scores"]) == {"msp", "maxlogit"}
    # the learned prompter was trained on jsd maps, so S2M must run on jsd even though msp is listed first
    assert res["s2m_score"] == "jsd"
    assert "s2m" in res["s2m"] and "threshold@bestF1" in res["s2m"]
    assert "on the jsd map" in (tmp_path / "d" / "eval" / "results.md").read_text()
    # the side-by-side table is printed once, last, with its one-sentence reading, and so is the results table
    assert printed.count("| fine-tune negatives | score |") == 1
    assert printed.rstrip().endswith((tmp_path / "d" / "eval" / "results.md").read_text().rstrip())
    assert "none | msp" in printed and "flow (NFlowJS) | jsd" in printed
    assert ("raise AP by" in printed) != ("NOT there" in printed)
    assert printed.count((tmp_path / "d" / "eval" / "results.md").read_text().splitlines()[0]) == 1
    report = (tmp_path / "d" / "eval" / "report.html").resolve()
    assert f"report: {report}" in printed.splitlines() and report.is_file()  # printed just before the tables
    overlays = sorted((tmp_path / "d" / "segment" / "overlays").glob("*.png"))
    lines = (tmp_path / "d" / "segment" / "objects.json").read_text().strip().splitlines()
    assert len(overlays) == len(lines) == 2
    # a second run reuses the weights instead of training again
    mtime = w.stat().st_mtime_ns
    assert main(["demo", "--quick", "--out", str(tmp_path / "d"), "--weights", str(w)]) == 0
    assert w.stat().st_mtime_ns == mtime


def test_demo_quick_refuses_the_real_weights_path(tmp_path):
    assert main(["demo", "--quick", "--out", str(tmp_path / "d")]) == 2


def test_demo_never_deletes_a_folder_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "mine"
    thesis = out / "data" / "thesis" / "chapter1.tex"
    thesis.parent.mkdir(parents=True)
    thesis.write_text("years of work")
    (out / "train").mkdir()
    assert main(["demo", "--quick", "--out", str(out), "--weights", str(tmp_path / "w.pt")]) == 2
    err = capsys.readouterr().err
    assert f"--out {out} holds files the demo did not write" in err and "pass another --out" in err
    assert thesis.read_text() == "years of work" and not (out / MARKER).exists()


def test_comparison_table_says_whether_the_effect_is_there():
    m = (lambda ap: {"ap": ap, "fpr95": 0.5})
    none = {"scores": {"msp": m(0.2), "maxlogit": m(0.3)}}
    good = comparison_table(none, {"scores": {"jsd": m(0.45)}}, 0.6, 0.59)
    assert "raise AP by 15.0 points" in good and "none+maxlogit" in good and "| 60.0 |" in good
    bad = comparison_table(none, {"scores": {"jsd": m(0.25)}}, None, None)
    assert "NOT there" in bad and "5.0 points below none+maxlogit" in bad and "| – |" in bad


@pytest.mark.slow
def test_demo_log_in_a_file_is_short_and_ends_with_the_tables(tmp_path):
    """`make demo > log 2>&1` (issue 24): progress as plain lines (no carriage returns), under 200 lines in all
    (the full demo prints at most one progress line per bar every FILE_INTERVAL_S seconds), the tables last."""
    log = tmp_path / "log"
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "denseood", "demo", "--quick", "--out", str(tmp_path / "d"),
                               "--weights", str(tmp_path / "w.pt")], stdout=f, stderr=subprocess.STDOUT,
                              timeout=900)
    assert proc.returncode == 0, log.read_text()[-3000:]
    text = log.read_text()
    lines = text.splitlines()
    assert "\r" not in text and "\x1b" not in text and len(lines) < 200
    progress = [i for i, ln in enumerate(lines) if re.search(r"\|[# 0-9]*\| \d+/\d+ \[", ln)]
    assert progress, "the demo's progress lines are missing from the log"
    first_table = lines.index("| fine-tune negatives | score | AP % | FPR95 % | inlier mIoU % |")
    assert text.count("| fine-tune negatives | score |") == 1 and max(progress) < first_table
    assert text.rstrip().endswith((tmp_path / "d" / "eval" / "results.md").read_text().rstrip())
    assert lines.index("[4/4] segmenting OOD objects in 2 driving images -> " + str(tmp_path / "d" / "segment")
                       + "/overlays") < first_table
