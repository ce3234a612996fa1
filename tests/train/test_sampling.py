"""train.sampling: deterministic global batch plan, rank slices, crops, the loader, the lr schedule."""
from __future__ import annotations

import pytest
import torch

from denseood.errors import ConfigError, DatasetError
from denseood.train.config import TrainConfig
from denseood.train.sampling import (CropDataset, StepBatchSampler, collate, flow_pretrain_box, global_batch_plan,
                                     lr_factor, make_loader, open_train_data, val_spec)


def test_batch_plan_is_deterministic_and_split_over_ranks():
    a = global_batch_plan(10, 4, step=7, seed=1)
    assert a == global_batch_plan(10, 4, step=7, seed=1)
    assert a != global_batch_plan(10, 4, step=8, seed=1)
    # every index of an epoch appears once across consecutive steps
    idx = [i for s in range(5) for i, _ in global_batch_plan(10, 4, s, seed=1)]
    assert sorted(idx[:10]) == list(range(10))
    # rank slices concatenate to the global batch
    r0 = next(iter(StepBatchSampler(10, 4, 7, 8, 1, rank=0, world=2)))
    r1 = next(iter(StepBatchSampler(10, 4, 7, 8, 1, rank=1, world=2)))
    assert [(k[0], k[1]) for k in r0 + r1] == a
    with pytest.raises(ConfigError, match="not divisible"):
        StepBatchSampler(10, 3, 0, 1, 0, rank=0, world=2)


def test_old_import_path_still_provides_the_moved_names():
    import denseood.train.trainer as old
    from denseood.train import config, sampling

    assert old.TrainConfig is config.TrainConfig
    assert old.global_batch_plan is sampling.global_batch_plan and old.StepBatchSampler is sampling.StepBatchSampler
    assert old.CropDataset is sampling.CropDataset and old.lr_factor is sampling.lr_factor


@pytest.mark.parametrize("schedule, mid", [("poly", 0.5 ** 0.9), ("cosine", 0.5), ("constant", 1.0)])
def test_lr_factor_warmup_then_schedule(schedule, mid):
    cfg = TrainConfig(schedule=schedule, warmup_steps=4)
    assert [lr_factor(cfg, s, 10, 100) for s in range(10, 14)] == [0.25, 0.5, 0.75, 1.0]   # relative to the phase
    assert lr_factor(TrainConfig(schedule=schedule), 60, 10, 100) == pytest.approx(mid)
    assert lr_factor(TrainConfig(schedule=schedule), 10, 10, 100) == pytest.approx(1.0)


def test_flow_pretrain_box_is_keyed_by_seed_and_fits_the_image():
    for seed in range(20):
        y, x, s = flow_pretrain_box(seed, (8, 24), 48, 40, 4)
        assert (y, x, s) == flow_pretrain_box(seed, (8, 24), 48, 40, 4)
        assert s % 4 == 0 and 8 <= s <= 24 and 0 <= y <= 48 - s and 0 <= x <= 40 - s
    assert len({flow_pretrain_box(seed, (8, 24), 48, 40, 4) for seed in range(20)}) > 1


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from denseood.data import synthetic

    root = tmp_path_factory.mktemp("synth_s")
    synthetic.write(root, n_train=3, n_val=1, seed=3, size=(64, 128), progress=False)
    return root


def test_open_train_data_and_loader(synth_root):
    cfg = TrainConfig(root=str(synth_root), crop=32, batch_size=2, workers=0)
    assert val_spec(cfg) == ("synthetic", "val")
    assert val_spec(TrainConfig(dataset="cityscapes", val_split="test")) == ("cityscapes", "test")
    data = open_train_data(cfg)
    assert data.frame_size == (64, 128) and data.num_classes == 19 and data.val_set is not None
    a = data.crops[(1, 7)]
    b = data.crops[(1, 7)]
    assert a[0].shape == (3, 32, 32) and a[0].dtype == torch.uint8 and a[1].shape == (32, 32) and a[2] == 7
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])       # deterministic in the seed
    batches = list(make_loader(data.crops, cfg, 2, 4))
    assert len(batches) == 2
    images, labels, seeds = batches[0]
    assert images.shape == (2, 3, 32, 32) and labels.shape == (2, 32, 32)
    assert seeds == [k[1] for k in global_batch_plan(3, 2, 2, cfg.seed)]
    with pytest.raises(ConfigError, match="crop 100 is larger"):
        open_train_data(TrainConfig(root=str(synth_root), crop=100))


def test_crop_dataset_refuses_labels_outside_the_train_ids():
    import numpy as np

    class Frame:
        name, image, semantic = "f0", np.zeros((40, 40, 3), np.uint8), np.full((40, 40), 30, np.uint8)

    class Reader(list):
        name = "fake"

    with pytest.raises(DatasetError, match=r"\[30\]"):
        CropDataset(Reader([Frame()]), 32, (1.0, 1.0), num_classes=19)[(0, 1)]


def test_collate_stacks_images_and_labels_and_keeps_seeds():
    items = [(torch.zeros(3, 4, 4, dtype=torch.uint8), torch.zeros(4, 4, dtype=torch.long), s) for s in (5, 9)]
    images, labels, seeds = collate(items)
    assert images.shape == (2, 3, 4, 4) and labels.shape == (2, 4, 4) and seeds == [5, 9]
