"""`python -m agent` is the same as the `failsight` command."""

from agent.cli import main

raise SystemExit(main())
