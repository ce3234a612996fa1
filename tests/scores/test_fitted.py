"""fit_sml / fit_mahalanobis vs NumPy statistics computed on the same model outputs."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from denseood.errors import ConfigError
from denseood.scores import anomaly_score, fit_mahalanobis, fit_sml, score_kwargs


class Toy(nn.Module):
    """logits = W x (1x1 conv, fixed); features = [x, x^2] (optionally 2x average pooled)."""

    def __init__(self, w: np.ndarray, pool: bool = False):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float32), requires_grad=False)
        self.pool = pool
        self.stats = {}

    def forward(self, x, return_features=False):
        logits = torch.einsum("cd,bdhw->bchw", self.w, x)
        if not return_features:
            return logits
        feats = torch.cat([x, x ** 2], dim=1)
        if self.pool:
            feats = F.avg_pool2d(feats, 2)
        return logits, feats


def _np_logits(w, x):
    return np.einsum("cd,bdhw->bchw", w.astype(np.float32), x.astype(np.float32)).astype(np.float64)


def test_fit_sml_matches_numpy(rng):
    # classes 0-2: one input channel each; 3: wins when all channels are negative; 4 (zero row): never wins
    w = np.concatenate([np.eye(3) * rng.uniform(0.5, 2, 3)[:, None], -0.7 * np.ones((1, 3)), np.zeros((1, 3))])
    xs = [rng.standard_normal((2, 3, 6, 7)) for _ in range(4)]
    model = Toy(w)
    with pytest.warns(UserWarning, match=r"\[4\]"):
        stats = fit_sml(model, [torch.tensor(x, dtype=torch.float32) for x in xs], max_batches=3)
    # NumPy over the first 3 batches only
    lg = np.concatenate([_np_logits(w, x) for x in xs[:3]])
    mx, cls = lg.max(1).ravel(), lg.argmax(1).ravel()
    for c in range(4):
        sel = mx[cls == c]
        assert sel.size > 0
        np.testing.assert_allclose(stats["sml_mean"][c].item(), sel.mean(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(stats["sml_std"][c].item(), sel.std(), rtol=1e-4, atol=1e-5)
    assert stats["sml_mean"][4].item() == 0.0 and stats["sml_std"][4].item() == 1.0
    assert stats["sml_mean"].dtype == torch.float32 and stats["sml_mean"].shape == (5,)
    assert model.stats["sml_std"] is stats["sml_std"]
    # the fitted stats feed the score
    x = torch.tensor(xs[0], dtype=torch.float32)
    s = anomaly_score("sml", model(x), **score_kwargs("sml", model))
    lg0 = _np_logits(w, xs[0])
    c0 = lg0.argmax(1)
    ref = -(lg0.max(1) - stats["sml_mean"].numpy()[c0]) / stats["sml_std"].numpy()[c0]
    np.testing.assert_allclose(s.numpy(), ref, rtol=1e-4, atol=1e-4)


def test_fit_sml_loader_forms(rng):
    w = rng.standard_normal((3, 3))
    x = torch.tensor(rng.standard_normal((2, 3, 4, 4)), dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = fit_sml(Toy(w), [x])
        b = fit_sml(Toy(w), [{"image": x}])
        c = fit_sml(Toy(w), [(x, torch.zeros(2, 4, 4, dtype=torch.long))])
    for k in a:
        assert torch.equal(a[k], b[k]) and torch.equal(a[k], c[k])
    with pytest.raises(ConfigError, match="'image'"):
        fit_sml(Toy(w), [{"img": x}])
    with pytest.raises(ConfigError, match="normalize"):
        fit_sml(Toy(w), [(x * 0).to(torch.uint8)])
    with pytest.raises(ConfigError, match="no batches"):
        fit_sml(Toy(w), [])


def _np_maha_fit(z, lab, c, ridge=1e-6):
    means = np.zeros((c, z.shape[1]))
    counts = np.zeros(c, dtype=int)
    centred = []
    for k in range(c):
        zk = z[lab == k]
        counts[k] = len(zk)
        if len(zk):
            means[k] = zk.mean(0)
            centred.append(zk - means[k])
    cz = np.concatenate(centred)
    cov = cz.T @ cz / len(cz)
    prec = np.linalg.inv(cov + ridge * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0]))
    return means, prec, counts


def test_fit_mahalanobis_with_labels_matches_numpy(rng):
    c = 4
    w = rng.standard_normal((c, 3))
    xs = [rng.standard_normal((2, 3, 8, 10)) + 0.5 for _ in range(3)]
    sems = [rng.integers(0, c, size=(2, 8, 10)) for _ in range(3)]
    for s in sems:
        s[:, :2, :] = 255  # ignored rows
    sems[0][sems[0] == 3] = 0  # keep class 3 present elsewhere
    loader = [{"image": torch.tensor(x, dtype=torch.float32), "semantic": torch.tensor(s)} for x, s in zip(xs, sems)]
    model = Toy(w, pool=True)
    stats = fit_mahalanobis(model, loader, max_pixels_per_class=10 ** 6)
    # NumPy: features = 2x2 mean of [x, x^2]; labels = nearest downsample (top-left of each 2x2 cell)
    zs, labs = [], []
    for x, s in zip(xs, sems):
        f = np.concatenate([x, x ** 2], 1).astype(np.float32).astype(np.float64)
        f = f.reshape(2, 6, 4, 2, 5, 2).mean(axis=(3, 5))
        zs.append(f.transpose(0, 2, 3, 1).reshape(-1, 6))
        labs.append(s[:, ::2, ::2].reshape(-1))
    z, lab = np.concatenate(zs), np.concatenate(labs)
    means, prec, counts = _np_maha_fit(z, lab, c)
    np.testing.assert_array_equal(stats["maha_counts"].numpy(), counts)
    np.testing.assert_allclose(stats["maha_means"].numpy(), means, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats["maha_precision"].numpy(), prec, rtol=1e-3, atol=1e-3)
    assert set(model.stats) >= {"maha_means", "maha_precision", "maha_counts"}
    # scoring training features with the fitted stats: brute-force min distance
    x0 = torch.tensor(xs[0], dtype=torch.float32)
    logits, feats = model(x0, return_features=True)
    d = anomaly_score("mahalanobis", feats.new_zeros(2, c, 4, 5), features=feats, stats=stats)
    f0 = zs[0]
    ref = np.sqrt(np.min([np.einsum("nf,fg,ng->n", f0 - means[k], prec, f0 - means[k]) for k in range(c)], 0))
    np.testing.assert_allclose(d.numpy().reshape(-1), ref, rtol=1e-3, atol=1e-3)


def test_fit_mahalanobis_predicted_labels_and_cap(rng):
    c = 3
    w = rng.standard_normal((c, 3))
    xs = [rng.standard_normal((1, 3, 10, 12)) for _ in range(3)]
    loader = [torch.tensor(x, dtype=torch.float32) for x in xs]
    model = Toy(w, pool=False)
    stats = fit_mahalanobis(model, loader, max_pixels_per_class=10 ** 6)
    z = np.concatenate([np.concatenate([x, x ** 2], 1).transpose(0, 2, 3, 1).reshape(-1, 6) for x in xs])
    lab = np.concatenate([_np_logits(w, x).argmax(1).reshape(-1) for x in xs])
    means, prec, counts = _np_maha_fit(z, lab, c)
    np.testing.assert_array_equal(stats["maha_counts"].numpy(), counts)
    np.testing.assert_allclose(stats["maha_means"].numpy(), means, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats["maha_precision"].numpy(), prec, rtol=1e-3, atol=1e-3)
    # cap: no class exceeds the budget, classes below it keep all their pixels
    cap = 50
    capped = fit_mahalanobis(Toy(w), loader, max_pixels_per_class=cap)
    np.testing.assert_array_equal(capped["maha_counts"].numpy(), np.minimum(counts, cap))


def test_fit_mahalanobis_bad_labels(rng):
    w = rng.standard_normal((3, 3))
    x = torch.randn(1, 3, 4, 4)
    with pytest.raises(ConfigError, match="outside"):
        fit_mahalanobis(Toy(w), [{"image": x, "semantic": torch.full((1, 4, 4), 7)}])
    with pytest.raises(ConfigError, match="no labelled pixels"):
        fit_mahalanobis(Toy(w), [{"image": x, "semantic": torch.full((1, 4, 4), 255)}])


def test_fit_on_segmenter_end_to_end(tmp_path):
    from denseood.models.checkpoint import save_checkpoint
    from denseood.models.segmenter import create_segmenter
    from denseood.models.sources.registry import load_checkpoint

    torch.manual_seed(0)
    model = create_segmenter("fpn", "resnet18", num_classes=3).eval()
    with pytest.raises(ConfigError, match="fit_mahalanobis"):
        score_kwargs("mahalanobis", model)
    imgs = [torch.randn(2, 3, 40, 60) for _ in range(2)]
    sems = [torch.randint(0, 3, (2, 40, 60)) for _ in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sml_stats = fit_sml(model, imgs)
    maha = fit_mahalanobis(model, [{"image": i, "semantic": s} for i, s in zip(imgs, sems)])
    f = model.feature_channels
    assert sml_stats["sml_mean"].shape == (3,) and maha["maha_means"].shape == (3, f)
    assert maha["maha_precision"].shape == (f, f)
    ck = load_checkpoint(save_checkpoint(model, tmp_path / "m.pt"))
    x = imgs[0][:1]
    with torch.no_grad():
        logits, feats = ck(x, return_features=True)
    d = anomaly_score("mahalanobis", logits, features=feats, **score_kwargs("mahalanobis", ck))
    s = anomaly_score("sml", logits, **score_kwargs("sml", ck))
    assert d.shape == s.shape == (1, 40, 60)
    assert torch.isfinite(d).all() and torch.isfinite(s).all() and (d >= 0).all()


def _expanded_form_d2(z, means, prec):
    """The 0.1 computation (centred expanded quadratic form in float32), kept to show what the test catches."""
    center = means.mean(dim=0)
    mu, zc = means - center, z - center
    zp = zc @ prec
    d2 = (zp * zc).sum(dim=1, keepdim=True) - 2.0 * (zp @ mu.T) + ((mu @ prec) * mu).sum(dim=1)[None, :]
    return d2.amin(dim=1)


def _far_apart_case(spread: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    k, f = 6, 16
    means = (torch.rand(k, f, generator=g) - 0.5) * 2 * spread  # class means up to ~spread apart per axis
    a = torch.randn(f, f, generator=g, dtype=torch.float64)
    prec64 = a @ a.T / f + torch.eye(f, dtype=torch.float64)
    near = means.repeat_interleave(20, 0) + 0.05 * torch.randn(k * 20, f, generator=g)  # d ~ 0.3 from a mean
    mid = 0.5 * (means[:3] + means[3:]) + torch.randn(3, f, generator=g)
    z = torch.cat([near, mid]).float()
    return z, means.float(), prec64.float()


def _reference_d(z, means, prec):
    r = z.double()[:, None, :] - means.double()[None]
    return torch.einsum("nkf,fg,nkg->nk", r, prec.double(), r).amin(dim=1).sqrt()


@pytest.mark.parametrize("spread", [1.0, 30.0, 1e3])
def test_mahalanobis_matches_float64_with_far_apart_means(spread):
    from denseood.scores.fitted import mahalanobis_min_d2

    z, means, prec = _far_apart_case(spread)
    ref = _reference_d(z, means, prec)
    got = mahalanobis_min_d2(z, means, prec).clamp_min(0).sqrt().double()
    rel = ((got - ref).abs() / ref).max().item()
    assert rel < 1e-6, rel
    # through the public score too (features (B,F,h,w), stats as a checkpoint holds them)
    feats = z.T.reshape(1, z.shape[1], 1, -1)
    d = anomaly_score("mahalanobis", feats.new_zeros(1, 3, 1, z.shape[0]), features=feats,
                      stats={"maha_means": means, "maha_precision": prec})
    assert ((d[0, 0].double() - ref).abs() / ref).max().item() < 1e-6


def test_the_expanded_form_fails_the_far_apart_case():
    z, means, prec = _far_apart_case(1e3)
    ref = _reference_d(z, means, prec)
    old = _expanded_form_d2(z, means, prec).clamp_min(0).sqrt().double()
    assert ((old - ref).abs() / ref).max().item() > 1e-4


def test_mahalanobis_picks_the_nearer_of_two_close_means_far_from_the_centroid():
    # issue 19 item 5a: 8 means at the origin, two 0.5 apart at x=1000; the feature (1000, 0.3) is 0.3 from
    # (1000, 0) and 0.2 from (1000, 0.5). The score is the distance (sqrt of the squared form), so 0.2; the
    # float32 linear selection of 0.2.0 took (1000, 0) and returned 0.3.
    means = torch.tensor([[0.0, 0.0]] * 8 + [[1000.0, 0.0], [1000.0, 0.5]])
    feats = torch.tensor([1000.0, 0.3]).reshape(1, 2, 1, 1)
    d = anomaly_score("mahalanobis", feats.new_zeros(1, 10, 1, 1), features=feats,
                      stats={"maha_means": means, "maha_precision": torch.eye(2)})
    assert abs(d.item() - 0.2) < 1e-5, d.item()


def _near_duplicate_case(f: int, seed: int):
    """19 means: 13 near the origin, 3 pairs of near-duplicates (1e-2 apart) ~1e3 away; features near the pairs."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(13, f, generator=g, dtype=torch.float64)
    far = 1e3 * torch.randn(3, f, generator=g, dtype=torch.float64) / f ** 0.5
    twins = far + 1e-2 * torch.randn(3, f, generator=g, dtype=torch.float64)
    means = torch.cat([base, far, twins]).float()
    a = torch.randn(f, f, generator=g, dtype=torch.float64)
    prec = (a @ a.T / f + torch.eye(f, dtype=torch.float64)).float()
    pick = torch.randint(13, 19, (600,), generator=g)
    z = means[pick].double() + 1e-2 * torch.randn(600, f, generator=g, dtype=torch.float64)
    z = torch.cat([z, torch.randn(100, f, generator=g, dtype=torch.float64)]).float()
    return z, means, prec


@pytest.mark.parametrize("f", [64, 128, 256])
def test_mahalanobis_matches_float64_with_near_duplicate_means(f):
    from denseood.scores.fitted import mahalanobis_min_d2

    z, means, prec = _near_duplicate_case(f, seed=f)
    ref = _reference_d(z, means, prec)
    got = mahalanobis_min_d2(z, means, prec).clamp_min(0).sqrt().double()
    rel = ((got - ref).abs() / ref).max().item()
    assert rel <= 1e-5, rel

