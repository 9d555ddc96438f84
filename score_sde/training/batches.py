"""The training data stream: which examples and which random draws every shard of every step gets.

Exact resumption and rank independence rest on one rule: the data order and the loss's random draws are
functions of ``(seed, step, shard)`` only. The global batch of step k is positions [kB, (k+1)B) of a stream of
per-epoch permutations (epoch e's permutation drawn from a generator seeded by (seed, 7, e)), cut into
``n_shards = world_size * accum_steps`` contiguous shards of ``micro = B / n_shards`` examples; shard
j = rank * accum_steps + m (micro-batch m of a rank) draws its dequantization noise, flips, condition drops,
and then the loss's times and noise, from a generator seeded by (seed, k, j). So a run restarted at step k
sees the batches an uninterrupted run saw, and N ranks with accumulation a see the shards of one process with
accumulation N·a.
"""

from __future__ import annotations

import torch

from ..guidance import drop_condition
from .builders import _mix_seed
from .config import Config
from .distributed import DistContext
from .services import load_split


class BatchStream:
    """This rank's micro-batches of the training split of ``config`` (module docstring: the order rule).

    Args:
        config: the experiment (``data``: the split, dequantization, flips; ``training``: seed, batch size,
            accumulation, condition drop rate; ``model.num_classes``: the null label of a dropped condition).
        dist: the process's place in a torchrun job (its rank picks its shards).
        device, dtype: where the data live, and their float type.

    Attributes: ``train_set`` (the loaded split), ``data`` [N, *shape] on ``device``, ``levels`` (the integer
    levels [N, *shape] when uniform dequantization is on, else None), ``labels`` [N] (None for an
    unconditional model or unlabelled data), ``shape``, ``micro`` and ``n_shards``.
    """

    def __init__(self, config: Config, dist: DistContext, device: torch.device, dtype: torch.dtype):
        t, d = config.training, config.data
        self.cfg, self.dist, self.device, self.dtype = config, dist, device, dtype
        self.n_shards = dist.world_size * t.accum_steps
        if t.batch_size % self.n_shards:
            raise ValueError(
                f"config key 'training.batch_size' = {t.batch_size} does not split over "
                f"{dist.world_size} ranks x {t.accum_steps} accumulation steps"
            )
        self.micro = t.batch_size // self.n_shards
        self.train_set = load_split(config, "train", dtype=dtype)
        self.data = self.train_set.data.to(device, dtype)
        self.levels = None
        if d.uniform_dequantization:
            if self.train_set.quantized is None or self.train_set.scaling is None:
                raise ValueError(
                    f"config key 'data.uniform_dequantization' needs discrete data; {d.dataset!r} is continuous"
                )
            self.levels = self.train_set.quantized.to(device)
        self.labels = None
        if config.model.num_classes and self.train_set.labels is not None:
            self.labels = torch.as_tensor(self.train_set.labels).to(device)
        self.shape = tuple(self.data.shape[1:])
        self.is_image = len(self.shape) == 3
        self._perm_epoch, self._perm = -1, None

    def epoch_perm(self, epoch: int) -> torch.Tensor:
        """The permutation [N] of epoch ``epoch`` (the last one is kept: consecutive steps reuse it)."""
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(_mix_seed(self.cfg.training.seed, 7, epoch))
            self._perm = torch.randperm(self.data.shape[0], generator=g).to(self.device)
            self._perm_epoch = epoch
        return self._perm

    def batch_indices(self, step: int) -> torch.Tensor:
        """Indices [B] of the global batch of ``step``: positions [kB, (k+1)B) of the epoch stream."""
        n, B = self.data.shape[0], self.cfg.training.batch_size
        start = step * B
        out, pos = [], start
        while pos < start + B:
            epoch, off = divmod(pos, n)
            take = min(n - off, start + B - pos)
            out.append(self.epoch_perm(epoch)[off : off + take])
            pos += take
        return torch.cat(out)

    def shard_generator(self, step: int, shard: int) -> torch.Generator:
        """The generator of the draws (dequantization, flips, drops, the loss's times and noise) of one shard."""
        g = torch.Generator(device=self.device)
        return g.manual_seed(_mix_seed(self.cfg.training.seed, step, shard))

    def micro_batch(self, step: int, micro: int):
        """(x0 [micro, *shape], cond [micro] or None, generator) of this rank's ``micro``-th micro-batch of ``step``.

        Uniform dequantization: x = a (n + u) / K + b with u ~ U[0, 1)^D (the data scaling's a, b, K);
        random flips mirror an image left-right with probability 1/2; classifier-free guidance training
        replaces a label by the null label ``model.num_classes`` with probability ``training.cond_drop``.
        """
        shard = self.dist.rank * self.cfg.training.accum_steps + micro
        idx = self.batch_indices(step)[shard * self.micro : (shard + 1) * self.micro]
        g = self.shard_generator(step, shard)
        if self.levels is None:
            x0 = self.data[idx]
        else:
            sc = self.train_set.scaling
            u = torch.rand(idx.shape[0], *self.shape, generator=g, device=self.device, dtype=self.dtype)
            x0 = sc.to_model((self.levels[idx].to(self.dtype) + u) / sc.levels)
        if self.cfg.data.random_flip and self.is_image:
            flip = torch.rand(x0.shape[0], generator=g, device=self.device) < 0.5
            x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(-1), x0)
        cond = self.labels[idx] if self.labels is not None else None
        if cond is not None and self.cfg.training.cond_drop > 0:
            cond = drop_condition(cond, self.cfg.training.cond_drop, null_label=self.cfg.model.num_classes, generator=g)
        return x0, cond, g


__all__ = ["BatchStream"]
