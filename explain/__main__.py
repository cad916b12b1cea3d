"""`python -m explain {counterfactual,landscape,attribute,generate}` — see `python -m explain COMMAND --help`."""

from .cli import main

raise SystemExit(main())
