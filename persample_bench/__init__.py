"""The measurement harness: the grid, preparing a point, timing, memory, hardware, and the pytest plugin.

It imports the library under test (``persample_core``) and writes runs in the
format ``persample_bench.runformat`` reads. When asv or ``persample ab`` times
another version of the library, this harness comes from today's tree.
"""
