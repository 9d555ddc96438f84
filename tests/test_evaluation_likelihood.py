"""Dataset bits/dim at scale: standard errors that match the spread of reruns, the terms of the bound, the CLI."""

import json
import math

import pytest
import torch

import score_sde as ss
from score_sde.cli import main
from score_sde.data_scaling import DataScaling
from score_sde.likelihood import dataset_bits_per_dim

C = 0.35  # data law N(0, C I): under VP, p_t = N(0, (alpha^2 C + sigma^2) I)


def _gaussian_score(sde):
    def score(x, t):
        a, s = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
        return -x / (a**2 * C + s**2)

    return score


def _levels(n, d, K, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, K - 2, (n, d), generator=g)


def test_mc_stderr_matches_the_spread_of_40_independent_reruns():
    # An exact Gaussian score on 17-level data in D = 4: the only randomness is the dequantization noise and
    # the Hutchinson probes, so 20 reruns with other seeds scatter by the estimator's own standard error.
    sde = ss.VPSDE()
    scaling = DataScaling.centered(17)
    levels = _levels(24, 4, 17, seed=0)
    kw = dict(divergence="hutchinson", repeats=3, rtol=1e-3, atol=1e-3, dtype=torch.float64)
    runs = [dataset_bits_per_dim(sde, _gaussian_score(sde), levels, scaling, generator=torch.Generator().manual_seed(s),
                                 **kw) for s in range(40)]  # fmt: skip
    spread = float(torch.tensor([r.mean for r in runs], dtype=torch.float64).std())
    reported = sum(r.mc_stderr for r in runs) / len(runs)
    print(f"spread of 40 reruns {spread:.5f}, reported estimator stderr {reported:.5f}, ratio {reported / spread:.3f}")
    assert 1 / 1.5 < reported / spread < 1.5
    # the standard error over the points is larger: it also holds the spread of the data
    assert all(r.stderr > r.mc_stderr for r in runs)


def test_terms_sum_to_the_mean_and_repr_is_short():
    sde = ss.VPSDE()
    scaling = DataScaling.centered(17)
    score = _gaussian_score(sde)
    levels = _levels(10, 4, 17, seed=1)
    g = torch.Generator().manual_seed(0)
    r = dataset_bits_per_dim(sde, score, levels, scaling, batch_size=4, repeats=2, generator=g, divergence="exact",
                             dtype=torch.float64)  # fmt: skip
    assert r.prior_bpd + r.integral_bpd + r.dequantization_bpd == pytest.approx(r.mean, abs=1e-10)
    assert r.dequantization_bpd == pytest.approx(math.log2(17) - math.log2(2.0))
    assert r.nll_nats == pytest.approx((r.mean - r.dequantization_bpd) * 4 * math.log(2), abs=1e-9)
    assert r.per_repeat.shape == (10, 2) and r.num == 10 and r.repeats == 2 and r.dim == 4
    assert r.nfe_per_sample == pytest.approx(r.nfe / 6) and r.solver_error_bpd is None  # 3 batches x 2 repeats
    assert "tensor" not in repr(r) and len(repr(r)) < 600
    json.dumps(r.to_dict())
    mean, stderr = r
    assert (mean, stderr) == (r.mean, r.stderr)
    # the quadrature scheme reports its own error estimate
    q = dataset_bits_per_dim(sde, score, levels, scaling, generator=torch.Generator().manual_seed(0),
                             divergence="exact", dtype=torch.float64, scheme="quadrature")  # fmt: skip
    assert q.solver_error_bpd is not None and 0 <= q.solver_error_bpd < 1e-3
    # continuous data: no dequantization term
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    c = dataset_bits_per_dim(sde, score, x, None, divergence="exact")
    assert c.dequantization_bpd == 0.0
    assert c.mean == pytest.approx(c.nll_nats / (4 * math.log(2)))
    var = float(sde.alpha(torch.tensor(1e-5)) ** 2 * C + sde.sigma(torch.tensor(1e-5)) ** 2)  # p_eps, eps = 1e-5
    exact = 0.5 * float((x**2).sum(1).mean()) / var + 2 * math.log(2 * math.pi * var)
    assert c.nll_nats == pytest.approx(exact, abs=1e-3)


