"""failsight: multi-cloud journey, replication and dependency monitor with a failover verdict."""

__version__ = "0.1.0"
