"""Resumable, rank-independent sampling in shards: one file per shard, per-sample seeds.

Sample i (0 <= i < N) is drawn from its own generator seeded with ``sample_seed(seed, i)``, so it does not
depend on which process draws it, on how many processes there are, or on which other samples share its
batch (with a fixed-step sampler; an adaptive ODE solver shares its step size across a batch). Shard k holds
samples [k S, min((k + 1) S, N)); rank r of W draws the shards k = r, r + W, ... and writes each to
``shard_<k>.pt`` through a temporary file and a rename, so a killed run leaves only whole shards, and a
rerun skips every shard already on disk. A ``manifest.json`` records what the shards are samples of; a
rerun with different settings in the same folder is refused instead of mixing samples.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import torch

MANIFEST = "manifest.json"


def sample_seed(seed: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` of a run seeded ``seed`` (splitmix64 mixing of the pair)."""
    mask = 0xFFFFFFFFFFFFFFFF
    z = (int(seed) * 0x9E3779B97F4A7C15 + int(index) + 1) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return (z ^ (z >> 31)) & 0x7FFFFFFFFFFFFFFF


def shard_path(folder: str, k: int) -> str:
    return os.path.join(folder, f"shard_{k:05d}.pt")


def num_shards(n: int, shard_size: int) -> int:
    return (n + shard_size - 1) // shard_size


def check_manifest(folder: str, manifest: dict) -> None:
    """Write ``manifest`` to ``folder`` or check it equals the one there (ValueError naming the keys)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, MANIFEST)
    if os.path.isfile(path):
        with open(path) as f:
            old = json.load(f)
        diff = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
        if diff:
            changes = ", ".join(f"{k}: {old.get(k)!r} -> {manifest.get(k)!r}" for k in diff)
            raise ValueError(f"{folder!r} holds shards of another run ({changes}); use another output folder")
        return
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def draw_shards(
    folder: str,
    n: int,
    shard_size: int,
    draw: Callable[[list[int]], tuple[torch.Tensor, int]],
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
) -> dict:
    """Draw this rank's missing shards with ``draw(indices) -> (samples [len(indices), ...], nfe)``.

    Returns {"drawn": shards drawn now, "skipped": shards found on disk, "nfe": the largest NFE seen now}.
    """
    mine = list(range(rank, num_shards(n, shard_size), world_size))
    todo = [k for k in mine if not os.path.isfile(shard_path(folder, k))]
    it = todo
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(todo, desc=f"shards (rank {rank})", initial=len(mine) - len(todo), total=len(mine))
    nfe = 0
    for k in it:
        idx = list(range(k * shard_size, min((k + 1) * shard_size, n)))
        x, shard_nfe = draw(idx)
        nfe = max(nfe, int(shard_nfe))
        path = shard_path(folder, k)
        tmp = f"{path}.tmp{os.getpid()}"
        torch.save({"samples": x.detach().cpu(), "indices": torch.tensor(idx), "nfe": int(shard_nfe)}, tmp)
        os.replace(tmp, path)
    return {"drawn": len(todo), "skipped": len(mine) - len(todo), "nfe": nfe}


def load_shards(folder: str, n: int, shard_size: int) -> tuple[torch.Tensor, int]:
    """All N samples in index order, [N, ...], and the largest per-shard NFE; FileNotFoundError if one is missing."""
    xs, nfe = [], 0
    for k in range(num_shards(n, shard_size)):
        path = shard_path(folder, k)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"shard {k} of {folder!r} is missing ({path}); rerun to draw it")
        d = torch.load(path, map_location="cpu", weights_only=True)
        expect = torch.arange(k * shard_size, min((k + 1) * shard_size, n))
        if not torch.equal(d["indices"], expect):
            raise ValueError(f"{path} holds samples {d['indices'][:3].tolist()}..., not shard {k}")
        xs.append(d["samples"])
        nfe = max(nfe, int(d["nfe"]))
    return torch.cat(xs), nfe


__all__ = ["sample_seed", "draw_shards", "load_shards", "check_manifest", "num_shards", "shard_path", "MANIFEST"]