TINY_DIGITS = [
    "data.dataset=digits",
    "data.uniform_dequantization=true",
    "model.hidden=32",
    "model.depth=1",
    "model.emb_dim=16",
    "training.batch_size=32",
    "training.n_iters=4",
    "training.warmup=1",
    "training.log_every=2",
    "training.ckpt_every=4",
    "training.progress=false",
    "training.device=cpu",
]


@pytest.fixture(scope="module")
def digits_workdir(tmp_path_factory):
    pytest.importorskip("sklearn")
    from score_sde.training import Trainer, load_config

    wd = tmp_path_factory.mktemp("ll") / "digits"
    Trainer(load_config(None, TINY_DIGITS), str(wd)).fit()
    return wd


def test_cli_prints_unmistakable_labels_and_writes_the_terms(digits_workdir, tmp_path, capsys):
    out = tmp_path / "ll.json"
    args = ["likelihood", "--workdir", str(digits_workdir), "--num", "4", "--repeats", "2", "--rtol", "1e-3",
            "--atol", "1e-3", "--batch-size", "4", "--seed", "5", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "bits/dim of the discrete data (dequantized bound)" in text
    assert "continuous NLL in model space" in text and "not comparable with bits/dim" in text
    assert "prior" in text and "ODE integral" in text and "dequantization" in text and "NFE per point" in text
    r = json.loads(out.read_text())
    for key in ("eval_bpd", "eval_nll", "stderr", "mc_stderr", "prior_bpd", "integral_bpd", "dequantization_bpd",
                "nll_nats", "nfe_per_sample", "repeats"):  # fmt: skip
        assert key in r, key
    assert r["repeats"] == 2 and r["eval_n"] == 4 and r["settings"]["rtol"] == 1e-3 and r["settings"]["seed"] == 5
    assert r["prior_bpd"] + r["integral_bpd"] + r["dequantization_bpd"] == pytest.approx(r["eval_bpd"], abs=1e-9)
    assert main([*args[:-2], "--out", str(tmp_path / "again.json")]) == 0  # the same seed: the same numbers
    assert json.loads((tmp_path / "again.json").read_text())["eval_bpd"] == r["eval_bpd"]
    assert main(["likelihood", "--workdir", str(digits_workdir), "--repeats", "0"]) == 2
    assert "--repeats must be >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_mc_stderr_on_a_trained_digits_model(digits_workdir):
    """The acceptance check on a (tiny) trained digits network: 20 reruns, one Hutchinson probe."""
    from score_sde.training.trainer import load_split, load_workdir

    cfg, sde, model, _ = load_workdir(digits_workdir, device="cpu")
    ds = load_split(cfg, "test")
    levels = ds.quantized[:32]

    def score(x, t):
        return model.score(x.float(), t.float()).double()

    kw = dict(divergence="hutchinson", repeats=2, rtol=1e-4, atol=1e-4, dtype=torch.float64, batch_size=32)
    runs = [dataset_bits_per_dim(sde, score, levels, ds.scaling, generator=torch.Generator().manual_seed(s), **kw)
            for s in range(20)]  # fmt: skip
    spread = float(torch.tensor([r.mean for r in runs], dtype=torch.float64).std())
    reported = sum(r.mc_stderr for r in runs) / len(runs)
    print(f"digits: spread of 20 reruns {spread:.5f}, reported {reported:.5f}, ratio {reported / spread:.3f}, "
          f"bpd {runs[0].mean:.4f}, NFE/point {runs[0].nfe_per_sample:.0f}")  # fmt: skip
    assert 1 / 1.5 < reported / spread < 1.5
