"""Table-driven bad inputs: every case ends in a clear error naming the argument, a finite result, or a warning.

More than 200 generated cases (types, shapes, dtypes, ranges, NaN/inf, empty) go through ``sample``,
``log_likelihood``, ``encode``, ``decode``, ``bits_per_dim``, the SDE constructors, ``ScoreModel`` and the
command line. Allowed outcomes:

* ``ValueError`` / ``TypeError`` whose message names the argument (or the option / config key);
* a result whose tensors are all finite;
* a result holding NaN/inf only together with a :class:`~score_sde.utils.NonFiniteScoreWarning`;
* for a score that returns NaN in an adaptive ODE solve: :class:`~score_sde.solvers.ode.ODESolveError` naming it;
* on the command line: exit status 2 and one ``score-sde: error:`` line, never a traceback.
"""

import math
import os
import pickle
import warnings

import pytest
import torch

import score_sde as ss
from score_sde import cli
from score_sde.solvers.ode import ODESolveError
from score_sde.training import load_config, save_config
from score_sde.utils import NonFiniteScoreWarning

NUMBERS = [0, -1, -1e-3, math.nan, math.inf, -math.inf, "1", None, True, [1e-3]]
SDE = ss.VPSDE()
VE = ss.VESDE()


def good(x, t):
    return -x


def nan_score(x, t):
    return x * math.nan


def wrong_shape(x, t):
    return -x[:, :1]


def not_a_tensor(x, t):
    return 1.0


def _finite(r) -> bool:
    if torch.is_tensor(r):
        return bool(torch.isfinite(r).all())
    for name in ("x", "logp", "z"):
        if hasattr(r, name):
            return _finite(getattr(r, name))
    return True


