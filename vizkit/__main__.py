"""``python -m vizkit ...`` runs the ``vizkit`` command; ``torchrun -m vizkit mine ...`` needs this module."""
from __future__ import annotations

from vizkit_cli.main import main

if __name__ == "__main__":
    main(prog_name="vizkit")
