"""Anomaly scores vs NumPy/SciPy references, in fp32/bf16/fp16, plus registry and error behaviour."""
import cv2
import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax, xlogy

from denseood.errors import ConfigError
from denseood.scores import SCORES, anomaly_score, parse_scores, score_kwargs


# ------------------------------------------------------------------------------------ NumPy references
def ref_msp(x):
    return 1.0 - softmax(x, axis=1).max(axis=1)


def ref_maxlogit(x):
    return -x.max(axis=1)


def ref_energy(x, t=1.0):
    return -t * logsumexp(x / t, axis=1)


def ref_entropy(x):
    p = softmax(x, axis=1)
    return -xlogy(p, p).sum(axis=1)


def ref_jsd(x):
    c = x.shape[1]
    p = softmax(x, axis=1)
    u = np.full_like(p, 1.0 / c)
    m = 0.5 * (p + u)
    js = 0.5 * (xlogy(p, p) - xlogy(p, m)).sum(1) + 0.5 * (u * (np.log(u) - np.log(m))).sum(1)
    return -js


def ref_sml(x, mean, std):
    c = x.argmax(axis=1)
    return -(x.max(axis=1) - mean[c]) / std[c]


def ref_maha(feat, means, prec, valid=None):
    """feat (B,F,h,w) float64 -> (B,h,w) min_c sqrt((z-mu_c)^T P (z-mu_c)), brute force per class."""
    b, f, h, w = feat.shape
    z = feat.transpose(0, 2, 3, 1).reshape(-1, f)
    d = []
    for k in range(means.shape[0]):
        if valid is not None and not valid[k]:
            continue
        diff = z - means[k]
        d.append(np.einsum("nf,fg,ng->n", diff, prec, diff))
    return np.sqrt(np.maximum(np.min(np.stack(d, 1), axis=1), 0)).reshape(b, h, w)


LOGIT_REFS = {
    "msp": ref_msp,
    "maxlogit": ref_maxlogit,
    "energy": ref_energy,
    "entropy": ref_entropy,
    "jsd": ref_jsd,
}


def _logits(rng, scale, shape=(2, 7, 5, 6)):
    x = rng.standard_normal(shape) * scale
    # a few extreme values to provoke overflow in half precision
    x.flat[:: 17] = 1e4 * np.sign(x.flat[:: 17] + 1e-9)
    return x


@pytest.mark.parametrize("name", sorted(LOGIT_REFS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_logit_scores_match_numpy(name, dtype, scale, rng):
    x = torch.from_numpy(_logits(rng, scale)).to(dtype)
    ref = LOGIT_REFS[name](x.double().numpy())  # reference on exactly the quantised input values
    out = anomaly_score(name, x)
    assert out.shape == (2, 5, 6)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=2e-4)


def test_energy_temperature(rng):
    x = torch.from_numpy(rng.standard_normal((1, 4, 3, 3)) * 5).to(torch.float16)
    for t in (0.5, 2.5):
        np.testing.assert_allclose(anomaly_score("energy", x, temperature=t).numpy(),
                                   ref_energy(x.double().numpy(), t), rtol=1e-5, atol=1e-4)
    with pytest.raises(ConfigError):
        anomaly_score("energy", x, temperature=0.0)


def test_score_orientation_uniform_is_more_anomalous():
    peaked = torch.zeros(1, 5, 1, 1)
    peaked[0, 2] = 10.0
    uniform = torch.zeros(1, 5, 1, 1)
    for name in ("msp", "entropy", "jsd", "maxlogit", "energy"):
        assert anomaly_score(name, uniform).item() > anomaly_score(name, peaked).item(), name


def test_registry_and_errors(rng):
    assert set(SCORES) == {"msp", "maxlogit", "sml", "energy", "entropy", "jsd", "mahalanobis",
                           "rba", "mask_msp", "mask_maxlogit", "eam", "abet"}
    assert SCORES["sml"].needs == {"stats"}
    assert SCORES["mahalanobis"].needs == {"stats", "features"}
    assert SCORES["msp"].needs == set()
    x = torch.randn(1, 3, 4, 4)
    with pytest.raises(ConfigError) as e:
        anomaly_score("nope", x)
    for n in SCORES:
        assert n in str(e.value)
    with pytest.raises(ConfigError, match="B,C,H,W"):
        anomaly_score("msp", x[0])
    with pytest.raises(ConfigError, match="temprature"):
        anomaly_score("energy", x, temprature=2.0)
    # shared inputs are accepted by every score and ignored where unused
    np.testing.assert_allclose(anomaly_score("msp", x, stats={}, features=None).numpy(), ref_msp(x.double().numpy()),
                               rtol=1e-5, atol=1e-6)
    assert parse_scores("jsd, msp,jsd") == ["jsd", "msp"]
    with pytest.raises(ConfigError, match="valid scores"):
        parse_scores("jsd,bogus")


def test_sml_matches_numpy_and_missing_stats(rng):
    x = torch.from_numpy(rng.standard_normal((2, 4, 6, 5)) * 4).to(torch.bfloat16)
    mean = rng.standard_normal(4)
    std = rng.uniform(0.5, 2.0, 4)
    stats = {"sml_mean": torch.tensor(mean, dtype=torch.float32), "sml_std": torch.tensor(std, dtype=torch.float32)}
    out = anomaly_score("sml", x, stats=stats)
    assert out.shape == (2, 6, 5) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref_sml(x.double().numpy(), mean, std), rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="no SML statistics.*fit_sml"):
        anomaly_score("sml", x)
    with pytest.raises(ConfigError, match="no SML statistics"):
        anomaly_score("sml", x, stats={"maha_means": torch.zeros(4, 2)})
    with pytest.raises(ConfigError, match="3 classes"):
        anomaly_score("sml", x, stats={"sml_mean": torch.zeros(3), "sml_std": torch.ones(3)})


