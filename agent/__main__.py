"""`python -m failsight.agent` is the same as the `failsight` command."""

from failsight.agent.cli import main

raise SystemExit(main())
