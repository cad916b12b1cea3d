"""`python -m explain {counterfactual,landscape,attribute,generate,...}` — see `python -m explain COMMAND --help`."""

import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while torch still loads: the same one line as later (cli.main), no traceback
    print("interrupted", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
