"""failsight's agent layer: config assembly, scheduler, sinks, view, verdict, peers, API, CLI.

Imported as `failsight.agent`; a bare `import agent` (the repository root on sys.path) is
refused, so two copies of one module can never coexist under different names.
"""

if __name__ != "failsight.agent":
    raise ImportError(f"import failsight.agent, not {__name__}")
