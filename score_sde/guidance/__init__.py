"""Conditional and controllable generation: guidance as score transforms, control as step hooks.

Conditioning interface
----------------------
A conditional score is a callable ``score_fn(x, t, cond)`` with x [B, ...], t [B] and ``cond``
either a class-label tensor [B] (int64, labels in ``[0, num_classes)``), a context tensor
[B, ...] (e.g. the keys/values of cross-attention), or ``None`` (unconditional). The *null
condition* of a label model is the extra label ``num_classes`` (its own embedding row); the null
condition of a context model is the all-zero context. :func:`drop_condition` replaces a random
fraction p of the conditions by the null condition during training, so that one network learns
both s(x, t, c) and s(x, t, null) (classifier-free training, Ho & Salimans 2021).

Score transforms (usable with every sampler, fixed-step or adaptive, since they are just a new
``score_fn(x, t, cond)``):

- :class:`ClassifierFreeGuidance`: the guided noise estimate eps^ = eps_u + s (eps_c - eps_u). Because
  score = -eps / sigma(t) is linear in eps with a coefficient common to both terms, the same
  combination holds in score form, s^ = s_u + s (s_c - s_u); optionally applied only for t in an
  interval (outside it the conditional score, s = 1, is used).
- :class:`ClassifierGuidance`: s^(x, t) = s(x, t) + w grad_x log p_t(y | x) with a noise-conditional
  classifier p_t(y | x) (Song et al. 2021, Sec. 5, eq. 14; Dhariwal & Nichol 2021). With w = 1 and
  the exact classifier this is, by Bayes' rule, exactly grad_x log p_t(x | y).

Step hooks (fixed-grid samplers: every predictor, PC, the fixed-step probability-flow ODE and the
fast solvers; they wrap any :class:`~score_sde.solvers.base.Stepper`, they do not fork it):

- :class:`ImputationStepper` with an :class:`Observation`: after every step to time t_next the
  known entries are replaced by forward-noised observations alpha(t_next) y + sigma(t_next) z,
  and the step's noise-free mean by alpha(t_next) y (Song et al. 2021, App. I.2). Inpainting is
  imputation with an image mask; colorization (App. I.3) is imputation after the orthogonal
  colour transform :data:`COLOR_DECOUPLE` that maps RGB to (gray, two colour channels).

The adaptive ``ode`` / ``sde`` back-ends take score transforms (guidance) but not step hooks:
they choose their own steps, so there is no step to hook; :func:`impute` says so and names the
fixed-step alternatives (``probability_flow``, ``pc``, ``ddim``, ...).

Analytic oracles (ground truth for the tests): :func:`mixture_classifier` (the exact p_t(y | x) of
a Gaussian mixture whose components are the classes), :class:`MixtureClassScore` (the exact
class-conditional and unconditional scores), :func:`mixture_conditional` (the exact conditional
of a Gaussian mixture given some coordinates: again a Gaussian mixture).

Noisy classifiers (for classifier guidance) are trained under the same noise process by
:func:`~score_sde.training.classifier.classifier_loss` / :func:`~score_sde.training.classifier.train_noisy_classifier`;
:func:`~score_sde.training.classifier.accuracy_vs_noise` gives the accuracy-against-noise-level curve (Song et al.
2021, Fig. 13's companion measurement). They live in :mod:`score_sde.training.classifier` and stay importable from here.

Modules: :mod:`.conditioning` (the conditioning interface), :mod:`.transforms` (score transforms),
:mod:`.hooks` (step hooks), :mod:`.oracles` (analytic oracles).
"""


from .conditioning import check_labels, conditioning_of, drop_condition, null_condition, require_conditional
from .hooks import COLOR_DECOUPLE, ImputationStepper, Observation, colorize, couple_colors, decouple_colors, impute
from .oracles import MixtureClassScore, mixture_classifier, mixture_conditional, mixture_posterior, transform_mixture
from .transforms import ClassifierFreeGuidance, ClassifierGuidance

_TRAINING = ("classifier_loss", "train_noisy_classifier", "accuracy_vs_noise")


def __getattr__(name: str):
    """The classifier-training names, which live in :mod:`score_sde.training.classifier` (above this layer),
    stay reachable as ``score_sde.guidance.<name>``; imported on first use."""
    if name in _TRAINING:
        from ..training import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "conditioning_of",
    "require_conditional",
    "check_labels",
    "null_condition",
    "drop_condition",
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "mixture_classifier",
    "MixtureClassScore",
    "mixture_conditional",
    "mixture_posterior",
    "transform_mixture",
    "COLOR_DECOUPLE",
    "decouple_colors",
    "couple_colors",
    "Observation",
    "ImputationStepper",
    "impute",
    "colorize",
    "classifier_loss",
    "train_noisy_classifier",
    "accuracy_vs_noise",
]
