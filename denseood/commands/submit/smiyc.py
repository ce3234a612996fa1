"""``denseood submit smiyc``: the SegmentMeIfYouCan submission of one track's test frames.

The tree is the one ``denseood eval`` writes for a split without labels
(``--out/submission/anomaly_p/<method>/<dataset>/<frame id>.hdf5``, float16 dataset ``value``); this verb runs
that evaluation on the track's test split and then checks that every test frame has its file, at the frame's
size. See docs/metrics.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .names import TRACKS


def check_tree(out: Path, dataset: Any, methods: list[str]) -> list[str]:
    """Problems of a written SMIYC tree: a frame of ``dataset`` without its hdf5 file in a ``methods`` folder, or a
    file whose shape is not the frame's."""
    from denseood.io import image_header_size, read_hdf5, read_image

    from ..eval.writers import smiyc_dataset_name

    problems = []
    for method in methods:
        folder = out / "submission" / "anomaly_p" / method / smiyc_dataset_name(dataset)
        for frame in dataset.frames:
            path = folder / f"{frame.name}.hdf5"
            hw = image_header_size(frame.image) or read_image(frame.image).shape[:2]
            if not path.is_file():
                problems.append(f"{path}: missing")
            elif tuple(read_hdf5(path).shape) != tuple(hw):
                problems.append(f"{path}: shape {read_hdf5(path).shape}, the frame is {hw[0]}x{hw[1]}")
    return problems


def write_smiyc(args: argparse.Namespace) -> int:
    """Run the test-split evaluation of ``--track`` into ``--out`` and check the tree; 0 when complete."""
    from denseood.errors import OutputError

    from ..eval.runner import evaluate_checkpoint

    out = Path(args.out)
    res = evaluate_checkpoint(dataset=TRACKS[args.track], root=args.root, split="test", checkpoint=args.checkpoint,
                              weights=args.weights, trust_code=args.trust_code, scores=args.score, out=out,
                              method=args.method, dtype=args.dtype, device=args.device, input_size=args.input_size,
                              batch_size=args.batch_size, overwrite=args.overwrite, components=False)
    from denseood.data import open_dataset

    methods = list(res["submission"]["methods"].values())
    problems = check_tree(out, open_dataset(TRACKS[args.track], args.root, "test"), methods)
    if problems:
        raise OutputError(f"the SMIYC tree in {out} is incomplete ({len(problems)} problem(s)), first: {problems[0]}")
    n = res["n_images"]
    print(f"wrote {out / 'submission'}: {n} test frames of {TRACKS[args.track]} for "
          f"{', '.join(res['submission']['methods'].values())}; checked: every frame has its file at full size")
    return 0
