"""Official score_sde (PyTorch) checkpoints as :class:`score_sde.ScoreModel` s.

An official checkpoint is a ``torch.save`` dict with

* ``model``: the state dict of a ``DataParallel``-wrapped network (every key starts with ``module.``),
* ``ema``: ``{"decay", "num_updates", "shadow_params"}``, the EMA weights as a list in the order of
  the network's ``parameters()`` that require grad (the Fourier frequencies ``W`` do not),
* ``optimizer`` and ``step``.

It does not say which network it holds: that comes from its config (``configs/official/...yaml``,
:mod:`score_sde.pretrained.official_config`). :func:`load_official` builds :class:`NCSNpp` or
:class:`DDPM` from the config, checks every key and shape (all mismatches in one error; nothing is
loaded partially), copies the EMA weights in, and wraps the net so that ``model(x, t)`` is the score
the official evaluation code computes (its ``get_score_fn(sde, model, train=False, continuous=...)``):

* VP, continuous: labels t * 999; score = -net / sigma(t).
* sub-VP (continuous or not): labels t * 999; score = -net / sigma(t).
* VP, discrete: labels t * (N - 1); score = -net / sqrt(1 - alpha_bar[floor(t (N - 1))]).
* VE, continuous: labels sigma_min (sigma_max / sigma_min)^t; score = net (it divides by sigma itself).
* VE, discrete: labels round((1 - t)(N - 1)), an index of the net's sigma table (largest first); score = net.

The discrete-VP alpha_bar table is the one the model was trained with: ``linspace(beta_min / N,
beta_max / N, N)`` accumulated in float32, as the official code does. sigma(t) is the SDE's own,
computed with ``expm1``; the official code's float32 ``sqrt(1 - exp(.))`` cancels for small t (1.2e-4
relative at t = 1e-3), so near t = eps our score is the closer one to the official code run in float64.
Files are read with
``torch.load(weights_only=True)``: a checkpoint holding anything but tensors and plain containers
is refused before any of it runs.
"""

from __future__ import annotations

import os
import pickle

import torch
from torch import nn

from ..data_scaling import DataScaling
from ..nets.ddpm import DDPM
from ..nets.ncsnpp import NCSNpp
from ..score import ScoreModel
from ..sde import VESDE, VPSDE, SubVPSDE
from ..sde.base import LinearSDE
from ..utils import as_time
from .official_config import load_official_config, network_kwargs, sampling_recipe


def build_official_sde(cfg: dict) -> LinearSDE:
    """The forward SDE of an official config (``training.sde`` with the model's schedule and N)."""
    m, kind = cfg["model"], cfg["training"]["sde"]
    if kind == "vesde":
        return VESDE(sigma_min=float(m["sigma_min"]), sigma_max=float(m["sigma_max"]), N=m["num_scales"])
    cls = VPSDE if kind == "vpsde" else SubVPSDE
    return cls(beta_min=float(m["beta_min"]), beta_max=float(m["beta_max"]), N=m["num_scales"])


def build_official_net(cfg: dict) -> nn.Module:
    """The (randomly initialised) network of an official config: :class:`NCSNpp` or :class:`DDPM`."""
    cls = NCSNpp if cfg["model"]["name"] == "ncsnpp" else DDPM
    return cls(**network_kwargs(cfg))


class OfficialScoreNet(nn.Module):
    """``net(x, t)`` -> the official evaluation score of an official network at times t [B] (table above).

    Wrap it with ``ScoreModel(..., prediction="score", time_labels="continuous")`` (as
    :func:`load_official` does); ``self.net`` is the bare network.
    """

    def __init__(self, net: nn.Module, sde: LinearSDE, continuous: bool):
        super().__init__()
        self.net, self.continuous = net, bool(continuous)
        self.kind = "vesde" if isinstance(sde, VESDE) else ("subvpsde" if isinstance(sde, SubVPSDE) else "vpsde")
        self.N, self.T = sde.N, float(sde.T)
        if self.kind == "vesde":
            self.sigma_min, self.sigma_max = sde.sigma_min, sde.sigma_max
        self._sde = sde
        if self.kind == "vpsde" and not self.continuous:
            betas = torch.linspace(sde.beta_0 / sde.N, sde.beta_1 / sde.N, sde.N, dtype=torch.float32)  # as trained
            self.register_buffer("sqrt_1m_alphas_cumprod", torch.sqrt(1.0 - torch.cumprod(1.0 - betas, 0)),
                                 persistent=False)  # fmt: skip

    def labels(self, t: torch.Tensor) -> torch.Tensor:
        """The labels the network was trained with at times t [B]."""
        if self.kind == "vesde":
            if self.continuous:
                return self.sigma_min * (self.sigma_max / self.sigma_min) ** t
            return torch.round((self.T - t) * (self.N - 1)).long()
        if self.continuous or self.kind == "subvpsde":
            return t * 999
        return t * (self.N - 1)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        t = as_time(t, x)
        out = self.net(x, self.labels(t))
        if self.kind == "vesde":
            return out
        if self.continuous or self.kind == "subvpsde":
            std = self._sde.sigma(t).to(x)
        else:
            std = self.sqrt_1m_alphas_cumprod.to(x)[(t * (self.N - 1)).long()]
        return -out / std.reshape(-1, *([1] * (x.ndim - 1)))


# ---------------------------------------------------------------------------------------------
# checkpoints


