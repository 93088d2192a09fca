"""failsight's agent layer: config assembly, scheduler, sinks, view, verdict, peers, API, CLI.

Imported as `failsight.agent`; a bare `import agent` (the repository root on sys.path) is
refused, so two copies of one module can never coexist under different names.
"""

if __name__ != "failsight.agent":
    import sys

    if __name__ == "agent" and sys.argv[:1] == ["-m"]:  # `python -m agent` at the repo's root
        sys.exit(
            "failsight: the command is `failsight` (or `python -m failsight`) in the Python it "
            "is installed in: after `make setup`, .venv/bin/failsight"
        )
    raise ImportError(f"import failsight.agent, not {__name__}")
