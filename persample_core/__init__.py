"""Per-sample gradients in PyTorch by several methods, checked against a float64 reference.

The public API below is what the benchmark suites rely on, also when asv runs
today's benchmarks against an older commit of this package: keep it stable.
"""

from persample_core.dp import (
    DP_METHODS,
    DPComparison,
    DPMismatch,
    assert_dp_matches_reference,
    clipped_sum,
    per_sample_norms,
    prepare_dp,
)
from persample_core.methods import (
    BASELINE,
    METHODS,
    MethodUnavailable,
    compile_seconds,
    is_out_of_memory,
    per_sample_grads,
    prepare,
)
from persample_core.reference import (
    TOLERANCES,
    Comparison,
    ReferenceMismatch,
    assert_matches_reference,
    compare_with_reference,
    reference_grads,
)
from persample_core.workloads import DEFAULT_WORKLOAD, WORKLOADS, Workload, WorkloadError, make_workload

__all__ = [
    "DP_METHODS",
    "DPComparison",
    "DPMismatch",
    "assert_dp_matches_reference",
    "clipped_sum",
    "per_sample_norms",
    "prepare_dp",
    "BASELINE",
    "METHODS",
    "MethodUnavailable",
    "compile_seconds",
    "is_out_of_memory",
    "per_sample_grads",
    "prepare",
    "TOLERANCES",
    "Comparison",
    "ReferenceMismatch",
    "assert_matches_reference",
    "compare_with_reference",
    "reference_grads",
    "DEFAULT_WORKLOAD",
    "WORKLOADS",
    "Workload",
    "WorkloadError",
    "make_workload",
]