def read_official_checkpoint(checkpoint, map_location="cpu") -> dict:
    """The checkpoint dict of a path (``torch.load(weights_only=True)``) or of a dict given as is."""
    if isinstance(checkpoint, dict):
        return checkpoint
    path = os.fspath(checkpoint)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"official checkpoint not found: {path!r}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"refusing to load {path!r}: it holds objects other than tensors and plain containers, and it is "
            f"read with weights_only=True (nothing from the file was run). Details: {str(e).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"could not read official checkpoint {path!r}: {e}") from None
    if not isinstance(state, dict):
        raise ValueError(f"official checkpoint {path!r} must hold a dict; got {type(state).__name__}")
    return state


def _strip_module(sd: dict) -> dict:
    prefixed = [k.startswith("module.") for k in sd]
    if any(prefixed) and not all(prefixed):
        raise ValueError("official state dict mixes keys with and without the DataParallel 'module.' prefix")
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in sd.items()}


def _listing(label: str, items: list[str]) -> str:
    return f"{label} ({len(items)}): " + ", ".join(items)


def check_state_dict(net: nn.Module, sd: dict, what: str = "checkpoint") -> None:
    """Raise one ``ValueError`` listing every missing, unexpected and mis-shaped key of ``sd`` for ``net``."""
    ours = net.state_dict()
    missing = sorted(set(ours) - set(sd))
    unexpected = sorted(set(sd) - set(ours))
    shapes = sorted(
        f"{k} (checkpoint {tuple(sd[k].shape)}, network {tuple(ours[k].shape)})"
        for k in set(ours) & set(sd)
        if not torch.is_tensor(sd[k]) or tuple(sd[k].shape) != tuple(ours[k].shape)
    )
    if missing or unexpected or shapes:
        parts = [_listing(lbl, items) for lbl, items in (("missing", missing), ("unexpected", unexpected),
                                                          ("mis-shaped", shapes)) if items]  # fmt: skip
        raise ValueError(f"the {what} does not match the network of this config ({type(net).__name__}); "
                         + "; ".join(parts))  # fmt: skip


def load_ema(net: nn.Module, ema: dict) -> None:
    """Copy the official EMA ``shadow_params`` (a list in ``parameters()`` order) into ``net``, after
    checking their number and every shape."""
    if not isinstance(ema, dict) or "shadow_params" not in ema:
        raise ValueError("the checkpoint's 'ema' entry must be a dict with 'shadow_params'")
    shadow = list(ema["shadow_params"])
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    bad = [f"#{i} {n} (ema {tuple(s.shape) if torch.is_tensor(s) else type(s).__name__}, network {tuple(p.shape)})"
           for i, ((n, p), s) in enumerate(zip(named, shadow))
           if not torch.is_tensor(s) or tuple(s.shape) != tuple(p.shape)]  # fmt: skip
    if len(shadow) != len(named) or bad:
        count = f"{len(shadow)} EMA tensors for {len(named)} parameters" if len(shadow) != len(named) else ""
        raise ValueError("the checkpoint's EMA shadow_params do not match the network of this config: "
                         + "; ".join(s for s in (count, _listing("mis-shaped", bad) if bad else "") if s))  # fmt: skip
    with torch.no_grad():
        for (_, p), s in zip(named, shadow):
            p.copy_(s)


def load_official(checkpoint, config, ema: bool = True, device="cpu", dtype: torch.dtype = torch.float32):
    """An official score_sde checkpoint as a :class:`ScoreModel` (see the module docstring).

    Args:
        checkpoint: path of an official ``checkpoint_*.pth`` (or its dict, already loaded).
        config: its config, ``configs/official/<sde>/<name>.yaml`` (or the same content as a dict).
        ema: load the EMA weights (default, as the official evaluation does) or the raw ``model`` weights.
        device, dtype: where and in which precision the model runs.

    Returns:
        ``ScoreModel`` whose ``model(x, t)`` is the official score; with ``.sde`` (the forward SDE),
        ``.sampling`` (the config's sampling recipe as ``ss.sample`` keyword arguments: run
        ``ss.sample(model.sde, model, shape=..., **model.sampling)``), ``.data_scaling`` (data on
        [-1, 1] for centered configs, else [0, 1]), ``.data_shape`` ([C, H, W] of one sample),
        ``.official_config`` (the checked config dict)
        and ``.net`` (an :class:`OfficialScoreNet`; ``.net.net`` is the bare network).
    """
    cfg = load_official_config(config)
    state = read_official_checkpoint(checkpoint)
    if "model" not in state:
        raise ValueError(f"not an official score_sde checkpoint: no 'model' entry (keys: {sorted(state)[:10]})")
    net = build_official_net(cfg).to(dtype=dtype)
    sd = _strip_module(state["model"])
    check_state_dict(net, sd)
    net.load_state_dict(sd, strict=True)
    if ema:
        if "ema" not in state:
            raise ValueError("the checkpoint holds no 'ema' entry; load it with ema=False for the raw weights")
        load_ema(net, state["ema"])
    net = net.to(device=device).eval()
    sde = build_official_sde(cfg)
    model = ScoreModel(OfficialScoreNet(net, sde, cfg["training"]["continuous"]).to(device), sde,
                       prediction="score", time_labels="continuous")  # fmt: skip
    model.sampling = sampling_recipe(cfg)
    model.data_scaling = DataScaling.centered() if cfg["data"]["centered"] else DataScaling.unit()
    model.official_config = cfg
    d = cfg["data"]
    model.data_shape = (d["num_channels"], d["image_size"], d["image_size"])
    return model.eval()


__all__ = [
    "load_official",
    "build_official_net",
    "build_official_sde",
    "OfficialScoreNet",
    "read_official_checkpoint",
    "check_state_dict",
    "load_ema",
]
