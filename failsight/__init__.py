"""failsight: multi-cloud journey, replication and dependency monitor with a failover verdict.

The repository keeps its `agent/` and `probes/` folders at the top; they install and import as
`failsight.agent` and `failsight.probes`, beside the `failsight.core` layer both build on.
"""

from failsight.core.version import __version__

__all__ = ["__version__"]
