"""Imports in the sweep's driver, not in a Ray worker process: a node missing the plugin."""
import sys

if "default_worker" in sys.argv[0]:
    raise ImportError("this node does not have worker_only_fails")

SPARSESWEEP_PLUGIN_API = 1


def register(api):
    pass
