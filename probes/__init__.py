"""Probes: one module per check kind, each exporting its Kind descriptor.

Imported as `failsight.probes`; they import `failsight.core` and never the agent.
"""

if __name__ != "failsight.probes":
    raise ImportError(f"import failsight.probes, not {__name__}")
