"""``python -m score_sde ...`` (and ``torchrun -m score_sde ...``): the ``score-sde`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
