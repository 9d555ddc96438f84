"""Front-door fixes: registrable correctors, CFG argument checks, a deterministic ``edm`` default, a short
``DatasetBitsPerDim`` printout, the SPDX licence, and README numbers backed by result files."""

import re
from pathlib import Path

import pytest
import torch

import score_sde as ss
from score_sde import guidance as G
from score_sde.solvers import CORRECTORS, Stepper, register_corrector, sampler_option_names

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _mixture():
    return ss.GaussianMixture([0.3, 0.7], [[-2.0, 0.0], [2.0, 1.0]], [0.2, 0.5])


class Renoise(Stepper):
    """A corrector that takes no snr: x <- x + 0.05 z after one score call."""

    name, order, nfe_per_step, stochastic = "renoise", 0, 1, True

    def __init__(self, n_steps: int = 1):
        self.n_steps = n_steps

    def correct(self, ctx, x, t, t_next, i=None):
        ctx.score(x, ctx.time_at(i, t, x))
        return x + 0.05 * ctx.randn_like(x), x


def test_a_registered_corrector_without_snr():
    sde, gmm = ss.VPSDE(), _mixture()
    register_corrector("renoise", Renoise)
    try:
        res = ss.sample(sde, gmm.score_fn(sde), shape=(8, 2), sampler="pc", steps=5, corrector="renoise")
        assert res.nfe == 10 and torch.isfinite(res.x).all()
        with pytest.raises(TypeError, match=r"corrector 'renoise' takes no option\(s\) \['snr'\]"):
            ss.sample(sde, gmm.score_fn(sde), shape=(8, 2), sampler="pc", steps=5, corrector="renoise", snr=0.1)
        # the built-in Langevin still gets its documented default snr = 0.16
        g = [torch.Generator().manual_seed(0) for _ in range(2)]
        a = ss.sample(sde, gmm.score_fn(sde), shape=(8, 2), sampler="pc", steps=5, generator=g[0])
        b = ss.sample(sde, gmm.score_fn(sde), shape=(8, 2), sampler="pc", steps=5, snr=0.16, generator=g[1])
        assert torch.equal(a.x, b.x)
    finally:
        CORRECTORS.pop("renoise")
    with pytest.raises(TypeError, match="factory must be callable"):
        register_corrector("bad", 3)
    assert "corrector" in sampler_option_names("pc") and {"eta", "final"} <= set(sampler_option_names("ddim"))


def test_classifier_free_guidance_checks_its_arguments_at_construction():
    sde, gmm = ss.VPSDE(), _mixture()
    unconditional_score = gmm.score_fn(sde)  # f(x, t, *args): ignores any condition
    with pytest.raises(ValueError, match="looks unconditional"):
        G.ClassifierFreeGuidance(unconditional_score, 2.0)
    with pytest.raises(TypeError, match="two models, or the arguments swapped"):
        G.ClassifierFreeGuidance(unconditional_score, unconditional_score)
    with pytest.raises(TypeError, match="two models, or the arguments swapped"):
        G.ClassifierFreeGuidance(2.0, unconditional_score)
    # saying how to drop the condition makes an *args callable acceptable
    G.ClassifierFreeGuidance(unconditional_score, 2.0, null_label=2)


def test_edm_is_deterministic_unless_churn_is_asked_for():
    sde, gmm = ss.VPSDE(), _mixture()
    x_T = sde.prior_sampling((16, 2), generator=torch.Generator().manual_seed(0))

    def run(seed, **kw):
        g = torch.Generator().manual_seed(seed)
        return ss.sample(sde, gmm.score_fn(sde), x_T=x_T, sampler="edm", steps=8, generator=g, **kw).x

    heun = ss.sample(sde, gmm.score_fn(sde), x_T=x_T, sampler="heun", steps=8).x
    assert torch.equal(run(1), run(2)) and torch.equal(run(1), heun)
    churn = dict(S_churn=40.0, S_min=0.05, S_max=50.0, S_noise=1.003)
    assert not torch.allclose(run(1, **churn), run(2, **churn))


def test_dataset_bits_per_dim_prints_a_summary():
    r = ss.DatasetBitsPerDim(mean=2.5, stderr=0.01, num=10_000, nfe=50, per_sample=torch.rand(10_000))
    text = repr(r)
    assert len(text) < 200 and "mean=2.5000" in text and "(10000,)" in text


def test_license_is_an_spdx_string():
    text = (REPO / "pyproject.toml").read_text()  # (tomllib needs Python 3.11)
    assert re.search(r'^license = "Apache-2.0"$', text, re.M)  # not the deprecated {text = ...} table
    assert int(re.search(r'^requires = \["setuptools>=(\d+)"\]', text, re.M).group(1)) >= 77  # SPDX needs >= 77


def test_quadrature_scheme_says_when_to_use_it():
    assert re.search(r"When to use `scheme=\"quadrature\"`", README)
    assert "benchmarks/results/likelihood_schemes_digits.txt" in README


# ---------------------------------------------------------------------------------------------
# numbers in the README come with a result file and the command that made it


def test_every_result_file_named_in_the_docs_exists():
    docs = README + (REPO / "benchmarks" / "README.md").read_text()
    named = set(re.findall(r"benchmarks/results/([\w.\-]+\.\w+)", docs))
    assert named
    missing = sorted(n for n in named if not (REPO / "benchmarks" / "results" / n).is_file())
    assert not missing, missing


def test_benchmarks_readme_lists_every_benchmark_with_its_command_and_result():
    text = (REPO / "benchmarks" / "README.md").read_text()
    for script in sorted((REPO / "benchmarks").glob("*.py")):
        row = next((line for line in text.splitlines() if f"`benchmarks/{script.name}" in line), None)
        assert row is not None, f"benchmarks/README.md does not list {script.name}"
        assert "benchmarks/results/" in row, f"no result file named for {script.name}"


@pytest.mark.parametrize(
    "row_key, result",
    [
        ("digits, `benchmarks/digits_bpd.py`", "digits_bpd.txt"),
        ("throughput, `benchmarks/train_throughput.py`", "train_throughput.txt"),
    ],
)
def test_readme_measurements_appear_in_their_result_file(row_key, result):
    row = next(line for line in README.splitlines() if line.startswith(f"| {row_key}"))
    assert f"benchmarks/results/{result}" in row
    text = (REPO / "benchmarks" / "results" / result).read_text()
    numbers = re.findall(r"\d+\.\d{3}", row)  # the measured values (3 decimals) of the row
    assert numbers and all(n in text for n in numbers), [n for n in numbers if n not in text]


def test_readme_points_to_the_extension_api_and_explains_the_two_digits_numbers():
    section = README[README.index("## Extending score_sde") :]
    for name in ("Stepper", "StepOutput", "Context", "register_sampler", "register_corrector", "load_workdir"):
        assert f"`{name}`" in section or f"`score_sde.training.{name}`" in section, name
    assert (REPO / "docs" / "extending.md").is_file()
    why = README[README.index("Why the digits bits/dim differ") :][:1200]
    table2 = (REPO / "paper_figures" / "figures" / "table2.md").read_text()
    assert "2.842" in why and "2.33" in why and "| VP | 2.328" in table2  # Table 2 rounds 2.328
