"""Reproductions of the paper's figures and tables at CPU scale (see README.md).

Run all of them with ``python -m paper_figures [--fast] [--only fig2,table1]`` from a source
checkout (or ``score-sde figures``); one with ``python -m paper_figures.<script> [--fast]``.
"""
