"""Sample-quality evaluation: Fréchet distance, KID, precision/recall, Inception features, FD-digits/FD-MNIST.

Functions on any features [N, D]: :func:`feature_statistics`, :func:`frechet_distance`,
:func:`kernel_distance`, :func:`precision_recall`; reference statistics ``.npz`` files
(:func:`save_reference_statistics`, :func:`load_reference_statistics`). FID / KID / IS on images use
torch-fidelity's TF-Inception port (:mod:`.inception`); FD-digits / FD-MNIST use a classifier trained here
(:mod:`.feature_nets`). See ``docs/evaluation.md``.
"""

from .feature_nets import FEATURE_NETS, FeatureNet, load_feature_net, reference_features, train_feature_net
from .frechet import feature_statistics, frechet_distance, frechet_distance_features, sqrtm_psd, trace_sqrt_product
from .inception import (
    INCEPTION_WEIGHTS_FILE,
    INCEPTION_WEIGHTS_URL,
    find_inception_weights,
    inception_feature_extractor,
    inception_features,
    inception_score,
    to_uint8_rgb,
)
from .kernel import KernelDistance, kernel_distance
from .precision_recall import PrecisionRecall, precision_recall
from .reference import ReferenceStatistics, load_reference_statistics, save_reference_statistics
from .suite import feature_metrics

__all__ = [
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_features",
    "sqrtm_psd",
    "trace_sqrt_product",
    "kernel_distance",
    "KernelDistance",
    "precision_recall",
    "PrecisionRecall",
    "save_reference_statistics",
    "load_reference_statistics",
    "ReferenceStatistics",
    "INCEPTION_WEIGHTS_FILE",
    "INCEPTION_WEIGHTS_URL",
    "find_inception_weights",
    "inception_feature_extractor",
    "inception_features",
    "inception_score",
    "to_uint8_rgb",
    "FEATURE_NETS",
    "FeatureNet",
    "load_feature_net",
    "reference_features",
    "train_feature_net",
    "feature_metrics",
]
