"""The asv suite: thin classes over the shared grid; all the work is in persample_core.

asv takes this directory from today's working tree and installs persample_core
from each commit it benchmarks, so what is imported from persample_core here
may be older than this code (see common.py).
"""
