"""Reference statistics files: the mean and covariance of a data set's features in one ``.npz``.

The format is the one users already hold for CIFAR-10 FID (pytorch-fid, torch-fidelity): arrays ``mu`` [D]
and ``sigma`` [D, D]. We add ``num_samples`` and ``feature_net`` (a string naming the feature space, e.g.
``"inception-v3-compat"`` or ``"fd-digits"``) so that a distance is never computed across feature spaces.
A file that holds raw features instead (``pool_3``, as the official score_sde statistics; or ``features``)
is read by fitting the statistics to them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from .frechet import feature_statistics


@dataclass
class ReferenceStatistics:
    """Feature mean ``mu`` [D] and covariance ``sigma`` [D, D] (float64 tensors) of a reference set."""

    mu: torch.Tensor
    sigma: torch.Tensor
    num_samples: int | None = None
    feature_net: str | None = None

    def __iter__(self):
        return iter((self.mu, self.sigma))

    def __repr__(self) -> str:
        return (
            f"ReferenceStatistics(dim={self.mu.shape[0]}, num_samples={self.num_samples}, "
            f"feature_net={self.feature_net!r})"
        )


def save_reference_statistics(
    path: str | os.PathLike,
    mu,
    sigma,
    num_samples: int | None = None,
    feature_net: str | None = None,
) -> str:
    """Write ``mu`` [D] and ``sigma`` [D, D] (and the optional metadata) to ``path`` (.npz); returns the path.

    The file is written to a temporary name and renamed, so a crash never leaves half a file.
    """
    mu = np.asarray(mu.detach().cpu() if torch.is_tensor(mu) else mu, dtype=np.float64)
    sigma = np.asarray(sigma.detach().cpu() if torch.is_tensor(sigma) else sigma, dtype=np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"mu must be [D] and sigma [D, D]; got shapes {mu.shape} and {sigma.shape}")
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"reference statistics are written as .npz; got path {path!r}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    extra = {}
    if num_samples is not None:
        extra["num_samples"] = np.int64(num_samples)
    if feature_net is not None:
        extra["feature_net"] = np.str_(feature_net)
    tmp = path[:-4] + ".tmp.npz"
    np.savez(tmp, mu=mu, sigma=sigma, **extra)
    os.replace(tmp, path)
    return path


def load_reference_statistics(path: str | os.PathLike, feature_net: str | None = None) -> ReferenceStatistics:
    """Read a statistics ``.npz`` (``mu``/``sigma``, or raw features under ``pool_3`` / ``features``).

    Args:
        feature_net: when given and the file names its feature space, the two must agree (ValueError).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no reference statistics file at {path!r}")
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        if {"mu", "sigma"} <= keys:
            mu, sigma = torch.from_numpy(z["mu"].astype(np.float64)), torch.from_numpy(z["sigma"].astype(np.float64))
            n = int(z["num_samples"]) if "num_samples" in keys else None
        else:
            key = next((k for k in ("pool_3", "features") if k in keys), None)
            if key is None:
                raise ValueError(
                    f"{path!r} holds neither 'mu' and 'sigma' nor raw 'pool_3'/'features'; keys {sorted(keys)}"
                )
            feats = z[key].reshape(z[key].shape[0], -1)
            mu, sigma = feature_statistics(feats)
            n = feats.shape[0]
        net = str(z["feature_net"]) if "feature_net" in keys else None
    if mu.ndim != 1 or tuple(sigma.shape) != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{path!r}: mu must be [D] and sigma [D, D]; got {tuple(mu.shape)}, {tuple(sigma.shape)}")
    if feature_net is not None and net is not None and net != feature_net:
        raise ValueError(f"{path!r} holds statistics of feature net {net!r}, not {feature_net!r}")
    return ReferenceStatistics(mu, sigma, n, net)


__all__ = ["ReferenceStatistics", "save_reference_statistics", "load_reference_statistics"]
