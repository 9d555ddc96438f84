r"""Exact likelihoods through the probability-flow ODE (Song et al. 2021, Sec. 4.3 and App. D.2).

The probability-flow ODE of a linear SDE,

    dx/dt = f~(x, t) = f(t) x - 1/2 g(t)^2 s(x, t),        s ~ grad_x log p_t,          (13)

is a continuous normalizing flow, so the instantaneous change of variables (Chen et al. 2018) gives

    log p_eps(x(eps)) = log p_T(x(T)) + \int_eps^T div f~(x(t), t) dt,                  (D.2)

    div f~(x, t) = D f(t) - 1/2 g(t)^2 div s(x, t)          (D = number of data entries).

The drift's share ``D f(t)`` is analytic for our linear SDEs; only ``div s`` goes through autograd,
either exactly (D vector-Jacobian products, vectorised over chunks of dimensions) or with the
Skilling–Hutchinson estimator ``div s ~ v^T (ds/dx) v`` with ``E[v v^T] = I`` (Rademacher or Gaussian
``v``, drawn once per trajectory and held fixed along it). The augmented state ``(x, Delta)`` is
integrated forward from ``eps`` to ``T`` by an adaptive Dormand–Prince 5(4) solver (torchdiffeq's dopri5 by
default; scipy's RK45, the official code's integrator, with ``method="scipy_rk45"`` or ``"auto"``), and

    logp = prior_logp(x(T)) + Delta(T)        (nats per sample, shape [B]).

With an exact score and the exact divergence this is the exact ``log p_eps(x)`` up to the ODE's
tolerance and the prior mismatch ``log p_T - log pi`` (about 2e-5 nats/dim for VP with beta_max = 20).

Defaults, chosen by measurement (benchmarks/likelihood_vs_official.py, README "Likelihood"):

- one score evaluation per right-hand-side call serves both the drift and the divergence (the
  official code calls the network twice: a no-grad forward for the drift, then a second forward
  and a backward for the divergence);
- the ODE state is one flat float64 tensor ``[x.flatten(), Delta]`` whatever the data dtype
  (``state_dtype``); the score still sees x in the data's dtype. The divergence of the PF drift,
  ``D f(t) - 1/2 g^2 div s``, is a difference of two terms of size ~D beta(t), so a float32 state
  carries ~1e-6 nats/dim of round-off in Delta whatever the tolerance, and its noisy error estimates
  cost extra steps;
- the error norm is the larger of the RMS error ratios of the x part and of the Delta part
  (``options={"norm": "rms"}``: the RMS over the whole state, as the official code);
- the solve is a problem of the integrator core (:class:`~score_sde.likelihood.augmented.AugmentedProblem`,
  run by :func:`score_sde.solvers.driver.run`). scipy's RK45 (the error estimate of Dormand and Prince's
  pair) took fewer steps than torchdiffeq's dopri5 (Shampine's estimate) on the MLP score of
  benchmarks/likelihood_overhead.py, and more on a rectified-flow digits network (100 training steps), so dopri5 stays
  the default;
- Dormand–Prince in the time variable t. Integrating in the log-SNR lambda, in -ln alpha or in sqrt(t), with
  or without x~ = x / alpha (the log-determinant then shifts by D ln alpha exactly), gave the same
  error-vs-NFE curve on the benchmark mixtures, and dopri8 / bosh3 needed more NFE at the official
  loop's accuracy (~1e-4 nats/dim), so none of these is the default.

The adaptive solver shares one step size across the batch, so NFE (and the result, within
tolerance) depend on the other samples in the batch; ``per_sample=True`` solves each sample on its
own. No ``torch.no_grad`` is hidden here: when gradients are enabled and ``x`` or the score's
parameters require them, the divergence is built with ``create_graph=True`` so that ``logp`` can be
differentiated (discretise-then-optimise through the solver's steps).

Bits per dimension go through an explicit :class:`~score_sde.data_scaling.DataScaling` (see there
for eq. (1)): ``bpd = -log p(x) / (D ln 2) - log2 a + log2 K``.
"""

from ..data_scaling import DataScaling
from .api import log_likelihood

# the option names and defaults stay reachable as score_sde.likelihood.<NAME>
from .base import DEFAULT_EPS, DIVERGENCES, NOISES, SCHEMES, LikelihoodResult  # noqa: F401
from .bits import DatasetBitsPerDim, bits_per_dim, dataset_bits_per_dim, summarize_bits_per_dim
from .flow import decode, encode
from .options import DivergenceOptions, ODESolveOptions
from .path_quadrature import QUAD_PATH_TOL  # noqa: F401

__all__ = [
    "LikelihoodResult",
    "log_likelihood",
    "ODESolveOptions",
    "DivergenceOptions",
    "encode",
    "decode",
    "bits_per_dim",
    "dataset_bits_per_dim",
    "DatasetBitsPerDim",
    "summarize_bits_per_dim",
    "DataScaling",
]
