"""The method tables sit at the bottom of the solvers package: importing them registers nothing and
imports no method module; the built-ins are registered once, by ``score_sde.solvers.api``."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import score_sde as ss
from score_sde.solvers import CORRECTORS, PREDICTORS, SAMPLERS, register_corrector, register_sampler

SOLVERS = Path(ss.__file__).parent / "solvers"


def test_importing_the_registry_imports_no_method_module():
    # the parent packages are stood in by bare namespace modules so that their __init__ (which
    # imports the api, hence every method) does not run: what is left is the registry's own imports
    code = f"""
import importlib, sys, types
root = {str(SOLVERS.parent.parent)!r}
for name, path in (("score_sde", root + "/score_sde"), ("score_sde.solvers", root + "/score_sde/solvers")):
    m = types.ModuleType(name)
    m.__path__ = [path]
    sys.modules[name] = m
reg = importlib.import_module("score_sde.solvers.registry")
assert reg.__file__.startswith(root), reg.__file__
loaded = sorted(m for m in sys.modules if m.startswith("score_sde.") and m != "score_sde.solvers.registry")
print(loaded, len(reg.SAMPLERS), len(reg.CORRECTORS), len(reg.PREDICTORS))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["['score_sde.solvers']", "0", "0", "0"], out


def test_no_method_module_registers_on_import():
    """Only api.py calls the register functions (and only inside one function); a method module that
    registered itself on import would make the tables depend on what was imported first."""
    for path in sorted(SOLVERS.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module-level statements only
            for sub in ast.walk(node):
                if isinstance(sub, ast.Call) and getattr(sub.func, "id", None) in (
                    "register_sampler",
                    "register_corrector",
                    "reg",
                ):
                    assert path.name == "api.py" and isinstance(node, ast.FunctionDef), (path.name, node.lineno)
    assert not (SOLVERS / "backends.py").exists()


def test_builtins_are_registered_and_public_names_work():
    names = ss.available_samplers()
    assert {"pc", "ode", "sde", "ddim", "dpmpp_2m", "edm", "restart", "ancestral"} <= set(names)
    assert names == sorted(SAMPLERS)
    assert {"none", "langevin", "annealed_langevin"} == set(CORRECTORS)
    assert {"euler_maruyama", "reverse_diffusion", "ancestral", "probability_flow", "none"} == set(PREDICTORS)
    from score_sde.solvers.api import SAMPLERS as api_samplers
    from score_sde.solvers.correctors import CORRECTORS as corrector_table

    assert api_samplers is SAMPLERS and corrector_table is CORRECTORS


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="", build=lambda: None), "non-empty string"),
        (dict(name="x"), "exactly one"),
        (dict(name="x", build=lambda: None, solve=lambda: None), "exactly one"),
        (dict(name="x", build=3), "callable"),
    ],
)
def test_register_sampler_refuses_bad_input(kwargs, match):
    name = kwargs.pop("name")
    with pytest.raises(TypeError, match=match):
        register_sampler(name, **kwargs)
    assert "x" not in SAMPLERS
    with pytest.raises(TypeError, match="callable"):
        register_corrector("x", 3)
    assert "x" not in CORRECTORS
