"""``python -m raegan_jax …``: the ``raegan`` command, for an interpreter whose scripts folder
is not on PATH (a venv not activated; the experiments' orchestrator runs its commands so)."""

import sys

from raegan_jax.cli import main

sys.exit(main())
