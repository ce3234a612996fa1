"""`denseood eval --maps` (precomputed maps), --save-maps-format round trips and the official SMIYC submission."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from denseood.cli import main as cli_main
from tests.commands.test_eval import SIZES, H, W, world  # noqa: F401  (the tiny checkpoint + synthetic world fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
PIXEL = ("ap", "fpr95", "auroc")
#: AP/FPR95/AUROC tolerance of the lossy formats: float16 (h5, ~3 significant digits) and png16 (65535 levels
#: over the score range) merge nearby scores into ties
LOSSY_TOL = {"h5": 0.02, "png16": 0.02}


def _maps_args(world, maps, out, *extra, dataset="synthetic", root=None):
    return ["eval", "--dataset", dataset, "--root", str(root or world["root"]), "--maps", str(maps), "--out",
            str(out), "--workers", "0", *SIZES, *extra]


def _ckpt_args(world, out, *extra, scores="msp,jsd"):
    return ["eval", "--dataset", "synthetic", "--root", str(world["root"]), "--checkpoint", str(world["ckpt"]),
            "--score", scores, "--out", str(out), "--device", "cpu", "--workers", "0", *SIZES, *extra]


@pytest.fixture(scope="module")
def saved(world, tmp_path_factory):  # noqa: F811
    """eval --checkpoint --save-maps (npy) once: its results and its score_maps folder."""
    out = tmp_path_factory.mktemp("saved") / "out"
    assert cli_main(_ckpt_args(world, out, "--protocol", "exact", "--save-maps")) == 0
    return {"out": out, "res": json.loads((out / "results.json").read_text())}


def _results(out):
    return json.loads((out / "results.json").read_text())


def test_npy_round_trip_equals_checkpoint_eval(world, saved, tmp_path):  # noqa: F811
    ref = saved["res"]["scores"]
    for s in ("msp", "jsd"):
        out = tmp_path / s
        assert cli_main(_maps_args(world, saved["out"] / "score_maps" / s, out, "--protocol", "exact")) == 0
        res = _results(out)
        assert list(res["scores"]) == [s] and res["maps_input"]["formats"] == ["npy"] and res["n_images"] == 6
        for k in (*PIXEL, "best_f1", "best_f1_threshold", "n_pixels", "sIoU", "mean_F1"):
            assert res["scores"][s][k] == pytest.approx(ref[s][k], rel=1e-12, abs=1e-15), (s, k)  # float64 sums
    assert f"maps `{saved['out'] / 'score_maps' / 'jsd'}`" in (tmp_path / "jsd" / "results.md").read_text()


@pytest.mark.parametrize("fmt", ["npz", "h5", "png16"])
def test_each_save_format_round_trips(world, tmp_path, fmt):  # noqa: F811
    """npz: equal to the checkpoint eval of the same run. h5 (float16) / png16 (65535 levels): equal to an exact
    eval of the quantised values read back as float32 .npy, and within LOSSY_TOL of the checkpoint eval."""
    import denseood

    ckpt_out = tmp_path / "ckpt"
    assert cli_main(_ckpt_args(world, ckpt_out, "--protocol", "exact", "--no-components", "--save-maps",
                               "--save-maps-format", fmt)) == 0
    ref = _results(ckpt_out)["scores"]
    for s in ("msp", "jsd"):
        folder = ckpt_out / "score_maps" / s
        extra, side = [], {}
        if fmt == "png16":
            side = json.loads((folder / "maps_format.json").read_text())
            extra = ["--maps-scale", repr(side["scale"]), "--maps-offset", repr(side["offset"])]
        out = tmp_path / f"maps_{s}"
        assert cli_main(_maps_args(world, folder, out, "--protocol", "exact", "--no-components", *extra)) == 0
        got = _results(out)["scores"][s]
        if fmt in LOSSY_TOL:
            q = tmp_path / f"q_{s}" / s
            q.mkdir(parents=True)
            from denseood.data.maps import read_map_file

            for p in folder.glob("*" + (".hdf5" if fmt == "h5" else ".png")):
                raw = read_map_file(p, side.get("scale"), side.get("offset", 0.0))
                np.save(q / (p.name.rsplit(".", 1)[0] + ".npy"), raw)
            exact_q = denseood.evaluate_maps(("synthetic", world["root"]), q, protocol="exact", components=False,
                                             workers=0, progress=False)["scores"][s]
        for k in PIXEL:
            if fmt in LOSSY_TOL:
                assert got[k] == pytest.approx(exact_q[k], rel=1e-12, abs=1e-15), (fmt, s, k)
                assert got[k] == pytest.approx(ref[s][k], abs=LOSSY_TOL[fmt]), (fmt, s, k)
            else:
                assert got[k] == pytest.approx(ref[s][k], rel=1e-12, abs=1e-15), (fmt, s, k)


def test_png16_without_scale_and_unbounded_scores_are_refused(world, tmp_path, capsys):  # noqa: F811
    assert cli_main(_ckpt_args(world, tmp_path / "o", "--save-maps", "--save-maps-format", "png16",
                               scores="maxlogit")) == 2
    assert "png16 holds bounded scores only" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert cli_main(_ckpt_args(world, tmp_path / "p", "--save-maps", "--save-maps-format", "png16", "--limit", "6",
                               "--no-components", scores="msp")) == 0
    assert cli_main(_maps_args(world, tmp_path / "p" / "score_maps" / "msp", tmp_path / "q")) == 2
    err = capsys.readouterr().err
    assert "--maps-scale" in err and "maps_format.json" in err


def test_exactly_one_of_checkpoint_and_maps(world, saved, tmp_path, capsys):  # noqa: F811
    base = ["eval", "--dataset", "synthetic", "--root", str(world["root"]), "--out", str(tmp_path / "o")]
    assert cli_main(base) == 2
    assert "exactly one of --checkpoint FILE" in capsys.readouterr().err
    assert cli_main(base + ["--checkpoint", str(world["ckpt"]), "--maps", str(saved["out"] / "score_maps" / "jsd")]) == 2
    assert "both were given" in capsys.readouterr().err
    assert cli_main(_maps_args(world, saved["out"] / "score_maps" / "jsd", tmp_path / "o", "--score", "msp")) == 2
    assert "--score apply to --checkpoint, not to --maps" in capsys.readouterr().err
    assert cli_main(_ckpt_args(world, tmp_path / "o", "--maps-scale", "10")) == 2
    assert "apply to --maps only" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _copy_maps(saved, dst):
    import shutil

    shutil.copytree(saved["out"] / "score_maps" / "jsd", dst)
    return dst


def _break_missing(d):
    (d / "synth0003.npy").unlink()
    return "synth0003"


def _break_extra(d):
    np.save(d / "synth9999.npy", np.zeros((H, W), np.float32))
    return "synth9999.npy"


def _break_size(d):
    np.save(d / "synth0002.npy", np.zeros((H, W + 1), np.float32))
    return f"frame synth0002: map {d / 'synth0002.npy'} is {H}x{W + 1} but the frame's label is {H}x{W}"


def _break_nan(d):
    a = np.load(d / "synth0004.npy")
    a[0, 0] = np.nan
    np.save(d / "synth0004.npy", a)
    return f"frame synth0004: map {d / 'synth0004.npy'} has 1 NaN/inf"


def _break_unreadable(d):
    (d / "synth0001.npy").write_bytes(b"not a numpy file")
    return f"frame synth0001: cannot read map {d / 'synth0001.npy'}"


@pytest.mark.parametrize("case, breaker", [("missing", _break_missing), ("extra", _break_extra),
                                           ("size", _break_size), ("nan", _break_nan),
                                           ("unreadable", _break_unreadable)])
def test_bad_maps_fail_naming_frame_and_file_and_score_nothing(world, saved, tmp_path, capsys, case, breaker):  # noqa: F811
    d = _copy_maps(saved, tmp_path / "jsd")
    needle = breaker(d)
    out = tmp_path / "out"
    assert cli_main(_maps_args(world, d, out)) == 2
    err = capsys.readouterr().err
    assert needle in err, (case, err)
    assert not (out / "results.json").exists()


def test_evaluate_maps_from_python_with_flipped_sign(world, saved, tmp_path):  # noqa: F811
    import denseood
    from denseood.data import open_dataset

    neg = tmp_path / "negjsd"
    neg.mkdir()
    for p in (saved["out"] / "score_maps" / "jsd").glob("*.npy"):
        np.save(neg / p.name, -np.load(p))
    ref = saved["res"]["scores"]["jsd"]
    res = denseood.evaluate_maps(("synthetic", world["root"], "val"), neg, higher_is_anomalous=False,
                                 protocol="exact", components=False, workers=0, progress=False,
                                 min_segment_size=20, min_instance_size=10)
    assert list(res["scores"]) == ["negjsd"] and res["maps_input"]["higher_is_anomalous"] is False
    for k in PIXEL:
        assert res["scores"]["negjsd"][k] == pytest.approx(ref[k], rel=1e-12, abs=1e-15), k
    ds = open_dataset("synthetic", world["root"], "val")
    out = tmp_path / "o"
    res2 = denseood.evaluate_maps(ds, saved["out"] / "score_maps" / "jsd", out, name="mine", protocol="exact",
                                  components=False, workers=0, progress=False, limit=3)
    assert res2["n_images"] == 3 and list(res2["scores"]) == ["mine"] and (out / "results.json").is_file()


def _smiyc_test_root(world, tmp_path, n=2):  # noqa: F811
    from denseood.data import open_dataset
    from denseood.io import write_image

    val = open_dataset("synthetic", world["root"], "val")
    root = tmp_path / "smiyc"
    for i in range(n):
        write_image(root / "dataset_AnomalyTrack" / "images" / f"{FIDS[i]}.png", val[i].image)
    return root


FIDS = ["airplane0000", "bear0000"]  # official AnomalyTrack test ids (splits follow the benchmark's id list)


def test_official_smiyc_submission_layout(world, tmp_path):  # noqa: F811
    root = _smiyc_test_root(world, tmp_path)
    out = tmp_path / "out"
    assert cli_main(["eval", "--dataset", "smiyc-anomaly", "--root", str(root), "--split", "test", "--checkpoint",
                     str(world["ckpt"]), "--score", "jsd", "--method", "MyMethod", "--out", str(out), "--device",
                     "cpu", "--workers", "0", "--save-maps"]) == 0
    res = _results(out)
    assert res["submission"]["methods"] == {"jsd": "MyMethod"}
    assert not list(out.rglob("*.npy")) or all("score_maps" in p.parts for p in out.rglob("*.npy"))
    files = sorted((out / "submission").rglob("*.hdf5"))
    assert [p.relative_to(out / "submission").as_posix() for p in files] == [
        "anomaly_p/MyMethod/AnomalyTrack-all/airplane0000.hdf5", "anomaly_p/MyMethod/AnomalyTrack-all/bear0000.hdf5"]
    for i, p in enumerate(files):
        with h5py.File(p, "r") as f:
            assert list(f.keys()) == ["value"]
            v = f["value"][()]
        assert v.dtype == np.float16 and v.shape == (H, W)
        full = np.load(out / "score_maps" / "jsd" / f"{FIDS[i]}.npy")  # the same frame's float32 map
        np.testing.assert_array_equal(v, full.astype(np.float16))
    # the submission from --maps: several scores' default <method> is the score (here: the folder name)
    out2 = tmp_path / "out2"
    assert cli_main(["eval", "--dataset", "smiyc-anomaly", "--root", str(root), "--split", "test", "--maps",
                     str(out / "score_maps" / "jsd"), "--out", str(out2), "--workers", "0"]) == 0
    for i in range(2):
        with h5py.File(out2 / "submission" / "anomaly_p" / "jsd" / "AnomalyTrack-all" / f"{FIDS[i]}.hdf5", "r") as f:
            np.testing.assert_array_equal(f["value"][()], np.load(out / "score_maps" / "jsd" / f"{FIDS[i]}.npy")
                                          .astype(np.float16))


def test_submission_dataset_and_method_names():
    from types import SimpleNamespace as NS

    from denseood.commands.eval.writers import smiyc_dataset_name, submission_method

    # road_anomaly_benchmark stores frames under cfg.name_for_persistence (datasets/dataset_io.py get_frame)
    assert smiyc_dataset_name(NS(name="smiyc-anomaly", split="test")) == "AnomalyTrack-all"
    assert smiyc_dataset_name(NS(name="smiyc-obstacle", split="test")) == "ObstacleTrack-all"
    assert smiyc_dataset_name(NS(name="smiyc-laf", split="testNoKnown")) == "LostAndFound-test"
    assert smiyc_dataset_name(NS(name="folder", split="all")) == "folder"
    assert submission_method("jsd", ["jsd", "msp"], None) == "jsd"
    assert submission_method("jsd", ["jsd", "msp"], "M") == "M_jsd"
    assert submission_method("jsd", ["jsd"], "M") == "M"
