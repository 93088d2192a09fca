"""`python -m failsight` is the same as the `failsight` command."""

try:
    from failsight.agent.cli import main
except ModuleNotFoundError as missing:  # a Python without failsight's dependencies
    raise SystemExit(
        f"failsight: {missing.name} is not installed in this Python ({missing}): use the one "
        "failsight is installed in (after `make setup`, .venv/bin/failsight or "
        ".venv/bin/python -m failsight), or `pip install .`"
    ) from None

raise SystemExit(main())
