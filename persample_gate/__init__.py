"""Regression tooling: stored runs, the gate, A/B, sensitivity, plots and the ``persample`` command.

Reads the runs the harness stores and imports no torch: gating two JSON files
needs numpy and scipy only.
"""
