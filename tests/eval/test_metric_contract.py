"""The metric contract, checked over every metric object of ``denseood.eval`` (tests/eval/metric_cases.py): the
result equals an independent reference; the order of the frames and their batching do not change it; two ranks
that each saw part of the frames reduce to what one rank that saw all of them computes (emulated in-process,
tests/eval/two_ranks.py); ``compute()`` leaves the state as it was and ``reset()`` forgets it; no input gives
the value the metric documents.
"""
from __future__ import annotations

import inspect
import math
import numbers

import numpy as np
import pytest

import denseood.eval
from tests.eval.metric_cases import CASES, MetricCase
from tests.eval.two_ranks import on_two_ranks


def feed(case: MetricCase, metric, frames: list, chunks: list[int] | None = None):
    """Update ``metric`` with ``frames``: one call per frame, or (batch cases with ``chunks``) one call per chunk
    of that many frames, their arrays stacked on a new first axis. Returns the metric."""
    fn = getattr(metric, case.update)
    if not (case.batch and chunks):
        for f in frames:
            fn(*f)
        return metric
    assert sum(chunks) == len(frames)
    start = 0
    for n in chunks:
        fn(*(np.stack(arrays) for arrays in zip(*frames[start:start + n])))
        start += n
    return metric


def result(case: MetricCase, frames: list) -> dict:
    return feed(case, case.make(), frames).compute()


def assert_same(got, want, tol: float, skip: tuple[str, ...] = (), where: str = "") -> None:
    """``got`` equals ``want`` (dicts: on ``want``'s keys less ``skip``; floats within ``tol``, NaN equals NaN;
    integers, strings and other values exactly)."""
    if isinstance(want, dict):
        assert isinstance(got, dict), where
        for k in want:
            if k not in skip:
                assert k in got, f"{where}{k} missing"
                assert_same(got[k], want[k], tol, skip, f"{where}{k}.")
    elif isinstance(want, (list, tuple, np.ndarray)):
        assert len(got) == len(want), f"{where}: length {len(got)} != {len(want)}"
        for i, (a, b) in enumerate(zip(got, want)):
            assert_same(a, b, tol, skip, f"{where}[{i}]")
    elif isinstance(want, numbers.Integral) and isinstance(got, numbers.Integral):
        assert got == want, f"{where}: {got} != {want}"
    elif isinstance(want, numbers.Real):
        if math.isnan(want):
            assert math.isnan(got), f"{where}: {got}, expected NaN"
        else:
            assert abs(got - want) <= tol, f"{where}: {got!r} != {want!r} (tolerance {tol})"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


@pytest.fixture(params=CASES, ids=lambda c: c.name)
def case(request) -> MetricCase:
    return request.param


def test_every_metric_object_has_a_case():
    """A metric object (``update`` + ``compute``) exported by denseood.eval without a case here fails."""
    metrics = {obj for name in denseood.eval.__all__ if inspect.isclass(obj := getattr(denseood.eval, name))
               and callable(getattr(obj, "update", None)) and callable(getattr(obj, "compute", None))}
    covered = {type(c.make()) for c in CASES}
    assert metrics - covered == set(), f"add a MetricCase to tests/eval/metric_cases.py for {metrics - covered}"


def test_equals_the_reference(case):
    frames = case.frames()
    assert_same(result(case, frames), case.reference(frames), case.tol)


def test_order_and_batching_do_not_change_the_result(case):
    frames = case.frames()
    want = result(case, frames)
    backwards = frames[::-1]
    chunks = [2, len(frames) - 3, 1] if case.batch else None
    assert_same(feed(case, case.make(), backwards, chunks).compute(), want, case.tol, case.varies)
    if case.batch:   # one batch of everything
        assert_same(feed(case, case.make(), frames, [len(frames)]).compute(), want, case.tol, case.varies)


def test_compute_keeps_the_state_and_reset_forgets_it(case):
    frames = case.frames()
    want = result(case, frames)
    m = feed(case, case.make(), frames[:2])
    m.compute()   # a report midway must not consume or alter what was accumulated
    feed(case, m, frames[2:])
    assert_same(m.compute(), want, case.tol, case.varies)
    assert_same(m.compute(), want, 0.0)   # computing again gives the same, bit for bit
    m.reset()
    assert_same(feed(case, m, frames).compute(), want, case.tol, case.varies)


@pytest.mark.parametrize("split", ["interleaved", "one-rank-empty"])
def test_two_ranks_reduce_to_one_rank(case, split):
    """Rank r sees frames r::2 (as eval shards them), or rank 1 sees none (fewer frames than ranks)."""
    frames = case.frames()
    want = result(case, frames)
    parts = [frames[0::2], frames[1::2]] if split == "interleaved" else [frames, []]
    r0, r1 = on_two_ranks(lambda r: result(case, parts[r]))
    assert_same(r1, r0, 0.0)   # every rank returns the same
    assert_same(r0, want, case.tol, case.varies)


def test_no_input_gives_the_documented_value(case):
    fresh, forgotten = case.make(), feed(case, case.make(), case.frames())
    forgotten.reset()
    for m in (fresh, forgotten):
        if isinstance(case.empty, dict):
            assert_same(m.compute(), case.empty, 0.0)
        else:
            with pytest.raises(case.empty[0], match=case.empty[1]):
                m.compute()
