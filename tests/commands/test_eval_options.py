"""EvalOptions / SegmentOptions: one options object per verb, built from argparse or keywords, validated once."""
from __future__ import annotations

from types import SimpleNamespace as NS

import pytest
import torch

from denseood.commands.eval.options import EvalOptions
from denseood.errors import ConfigError


def _kw(tmp_path, **kw):
    return {"out": tmp_path / "out", "dataset": "synthetic", "root": tmp_path, "checkpoint": "c.pt", **kw}


def test_the_command_line_and_keywords_give_the_same_options(tmp_path):
    from denseood.cli import build_parser

    parser, _ = build_parser()
    args = parser.parse_args(["eval", "--dataset", "synthetic", "--root", str(tmp_path), "--checkpoint", "c.pt",
                              "--out", str(tmp_path / "out"), "--score", "msp,JSD", "--device", "cpu", "--dtype",
                              "fp32", "--input-size", "32x64", "--protocol", "exact", "--no-components"])
    from_cli = EvalOptions.from_args(args)
    from_kw = EvalOptions(**_kw(tmp_path, root=str(tmp_path), scores=["msp", "jsd"], device="cpu", dtype="fp32",
                                input_size=(32, 64), protocol="exact", components=False, echo=True))
    assert from_cli == from_kw
    # every value in its final form: nothing below the options parses or resolves it again
    assert from_cli.scores == ["msp", "jsd"] and from_cli.input_size == (32, 64)
    assert from_cli.device == torch.device("cpu") and from_cli.dtype is torch.float32


def test_input_size_none_is_the_image_size_everywhere(tmp_path):
    assert EvalOptions(**_kw(tmp_path)).input_size == "model"  # the default: the checkpoint's training size
    assert EvalOptions(**_kw(tmp_path, input_size=None)).input_size is None
    assert EvalOptions(**_kw(tmp_path, input_size="full")).input_size is None
    win = EvalOptions(**_kw(tmp_path, sliding_window="32x32"))
    assert win.input_size is None and win.sliding_window == (32, 32)
    with pytest.raises(ConfigError, match="do not combine it with --input-size"):
        EvalOptions(**_kw(tmp_path, sliding_window="32x32", input_size="64x64"))


def test_the_protocol_is_resolved_per_dataset(tmp_path):
    opts = EvalOptions(**_kw(tmp_path))
    assert opts.protocol_for(NS(default_protocol="smiyc")) == "smiyc"
    assert opts.protocol_for(NS(default_protocol="unknown")) == opts.protocol_for(NS()) == "streaming"
    assert EvalOptions(**_kw(tmp_path, protocol="exact")).protocol_for(NS(default_protocol="caos")) == "exact"
    with pytest.raises(ConfigError, match="unknown protocol 'fast'"):
        EvalOptions(**_kw(tmp_path, protocol="fast"))


@pytest.mark.parametrize("kw, msg", [
    ({"scores": "jsd,bogus"}, "bogus"), ({"limit": 0}, "--limit"), ({"batch_size": 0}, "--batch-size"),
    ({"overlap": 1.0}, "--overlap"), ({"method": "../x"}, "--method"), ({"dtype": "fp8"}, "fp8"),
    ({"streethazards_unlabeled": "void"}, "applies to --dataset streethazards"),
    ({"save_maps": True, "save_maps_format": "png16", "scores": "maxlogit"}, "png16"),
    ({"checkpoint": None}, "exactly one of --checkpoint"),
])
def test_a_bad_value_is_refused_by_the_constructor(tmp_path, kw, msg):
    with pytest.raises(ConfigError, match=msg):
        EvalOptions(**_kw(tmp_path, **kw))
    assert not (tmp_path / "out").exists()


def test_maps_refuse_checkpoint_options_and_name_the_score(tmp_path):
    folder = tmp_path / "jsd_maps"
    with pytest.raises(ConfigError, match="--score, --flip apply to --checkpoint"):
        EvalOptions(out=tmp_path / "o", maps=folder, scores="msp", flip=True)
    assert EvalOptions(out=tmp_path / "o", maps=folder).scores == ["jsd_maps"]
    assert EvalOptions(out=tmp_path / "o", maps=folder, maps_name="mine").scores == ["mine"]
    with pytest.raises(ConfigError, match="apply to --maps only"):
        EvalOptions(**_kw(tmp_path, maps_scale=2.0))


def test_out_is_checked_by_the_options(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("x")
    with pytest.raises(ConfigError, match="pass --overwrite"):
        EvalOptions(**_kw(tmp_path))


def test_segment_options(tmp_path):
    import numpy as np

    from denseood.commands.segment import SegmentOptions
    from denseood.io import write_png

    write_png(tmp_path / "im.png", np.zeros((8, 8, 3), np.uint8))
    opts = SegmentOptions([tmp_path], "c.pt", tmp_path / "out", score="JSD", input_size=None, device="cpu",
                          dtype="fp32")
    assert opts.score == "jsd" and opts.input_size is None and opts.paths == [tmp_path / "im.png"]
    assert opts.device == torch.device("cpu") and opts.dtype is torch.float32 and opts.stems == ["im"]
    assert SegmentOptions([tmp_path], "c.pt", tmp_path / "o2").input_size == "model"
    with pytest.raises(ConfigError, match="bogus"):
        SegmentOptions([tmp_path], "c.pt", tmp_path / "o3", score="bogus")
