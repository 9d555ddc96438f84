"""configs/README.md agrees with the YAML files: every row's SDE, network kind and sizes."""

import re
from pathlib import Path

import pytest

from score_sde.training import load_config

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "configs" / "README.md").read_text()
ROWS = [line for line in README.splitlines() if re.match(r"\| `[\w.]+\.yaml` \|", line)]
SDES = {"VP": "vpsde", "sub-VP": "subvpsde", "VE": "vesde", "rectified flow": "rectified_flow", "EDM": "edm"}
NETS = {"residual MLP": "mlp", "U-Net": "unet", "DDPM++": "ddpmpp", "NCSN++": "ncsnpp"}


def test_every_config_has_a_row():
    named = {re.search(r"`([\w.]+\.yaml)`", r).group(1) for r in ROWS}
    assert named == {p.name for p in (REPO / "configs").glob("*.yaml")}


@pytest.mark.parametrize("row", ROWS, ids=lambda r: re.search(r"`([\w.]+)\.yaml`", r).group(1))
def test_row_matches_the_yaml(row):
    cells = [c.strip() for c in row.strip("|").split("|")]
    name, sde_cell, model_cell = cells[0].strip("`"), cells[2], cells[3]
    cfg = load_config(REPO / "configs" / name)
    flow = re.fullmatch(r"rectified flow \(T ([\d.]+)\)", sde_cell)
    if flow:
        assert cfg.sde.kind == "rectified_flow" and cfg.sde.T == float(flow.group(1))
    else:
        kind, a, b = re.fullmatch(r"(sub-VP|VP|VE|EDM) \(([\d.]+), ([\d.]+)\)", sde_cell).groups()
        assert cfg.sde.kind == SDES[kind]
        sigmas = kind in ("VE", "EDM")
        pair = (cfg.sde.sigma_min, cfg.sde.sigma_max) if sigmas else (cfg.sde.beta_min, cfg.sde.beta_max)
        assert pair == (float(a), float(b))
    net = next(v for k, v in NETS.items() if model_cell.startswith(k))
    assert cfg.model.kind == net
    m = cfg.model
    if net == "mlp":
        hidden, depth = re.search(r"hidden (\d+), depth (\d+)", model_cell).groups()
        assert (m.hidden, m.depth) == (int(hidden), int(depth))
    else:
        ch = re.search(r"ch (\d+)", model_cell).group(1)
        mult = re.search(r"ch_mult \(([\d, ]+)\)", model_cell).group(1)
        blocks = re.search(r"(\d+) res blocks", model_cell).group(1)
        assert m.ch == int(ch) and list(m.ch_mult) == [int(v) for v in mult.split(",")]
        assert m.num_res_blocks == int(blocks)
    assert ("EDM preconditioning" in model_cell) == (m.prediction == "edm")
    assert ("Fourier" in model_cell) == (m.embedding == "fourier")
