"""Every planted one-line bug of ``scripts/mutants.py`` makes its tests fail (slow: ~15-30 minutes on 2 cores)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_no_mutant_survives(tmp_path):
    out = tmp_path / "mutants.txt"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "mutants.py"), "--out", str(out)],
                       capture_output=True, text=True, timeout=4 * 3600)  # fmt: skip
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "survivors: none" in out.read_text()


def test_mutant_texts_are_in_the_code():
    """Each mutant's text occurs exactly once in its file (a refactor that moves it must update the list)."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import mutants
    finally:
        sys.path.pop(0)
    assert len(mutants.MUTANTS) >= 12
    for m in mutants.MUTANTS:
        text = open(os.path.join(ROOT, m.file)).read()
        assert text.count(m.old) == 1, (m.name, m.file)
        for t in m.tests:
            assert os.path.exists(os.path.join(ROOT, t.split("::")[0])), (m.name, t)
