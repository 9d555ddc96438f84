"""``python -m paper_figures [--fast] [--only fig2,table1]``: regenerate the paper figures."""

from paper_figures.run_all import main

raise SystemExit(main())
