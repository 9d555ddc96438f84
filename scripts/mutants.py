"""Plant one-line bugs (mutants) in a scratch copy of the repository and check that the tests notice.

Each mutant names a file, an exact piece of its text (which must occur exactly once), the text that
replaces it, and the tests that should fail. The repository is copied once to a temporary folder
(the real tree is never modified); for each mutant the file is changed there, the named tests run
there (``pytest -x -q``, one torch thread), and the file is put back. A mutant "survives" when its
tests still pass. The baseline (the unmutated copy) runs the union of all named tests first, so a
kill means something.

    python scripts/mutants.py                       # every mutant, its own tests
    python scripts/mutants.py --only pf_drift       # mutants whose name contains a word
    python scripts/mutants.py --suite               # the default suite (pytest -m "not slow") per mutant
    python scripts/mutants.py --list

Writes ``benchmarks/results/mutants.txt`` (or ``--out``) and exits 1 when a mutant survives.
Add a mutant for every claim a one-line bug could break: the list is the record of what the tests hold.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "runs", "out", "*.egg-info"
)


@dataclass
class Mutant:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    why: str = ""


T_MOMENTS = "tests/test_sampler_moments.py"


def noise(name, file, old, new, key, corrector=None):
    """A stochastic sampler's noise scaled by 0.95: the moments test of that sampler must fail (a corrector's:
    the moments test of the corrector alone)."""
    if corrector:
        test = f"{T_MOMENTS}::test_corrector_alone_keeps_the_mean_and_covariance[{corrector}]"
    else:
        test = f"{T_MOMENTS}::test_stochastic_sampler_mean_and_covariance[{key}]"
    return Mutant(f"noise_x0.95_{name}", file, old, new, (test,), f"{name}: noise x 0.95")


P, C, SI = (
    "score_sde/solvers/predictors.py",
    "score_sde/solvers/correctors.py",
    "score_sde/solvers/sdeint.py",
)
COEF = "score_sde/solvers/coefficients.py"
DEN = "score_sde/solvers/denoiser.py"
DDIM_F, MS, SDPM, EDM = (
    "score_sde/solvers/ddim.py",
    "score_sde/solvers/multistep.py",
    "score_sde/solvers/sde_dpm.py",
    "score_sde/solvers/edm.py",
)

MUTANTS: list[Mutant] = [
    # --- the six bugs of issue 17 ---------------------------------------------------------
    Mutant("scipy_norm_ignored", "score_sde/solvers/scipy_ode.py", "    if norm is None:\n        return base",
           "    if True:\n        return base", ("tests/test_likelihood_core.py",),
           "scipy's RK45 ignores the error norm it is given (the likelihood's split norm)"),
    Mutant("watch_first_of_batch", "score_sde/utils.py", "                if self._first is None or i < self._first:\n"
           "                    self._first, self._first_t = i, t\n                return",
           "                i, _, t = held[0]\n"
           "                self._first, self._first_t = i, t\n                return",
           ("tests/test_finite_watch.py",), "the NaN guard names the first held output, not the first non-finite one"),
    Mutant("kept_tables_ignore_dtype", "score_sde/solvers/problem.py", '("tvecs", self._grid_key, x.dtype,',
           '("tvecs", self._grid_key,', ("tests/test_step_constants.py",),
           "kept [B] time vectors handed to a run of another dtype"),
    Mutant("pf_drift_0.52", "score_sde/sde/base.py", "(0.5 if probability_flow else 1.0)",
           "(0.52 if probability_flow else 1.0)", ("tests/test_samplers.py", "tests/test_likelihood.py"),
           "probability-flow drift 1/2 g^2 -> 0.52 g^2"),
    Mutant("no_rng_restore", "score_sde/training/trainer.py", '            set_rng_state(state["rng"])',
           "            pass", ("tests/test_trainer.py", "tests/test_checkpoint.py"),
           "resume without restoring the RNG states"),
    Mutant("restart_no_forward_noise", EDM, "xt = xt + math.sqrt(s_hi**2 - s_lo**2) * problem.randn_like(xt)",
           "xt = xt", (T_MOMENTS, "tests/test_fast_samplers.py"), "Restart without its forward noise"),
    Mutant("likelihood_delta_out_of_norm", "score_sde/likelihood/augmented.py",
           "torch.linalg.vector_norm(r[n:]) / math.sqrt(r.numel() - n)", "0 * torch.linalg.vector_norm(r[n:])",
           ("tests/test_likelihood.py",), "Delta left out of the likelihood ODE's error norm"),
    noise("reverse_diffusion", P, "noise_std = c.sqrt_G2[k]", "noise_std = 0.95 * c.sqrt_G2[k]",
          "reverse_diffusion"),
    Mutant("langevin_step_x1.3", C, "step = scale * (_norm(z, self.per_sample)",
           "step = 1.3 * scale * (_norm(z, self.per_sample)",
           ("tests/test_sampler_steps.py", "tests/test_samplers.py"), "Langevin corrector step x 1.3"),
    # --- noise x 0.95 in every other stochastic sampler ----------------------------------------
    noise("ancestral", P, "mean + std * problem.randn_like(x)", "mean + 0.95 * std * problem.randn_like(x)",
          "ancestral"),
    noise("euler_maruyama", P, "mean + diffusion * problem.randn_like(x)",
          "mean + 0.95 * diffusion * problem.randn_like(x)", "euler_maruyama"),
    noise("langevin", C, "x = mean + bcast(torch.sqrt(2 * step), x) * z",
          "x = mean + 0.95 * bcast(torch.sqrt(2 * step), x) * z", "pc", "langevin"),
    noise("annealed_langevin", C, "x = mean + noise * z", "x = mean + 0.95 * noise * z", "pc/annealed_langevin",
          "annealed_langevin"),
    noise("sde_torchsde", SI, "return self.fwd.g2(self._t(s).to(device=y.device)).sqrt()",
          "return 0.95 * self.fwd.g2(self._t(s).to(device=y.device)).sqrt()", "sde"),
    noise("ddim_eta", DDIM_F, "xn = mean + (alpha[i + 1] * c) * problem.randn_like(x)",
          "xn = mean + 0.95 * (alpha[i + 1] * c) * problem.randn_like(x)", "ddim"),
    noise("dpmpp_2m_sde", SDPM, "return self.out(mean + std * problem.randn_like(x), D, mean=mean), state",
          "return self.out(mean + 0.95 * std * problem.randn_like(x), D, mean=mean), state", "dpmpp_2m_sde"),
    noise("edm_churn", EDM, "xt = xt + math.sqrt(s_hat**2 - s_i**2) * self.S_noise * problem.randn_like(xt)",
          "xt = xt + 0.95 * math.sqrt(s_hat**2 - s_i**2) * self.S_noise * problem.randn_like(xt)", "edm"),
    noise("restart", EDM, "xt = xt + math.sqrt(s_hi**2 - s_lo**2) * problem.randn_like(xt)",
          "xt = xt + 0.95 * math.sqrt(s_hi**2 - s_lo**2) * problem.randn_like(xt)", "restart"),
    # --- further bugs of the same kind ---------------------------------------------------------
    Mutant("pf_predictor_0.52", P, "return 2.0 - c.a[k], 0.5 * c.G2[k]",
           "return 2.0 - c.a[k], 0.52 * c.G2[k]", ("tests/test_samplers.py", "tests/test_orders.py"),
           "fixed-step probability flow with 0.52 G^2"),
    Mutant("transition_G2", COEF, "G2 = sde.sigma(t) ** 2 - a * a * sde.sigma(t_next) ** 2",
           "G2 = sde.sigma(t) ** 2 - a * sde.sigma(t_next) ** 2", ("tests/test_ddpm_equivalence.py",
           "tests/test_samplers.py"),
           "forward transition variance with a instead of a^2"),
    Mutant("ancestral_ve_variance", P, "std = c.sigma_next[k] * c.sqrt_G2[k] / c.sigma[k]", "std = c.sqrt_G2[k]",
           ("tests/test_sampler_steps.py", "tests/test_samplers_mixture_ve.py"),
           "SMLD ancestral variance without the posterior factor"),
    Mutant("ddim_eta_coefficient", DDIM_F, "keep = math.exp(-h) * math.sqrt(1.0 - self.eta**2 * one_m)",
           "keep = math.exp(-h) * math.sqrt(1.0 - self.eta * one_m)", ("tests/test_sampler_steps.py",
           "tests/test_fast_samplers.py"),
           "DDIM: eta instead of eta^2 in the kept part"),
    Mutant("heun_correction_dropped", EDM, "return HeunStep(xt + (s_to - s_from) * 0.5 * (d + d2), D)",
           "return HeunStep(xt + (s_to - s_from) * d, D)", ("tests/test_fast_samplers.py",),
           "Heun without its corrector"),
    Mutant("dpmpp_2m_history_order", MS, "hist.insert(0, (lam[i], D))", "hist.append((lam[i], D))",
           ("tests/test_fast_samplers.py",), "multistep history kept oldest first"),
    Mutant("dpmpp_2m_sde_ratio", SDPM, "r = (lam[i] - old[0]) / h", "r = 1.0",
           ("tests/test_sampler_steps.py", "tests/test_fast_samplers.py"), "SDE-DPM-Solver++(2M) step ratio ignored"),
    Mutant("ve_g2_exponent", "score_sde/sde/ve.py", "return self.sigma(t) ** 2 * (2 * self._log_ratio)",
           "return self.sigma(t) ** 2 * (1.9 * self._log_ratio)", ("tests/test_sde.py",), "VE g^2 off d sigma^2/dt"),
    Mutant("ema_decay_swapped", "score_sde/training/ema.py",
           "torch._foreach_lerp_(self.shadow, self._views, 1.0 - decay)",
           "torch._foreach_lerp_(self.shadow, self._views, decay)", ("tests/test_trainer.py",
           "tests/test_checkpoint.py",
           "tests/test_losses.py"), "EMA moves by decay instead of 1 - decay"),
    Mutant("hutchinson_probe_scale", "score_sde/likelihood/divergence.py",
           "return est / k if k > 1 else est",
           "return est / max(k - 1, 1)", ("tests/test_likelihood.py",),
           "Hutchinson average over k - 1 probes"),
    Mutant("cfg_sign", "score_sde/guidance/transforms.py", "guided = s_u + self.scale * (s_c - s_u)",
           "guided = s_u + self.scale * (s_u - s_c)", ("tests/test_guidance.py",), "classifier-free guidance sign"),
    Mutant("tweedie_sigma", DEN, "self._x0 = (x + sig * sig * out) / a", "self._x0 = (x + sig * out) / a",
           ("tests/test_fast_samplers.py",), "denoiser with sigma instead of sigma^2"),
    Mutant("native_eps_to_x0", DEN, "self._x0 = (x - sig * out) / a", "self._x0 = (x - out) / a",
           ("tests/test_denoiser_view.py",), "an eps network's x0 view without sigma"),
    Mutant("native_noise_view", DEN, "return (xt - self.x0) / sigma_tilde", "return (xt - self.x0)",
           ("tests/test_denoiser_view.py",), "DPM-Solver's noise view of a denoiser without 1 / sigma~"),
    Mutant("native_path_off", DEN, "return raw if same_schedule(model_sde, sde) else None", "return None",
           ("tests/test_denoiser_view.py",), "the samplers convert a ScoreModel's score instead of its prediction"),
    Mutant("native_unguarded", "score_sde/utils.py", "return self._keep(out, x, t), kind", "return out, kind",
           ("tests/test_denoiser_view.py",), "native predictions bypass the sampler's NaN guard"),
    Mutant("bpd_offset", "score_sde/data_scaling.py",
           "return -logp / (dim * math.log(2)) - math.log2(self.scale) + math.log2(self.levels)",
           "return -logp / (dim * math.log(2)) + math.log2(self.scale) + math.log2(self.levels)",
           ("tests/test_likelihood.py",), "bits/dim with + log2 a"),
    # --- flow matching (issue 13) -------------------------------------------------------------
    Mutant("velocity_det_sign", "score_sde/score.py", "det = a * ds - s * da", "det = a * ds + s * da",
           ("tests/test_velocity.py",), "velocity -> eps/x0 with the wrong determinant"),
    Mutant("flow_matching_weight", "score_sde/training/weighting.py", "return sde.g2(t) ** 2 / 4",
           "return sde.g2(t) ** 2 / 2", ("tests/test_flow_matching.py",), "flow-matching weight g^4/2"),
    Mutant("straightness_sign", "score_sde/metrics.py", "sq = sum(((d + v) ** 2)", "sq = sum(((d - v) ** 2)",
           ("tests/test_straightness.py",), "straightness against the reversed velocity"),
    # --- distillation (score_sde/training/distill) ---------------------------------------------
    Mutant("cm_c_skip_edm", "score_sde/training/distill/boundary.py", "c_skip = sd2 / (d * d + sd2)",
           "c_skip = sd2 / (st * st + sd2)", ("tests/test_distill_sampler.py",),
           "consistency c_skip without the sigma_min shift (boundary condition lost)"),
    Mutant("pd_target_denominator", "score_sde/training/distill/progressive.py",
           "return (x_end - r * x_t) / (a_e - r * a_t)", "return (x_end - r * x_t) / a_e",
           ("tests/test_distill_methods.py",), "progressive-distillation target without the r alpha_t term"),
    Mutant("reflow_weight_no_alpha", "score_sde/training/distill/reflow.py",
           "return (sde.alpha(t.to(torch.float64)) * dlam) ** 2", "return dlam**2",
           ("tests/test_distill_methods.py",), "flow-matching weight without alpha"),
    Mutant("cm_sampler_no_renoise", "score_sde/solvers/consistency.py",
           "out.x = a_next * (x0 + math.sqrt(var) * problem.randn_like(x))", "out.x = a_next * x0",
           ("tests/test_distill_sampler.py",), "multistep consistency sampling without noise between steps"),
    Mutant("fitted_grid_any_sde", "score_sde/gridfit/object.py", "if not _same_sde(here, self.sde):", "if False:",
           ("tests/test_gridfit.py",), "a fitted grid accepted on another SDE"),
    Mutant("bound_no_halving", "score_sde/gridfit/bound.py", "coarse, fine = self._run(times), self._run(halve(",
           "coarse, fine = self._run(times), self._run((", ("tests/test_gridfit.py",),
           "step-doubling bound compares the grid with itself"),
    Mutant("lean_rk_overwrites_dense_output", "score_sde/solvers/lean_rk.py",
           "return bufs[1] if self._lean_kept is bufs[0][0] else bufs[0]", "return bufs[0]",
           ("tests/test_ode_lean.py",), "the lean step overwrites the last accepted step's stages (f0, dense output)"),
    Mutant("lean_rk_stage_time", "score_sde/solvers/lean_rk.py", "else (times[i], Perturb.NONE)",
           "else (t0, Perturb.NONE)", ("tests/test_ode_lean.py",), "every inner stage evaluated at the step's start"),
    Mutant("lean_rk_error_without_last_stage", "score_sde/solvers/lean_rk.py",
           "err = torch.mv(K.t(), dt * b_err)", "err = torch.mv(firsts[-2], dt * b_err[:-1])",
           ("tests/test_ode_lean.py",), "the error estimate without the first-same-as-last stage"),
]


def run_tests(root: str, tests, timeout: float) -> tuple[int, float, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    env["PYTHONPATH"] = root
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    t0 = time.time()
    try:
        r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
        rc, out = r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired:
        rc, out = -1, "timeout"
    failed = [ln for ln in out.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    return rc, time.time() - t0, failed[0] if failed else out.strip().splitlines()[-1] if out.strip() else ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", help="run mutants whose name contains one of these words")
    ap.add_argument("--suite", action="store_true", help="run the default suite for every mutant")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "mutants.txt"))
    args = ap.parse_args(argv)
    mutants = [m for m in MUTANTS if not args.only or any(w in m.name for w in args.only)]
    if args.list:
        for m in mutants:
            print(f"{m.name:32s} {m.file}  tests: {' '.join(m.tests)}")
        return 0
    lines = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the scratch copy is removed

    def say(s):
        print(s, flush=True)
        lines.append(s)

    with tempfile.TemporaryDirectory(prefix="score_sde_mutants_") as tmp:
        root = os.path.join(tmp, "repo")
        shutil.copytree(ROOT, root, ignore=IGNORE)
        for m in mutants:  # every mutant's text must be in the code as it is now
            text = open(os.path.join(root, m.file)).read()
            if text.count(m.old) != 1:
                raise SystemExit(f"mutant {m.name}: the text to replace occurs {text.count(m.old)} times in {m.file}")
        suite = ("-m", "not slow", "tests")
        if not args.no_baseline:
            tests = suite if args.suite else tuple(dict.fromkeys(t.split("::")[0] for m in mutants for t in m.tests))
            rc, dt, msg = run_tests(root, tests, args.timeout)
            say(f"baseline (no mutant): {'passes' if rc == 0 else 'FAILS: ' + msg} ({dt:.0f} s)")
            if rc != 0:
                return 2
        survivors = []
        for m in mutants:
            path = os.path.join(root, m.file)
            orig = open(path).read()
            open(path, "w").write(orig.replace(m.old, m.new))
            try:
                rc, dt, msg = run_tests(root, suite if args.suite else m.tests, args.timeout)
            finally:
                open(path, "w").write(orig)
            status = "killed" if rc not in (0, 5) else "SURVIVED"
            if status == "SURVIVED":
                survivors.append(m.name)
            say(f"{status:8s} {m.name:30s} {dt:6.0f} s  {m.why}; {msg}")
        say(f"{len(mutants) - len(survivors)} of {len(mutants)} mutants killed; survivors: {survivors or 'none'}")
    if args.out:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        header = f"# python scripts/mutants.py {' '.join(argv if argv is not None else sys.argv[1:])}\n"
        with open(args.out, "w") as f:
            f.write(header + "\n".join(lines) + "\n")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