def _maha_stats(rng, c, f):
    means = rng.standard_normal((c, f)) * 3
    a = rng.standard_normal((f, f))
    prec = a @ a.T / f + np.eye(f) * 0.5
    return means, prec


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_mahalanobis_matches_numpy_same_resolution(dtype, rng):
    c, f = 5, 6
    means, prec = _maha_stats(rng, c, f)
    feat = torch.from_numpy(rng.standard_normal((2, f, 4, 7)) * 3 + 10).to(dtype)  # offset: tests conditioning
    logits = torch.randn(2, c, 4, 7).to(dtype)
    stats = {"maha_means": torch.tensor(means, dtype=torch.float32),
             "maha_precision": torch.tensor(prec, dtype=torch.float32)}
    out = anomaly_score("mahalanobis", logits, features=feat, stats=stats)
    assert out.shape == (2, 4, 7) and out.dtype == torch.float32
    ref = ref_maha(feat.double().numpy(), means.astype(np.float32).astype(np.float64),
                   prec.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-3)


def test_mahalanobis_upsampled_and_counts(rng):
    c, f = 4, 3
    means, prec = _maha_stats(rng, c, f)
    feat = rng.standard_normal((1, f, 5, 6))
    counts = np.array([10, 0, 3, 7])
    stats = {"maha_means": torch.tensor(means, dtype=torch.float32),
             "maha_precision": torch.tensor(prec, dtype=torch.float32),
             "maha_counts": torch.tensor(counts)}
    logits = torch.randn(1, c, 20, 24)
    out = anomaly_score("mahalanobis", logits, features=torch.from_numpy(feat).float(), stats=stats)
    assert out.shape == (1, 20, 24)
    small = ref_maha(feat, means, prec, valid=counts > 0)[0].astype(np.float32)
    ref = cv2.resize(small, (24, 20), interpolation=cv2.INTER_LINEAR)  # half-pixel centres = align_corners False
    np.testing.assert_allclose(out[0].numpy(), ref, rtol=1e-4, atol=1e-4)
    # class 1 excluded: putting the features exactly on its mean must not give distance 0
    feat1 = torch.tensor(means[1], dtype=torch.float32).view(1, f, 1, 1)
    d = anomaly_score("mahalanobis", torch.randn(1, c, 1, 1), features=feat1, stats=stats)
    assert d.item() > 1e-3
    stats.pop("maha_counts")
    d_all = anomaly_score("mahalanobis", torch.randn(1, c, 1, 1), features=feat1, stats=stats)
    assert d_all.item() < 1e-2


def test_mahalanobis_missing_inputs():
    logits = torch.randn(1, 3, 4, 4)
    feat = torch.randn(1, 2, 4, 4)
    with pytest.raises(ConfigError, match="no Mahalanobis statistics.*fit_mahalanobis"):
        anomaly_score("mahalanobis", logits, features=feat)
    stats = {"maha_means": torch.zeros(3, 2), "maha_precision": torch.eye(2)}
    with pytest.raises(ConfigError, match="features"):
        anomaly_score("mahalanobis", logits, stats=stats)
    with pytest.raises(ConfigError, match="channels"):
        anomaly_score("mahalanobis", logits, features=torch.randn(1, 5, 4, 4), stats=stats)


def test_score_kwargs():
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(1, 1)
            self.stats = {}

    m = M()
    assert score_kwargs("msp", m) == {}
    with pytest.raises(ConfigError, match="fit_sml"):
        score_kwargs("sml", m)
    with pytest.raises(ConfigError, match="fit_mahalanobis"):
        score_kwargs("mahalanobis", m)
    m.stats = {"sml_mean": torch.zeros(3), "sml_std": torch.ones(3)}
    kw = score_kwargs("sml", m)
    assert torch.equal(kw["stats"]["sml_std"], torch.ones(3))
    with pytest.raises(ConfigError, match="valid scores"):
        score_kwargs("foo", m)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_scores_on_cuda_match_cpu(rng):
    x = torch.from_numpy(_logits(rng, 30.0)).to(torch.bfloat16)
    for name in LOGIT_REFS:
        torch.testing.assert_close(anomaly_score(name, x.cuda()).cpu(), anomaly_score(name, x), rtol=1e-5, atol=1e-4)
    means, prec = _maha_stats(rng, 7, 4)
    stats = {"maha_means": torch.tensor(means, dtype=torch.float32),
             "maha_precision": torch.tensor(prec, dtype=torch.float32)}
    feat = torch.randn(2, 4, 3, 3)
    cpu = anomaly_score("mahalanobis", x, features=feat, stats=stats)
    gpu = anomaly_score("mahalanobis", x.cuda(), features=feat.cuda().half(),
                        stats={k: v.cuda() for k, v in stats.items()})
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=2e-3, atol=2e-3)