def check(fn, name: str):
    """Run a case; return its outcome ('error', 'finite', 'warned') after checking it is an allowed one."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            r = fn()
        except (ValueError, TypeError) as e:
            assert name.lower() in str(e).lower(), f"message does not name {name!r}: {e}"
            return "error"
        except ODESolveError as e:
            assert "NaN" in str(e) or "tolerances" in str(e), e
            return "error"
    if _finite(r):
        return "finite"
    assert any(issubclass(w.category, NonFiniteScoreWarning) for w in caught), "a NaN result without a warning"
    return "warned"


# ---- the cases ---------------------------------------------------------------------------------------------------
CASES = []


def case(label, name, fn):
    CASES.append(pytest.param(fn, name, id=f"{label}"))


x2 = torch.randn(4, 2)
for v in NUMBERS:
    case(f"sample-steps-{v!r}", "steps", lambda v=v: ss.sample(SDE, good, (2, 2), sampler="ddim", steps=v))
    case(f"sample-eps-{v!r}", "eps", lambda v=v: ss.sample(SDE, good, (2, 2), sampler="ddim", steps=3, eps=v))
    case(f"sample-nfe-{v!r}", "nfe", lambda v=v: ss.sample(SDE, good, (2, 2), sampler="ddim", nfe=v))
    for opt in ("rtol", "atol"):
        case(f"ode-{opt}-{v!r}", opt, lambda v=v, opt=opt: ss.sample(SDE, good, (2, 2), sampler="ode", **{opt: v}))
        case(f"ll-{opt}-{v!r}", opt, lambda v=v, opt=opt: ss.log_likelihood(SDE, good, x2, **{opt: v}))
        case(f"encode-{opt}-{v!r}", opt, lambda v=v, opt=opt: ss.encode(SDE, good, x2, **{opt: v}))
        case(f"decode-{opt}-{v!r}", opt, lambda v=v, opt=opt: ss.decode(SDE, good, x2, **{opt: v}))
    case(f"ll-eps-{v!r}", "eps", lambda v=v: ss.log_likelihood(SDE, good, x2, eps=v))
    case(f"ll-probes-{v!r}", "probes", lambda v=v: ss.log_likelihood(SDE, good, x2, divergence="hutchinson", probes=v))
    case(f"ll-chunk-{v!r}", "chunk_size", lambda v=v: ss.log_likelihood(SDE, good, x2, chunk_size=v))
    case(f"vp-beta_min-{v!r}", "beta_min", lambda v=v: ss.VPSDE(beta_min=v))
    case(f"vp-beta_max-{v!r}", "beta_max", lambda v=v: ss.VPSDE(beta_max=v))
    case(f"vp-N-{v!r}", "N", lambda v=v: ss.VPSDE(N=v))
    case(f"vp-cosine_s-{v!r}", "cosine_s", lambda v=v: ss.VPSDE(schedule="cosine", cosine_s=v))
    case(f"subvp-beta_max-{v!r}", "beta_max", lambda v=v: ss.SubVPSDE(beta_max=v))
    case(f"ve-sigma_min-{v!r}", "sigma_min", lambda v=v: ss.VESDE(sigma_min=v))
    case(f"ve-sigma_max-{v!r}", "sigma_max", lambda v=v: ss.VESDE(sigma_max=v))
    case(f"scoremodel-sigma_data-{v!r}", "sigma_data", lambda v=v: ss.ScoreModel(good, SDE, sigma_data=v))
    case(f"scoremodel-t-{v!r}", "t", lambda v=v: ss.ScoreModel(lambda x, t: -x, SDE)(x2, v))

BAD_X = {
    "nan": torch.tensor([[0.0, math.nan]]),
    "inf": torch.tensor([[math.inf, 0.0]]),
    "empty": torch.zeros(0, 2),
    "int": torch.zeros(3, 2, dtype=torch.long),
    "list": [[0.0, 1.0]],
    "scalar": torch.tensor(1.0),
    "float16": torch.zeros(3, 2, dtype=torch.float16),
    "bfloat16": torch.zeros(3, 2, dtype=torch.bfloat16),
}
for k, x in BAD_X.items():
    case(f"ll-x-{k}", "x", lambda x=x: ss.log_likelihood(SDE, good, x))
    case(f"encode-x-{k}", "x", lambda x=x: ss.encode(SDE, good, x))
    case(f"decode-z-{k}", "x", lambda x=x: ss.decode(SDE, good, x))
    case(f"sample-x_T-{k}", "x_T", lambda x=x: ss.sample(SDE, good, sampler="ddim", steps=3, x_T=x))
    case(f"ode-x_T-{k}", "x_T", lambda x=x: ss.sample(SDE, good, sampler="ode", x_T=x))
    case(f"scoremodel-x-{k}", "x", lambda x=x: ss.ScoreModel(lambda x, t: -x, SDE)(x, 0.5))

for shape in [(), (0, 2), (-1, 2), (2.5,), "ab", (2, 0), None]:
    case(f"sample-shape-{shape!r}", "shape", lambda s=shape: ss.sample(SDE, good, s, sampler="ddim", steps=3))

SCORES = {"nan": nan_score, "wrong-shape": wrong_shape, "not-a-tensor": not_a_tensor, "not-callable": 3}
for sampler in ["euler_maruyama", "pc", "ddim", "dpmpp_2m", "unipc", "ancestral", "sde", "ode"]:
    for k, fn in SCORES.items():
        run = lambda s=sampler, f=fn: ss.sample(SDE, f, (2, 2), sampler=s, steps=4)  # noqa: E731
        case(f"sample-{sampler}-score-{k}", "score_fn", run)
for k, fn in SCORES.items():
    case(f"ll-score-{k}", "score_fn", lambda f=fn: ss.log_likelihood(SDE, f, x2))
    case(f"encode-score-{k}", "score_fn", lambda f=fn: ss.encode(SDE, f, x2))
    case(f"decode-score-{k}", "score_fn", lambda f=fn: ss.decode(SDE, f, x2))


def _no_grad_score(x, t):
    with torch.no_grad():
        return -x


case("ll-score-no-grad", "score_fn", lambda: ss.log_likelihood(SDE, _no_grad_score, x2))
case("ll-score-detached", "score_fn", lambda: ss.log_likelihood(SDE, lambda x, t: -x.detach(), x2))
case("ll-score-constant", "score_fn", lambda: ss.log_likelihood(SDE, lambda x, t: torch.zeros_like(x), x2))
for name in ("nope", 3, None):
    case(f"sample-sampler-{name!r}", "sampler", lambda n=name: ss.sample(SDE, good, (2, 2), sampler=n))
    case(f"ll-divergence-{name!r}", "divergence", lambda n=name: ss.log_likelihood(SDE, good, x2, divergence=n))
    case(f"ll-method-{name!r}", "method", lambda n=name: ss.log_likelihood(SDE, good, x2, method=n))
    case(f"scoremodel-prediction-{name!r}", "prediction", lambda n=name: ss.ScoreModel(good, SDE, prediction=n))
    case(f"scoremodel-time_labels-{name!r}", "time_labels", lambda n=name: ss.ScoreModel(good, SDE, time_labels=n))
    case(f"sample-sde-{name!r}", "sde", lambda n=name: ss.sample(n, good, (2, 2)))
    case(f"scoremodel-sde-{name!r}", "sde", lambda n=name: ss.ScoreModel(good, n))
case("sample-unknown-option", "option", lambda: ss.sample(SDE, good, (2, 2), sampler="ddim", steps=3, snr=0.1))
case("ve-1e308", "sigma_max", lambda: ss.VESDE(0.01, 1e308))
case("vp-1e6", "beta_max", lambda: ss.VPSDE(0.1, 1e6))
case("vp-eps-1e-50", "eps", lambda: ss.sample(SDE, good, (2, 2), sampler="dpmpp_2m", steps=3, eps=1e-50))
case("ve-float16-pc", "score_fn", lambda: ss.sample(ss.VESDE(0.01, 380), good, (2, 2), steps=5, dtype=torch.float16))
for k, betas in {"2d": torch.full((2, 5), 0.01), "short": [0.1], "zero": [0.0, 0.1], "one": [0.1, 1.0],
                 "nan": [0.1, math.nan], "empty": []}.items():  # fmt: skip
    case(f"from_betas-{k}", "betas", lambda b=betas: ss.VPSDE.from_betas(b))

SCALING = ss.DataScaling.centered(256)
levels = torch.randint(0, 256, (3, 2))
case("bpd-empty", "data", lambda: ss.bits_per_dim(SDE, good, torch.zeros(0, 2, dtype=torch.long), SCALING))
case("bpd-scaling-none", "scaling", lambda: ss.bits_per_dim(SDE, good, levels, None))
case("bpd-data-list", "data", lambda: ss.bits_per_dim(SDE, good, [[1, 2]], SCALING))
case("bpd-nan-continuous", "data", lambda: ss.bits_per_dim(SDE, good, x2 * math.nan, SCALING, dequantize=False))
case("bpd-rtol-0", "rtol", lambda: ss.bits_per_dim(SDE, good, levels, SCALING, rtol=0.0))
no_levels = torch.zeros(0, 2, dtype=torch.long)
case("dataset-bpd-empty", "data", lambda: ss.dataset_bits_per_dim(SDE, good, no_levels, SCALING))
case("dataset-bpd-batch-0", "batch_size", lambda: ss.dataset_bits_per_dim(SDE, good, levels, SCALING, batch_size=0))


@pytest.mark.parametrize("fn, name", CASES)
def test_bad_input(fn, name):
    check(fn, name)


def test_the_table_is_large_enough():
    assert len(CASES) >= 200


# ---- the command line -----------------------------------------------------------------------------------------------
TINY = [
    "data.dataset=mixture", "data.n_train=64", "data.n_test=8", "model.kind=mlp", "model.hidden=8", "model.depth=1",
    "model.emb_dim=8", "training.batch_size=8", "training.n_iters=3", "training.log_every=3", "training.ckpt_every=3",
    "training.progress=false", "training.warmup=1", "eval.num=8", "sampling.sampler=euler_maruyama", "sampling.steps=3",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    cfg = root / "tiny.yaml"
    save_config(load_config(None, TINY), cfg)
    assert cli.main(["train", "--config", str(cfg), "--workdir", str(root / "wd")]) == 0
    (root / "afile").write_text("x")
    (root / "self.yaml").write_text("base: self.yaml\n")
    (root / "a.yaml").write_text("base: b.yaml\n")
    (root / "b.yaml").write_text("base: a.yaml\n")
    cifar = root / "cifar"
    cifar.mkdir()

    class Exploit:
        def __reduce__(self):
            return (os.system, ("true",))

    (cifar / "data_batch_1").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": [0]}, protocol=2))
    (cifar / "test_batch").write_bytes(b"not a pickle at all")
    return root


CLI_CASES = {
    "likelihood-num--4": ["likelihood", "--workdir", "{wd}", "--num", "-4"],
    "likelihood-num-0": ["likelihood", "--workdir", "{wd}", "--num", "0"],
    "likelihood-probes-0": ["likelihood", "--workdir", "{wd}", "--probes", "0"],
    "likelihood-device-bogus": ["likelihood", "--workdir", "{wd}", "--device", "bogus"],
    "sample-num--4": ["sample", "--workdir", "{wd}", "--num", "-4", "--out", "{root}/s.npz"],
    "sample-num-0": ["sample", "--workdir", "{wd}", "--num", "0", "--out", "{root}/s.npz"],
    "sample-batch--2": ["sample", "--workdir", "{wd}", "--batch-size", "-2", "--out", "{root}/s.npz"],
    "sample-device-bogus": ["sample", "--workdir", "{wd}", "--device", "bogus", "--out", "{root}/s.npz"],
    "sample-device-cuda9": ["sample", "--workdir", "{wd}", "--device", "cuda:9", "--out", "{root}/s.npz"],
    "sample-out-in-file": ["sample", "--workdir", "{wd}", "--num", "2", "--out", "{root}/afile/s.png"],
    "sample-out-ext": ["sample", "--workdir", "{wd}", "--num", "2", "--out", "{root}/s.txt"],
    "sample-sampler": ["sample", "--workdir", "{wd}", "--num", "2", "--sampler", "nope", "--out", "{root}/s.npz"],
    "sample-no-workdir": ["sample", "--workdir", "{root}/missing", "--out", "{root}/s.npz"],
    "train-base-self": ["train", "--config", "{root}/self.yaml", "--workdir", "{root}/w1"],
    "train-base-cycle": ["train", "--config", "{root}/a.yaml", "--workdir", "{root}/w2"],
    "train-missing-config": ["train", "--config", "{root}/none.yaml", "--workdir", "{root}/w3"],
    "train-device-cuda": ["train", "--config", "{root}/tiny.yaml", "--workdir", "{root}/w4", "--set",
                          "training.device=cuda"],
    "train-device-bogus": ["train", "--config", "{root}/tiny.yaml", "--workdir", "{root}/w5", "--set",
                           "training.device=bogus"],
    "train-batch-1e10": ["train", "--config", "{root}/tiny.yaml", "--workdir", "{root}/w6", "--set",
                         "training.batch_size=10000000000"],
    "train-lr-inf": ["train", "--config", "{root}/tiny.yaml", "--workdir", "{root}/w7", "--set", "training.lr=.inf"],
    "train-lr-nan": ["train", "--config", "{root}/tiny.yaml", "--workdir", "{root}/w7", "--set", "training.lr=.nan"],
    "train-grad-clip-nan": ["train", "--config", "{root}/tiny.yaml", "--workdir", "{root}/w8", "--set",
                            "training.grad_clip=.nan"],
    "train-batch--2": ["train", "--config", "{root}/tiny.yaml", "--workdir", "{root}/w9", "--set",
                       "training.batch_size=-2"],
    "train-cifar-exploit": ["train", "--config", "{root}/tiny.yaml", "--workdir", "{root}/w10", "--set",
                            "data.dataset=cifar10", "data.root={root}/cifar", "model.kind=unet"],
    "train-resume-model-size": ["train", "--workdir", "{wd}", "--set", "model.hidden=16", "training.n_iters=6"],
    "train-resume-prediction": ["train", "--workdir", "{wd}", "--set", "model.prediction=x0", "training.n_iters=6"],
    "train-out-in-file": ["train", "--config", "{root}/tiny.yaml", "--workdir", "{root}/afile/w"],
}


@pytest.mark.parametrize("key", sorted(CLI_CASES))
def test_bad_command_line(trained, key, capsys):
    argv = [a.format(root=trained, wd=trained / "wd") for a in CLI_CASES[key]]
    capsys.readouterr()
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, (code, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("score-sde: error: "), err
    assert "Traceback" not in err
