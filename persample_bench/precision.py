"""How many rounds a point needs: measured until its median is known to a stated precision, or a time cap.

A point's statistic is the median of its rounds: of the method's time over
the baseline's, round by round, where the two are interleaved (the speedup
the gate tests), else of its time. Its precision is the half-width of the
95% interval of that median, relative (on the log scale), distribution-free:
the interval between two order statistics (``median_interval``).

Rounds are planned in two stages, as Stein's two-stage procedure and
``torch.utils.benchmark.Timer.adaptive_autorange`` do: a pilot (which is also
the warm-up, and is not kept) tells how much one round varies and how long it
takes; then as many rounds are timed as reach the target at that variation,
at least ``min_rounds``, and no more than fit in ``max_time``. A quiet point
(one round varying by 5%) finishes in a few dozen rounds, a noisy one gets the
time cap. The pilot takes a quarter of the cap, between ``pilot_rounds`` and
``MOST_PILOT_ROUNDS`` rounds: the spread of five rounds was too often a third
of the rounds' own, and the points planned on it fell far short. The cap holds
the first round, the pilot and the rounds together, but for the least a point
needs: a pilot of ``FEWEST_PILOT`` and ``min_rounds`` rounds, which a point
whose rounds take longer than a thirteenth of the cap gets anyway (the pilot
is cut first). The
precision reached is computed afterwards from the rounds kept, recorded with
the point, and flagged where it missed the target.
pytest-benchmark times a point in one call (``benchmark.pedantic``), which
is why the plan is made before it, not while it runs.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

CONFIDENCE = 0.95
# 1.96 x the median's standard error in units of one round's (sqrt(pi/2) for normal rounds): the interval's
# half-width a round's spread gives at n rounds is this x spread / sqrt(n).
HALF_WIDTH_PER_SPREAD = 1.96 * math.sqrt(math.pi / 2)
# The pilot's spread comes from a few rounds of a heavy-tailed distribution and is often too small by chance;
# planning for twice it keeps the target met in most points that have the time, rather than half of them.
PILOT_MARGIN = 2.0
PILOT_SHARE, MOST_PILOT_ROUNDS = 0.25, 20  # of the time cap; the pilot's rounds at most
# The least pilot, however little time the cap leaves: a spread needs two rounds. The timed rounds keep their
# least (``Precision.min_rounds``) whatever the cap: fewer leave the gate's rank test no p small enough to flag
# anything (Mann-Whitney's least p is 1/C(2n, n): 0.05 at three rounds a side, 5e-6 at ten).
FEWEST_PILOT = 2


@dataclass(frozen=True)
class Precision:
    """What a point is measured to: its median within ``target`` (relative half-width of the 95% interval),
    in at most ``max_time`` seconds of rounds (pilot included), but never fewer than ``min_rounds`` rounds."""

    target: float
    max_time: float
    # Ten rounds at least, whatever max_time: the 95% interval of a median of n rounds is the range of the
    # rounds up to n = 5, and leaves the two most extreme out from n = 10 on (``median_interval``), so one stretched
    # round cannot set it.
    min_rounds: int = 10
    # The least rounds of the pilot: the spread of fewer is too often far too small (the median deviation of three
    # is one of them).
    pilot_rounds: int = 5

    def __post_init__(self):
        for name in ("target", "max_time"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"the precision's {name} must be a positive number, got {value!r}")
        for name in ("min_rounds", "pilot_rounds"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"the precision's {name} must be a positive integer, got {getattr(self, name)!r}")


def median_interval(samples, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The distribution-free interval of the median: order statistics k and n + 1 - k, with k the largest for
    which at least ``confidence`` of Binomial(n, 1/2) lies in [k, n - k]. With too few samples for that
    (n < 6 at 95%), the whole range."""
    ordered, n = sorted(samples), len(samples)
    below, k = 0.0, 0
    for j in range(n // 2):
        below += math.comb(n, j) / 2**n  # P(Binomial(n, 1/2) <= j): the median below order statistic j + 1
        if 2 * below > 1 - confidence:
            break
        k = j + 1
    return (ordered[k - 1], ordered[n - k]) if k >= 1 else (ordered[0], ordered[-1])


def relative_half_width(samples) -> float:
    """Half the width of ``median_interval(samples)`` on the log scale: about the relative precision of the
    median (0.02: known within 2%)."""
    low, high = median_interval(samples)
    return (math.log(high) - math.log(low)) / 2 if low > 0 else math.inf


def spread(samples) -> float:
    """How much one round varies, on the log scale: 1.4826 x the median absolute deviation (the standard
    deviation for normal rounds, but untouched by the odd round a busy machine stretches)."""
    logs = [math.log(value) for value in samples]
    centre = statistics.median(logs)
    mad = 1.4826 * statistics.median(abs(value - centre) for value in logs)
    return mad if mad > 0 else statistics.pstdev(logs)


def _fit(seconds: float, seconds_per_round: float) -> int:
    return math.floor(seconds / max(seconds_per_round, 1e-9))


def pilot_size(seconds_per_round: float, precision: Precision, seconds_left: float | None = None) -> int:
    """Rounds of the pilot: ``PILOT_SHARE`` of the time cap, between ``pilot_rounds`` and ``MOST_PILOT_ROUNDS``,
    and no more than leave ``min_rounds`` in ``seconds_left`` (the cap, where not given); ``FEWEST_PILOT`` at
    least."""
    left = precision.max_time if seconds_left is None else seconds_left
    share = _fit(PILOT_SHARE * precision.max_time, seconds_per_round)
    wanted = max(precision.pilot_rounds, min(MOST_PILOT_ROUNDS, share))
    return max(FEWEST_PILOT, min(wanted, _fit(left, seconds_per_round) - precision.min_rounds))


def planned_rounds(pilot, seconds_per_round: float, precision: Precision, seconds_left: float) -> int:
    """Rounds to time after a pilot whose statistic per round is ``pilot``: enough to reach the target at the
    pilot's spread (with a margin), at most what fits in ``seconds_left``, and ``min_rounds`` whatever the time."""
    wanted = math.ceil((HALF_WIDTH_PER_SPREAD * PILOT_MARGIN * spread(pilot) / precision.target) ** 2)
    return max(precision.min_rounds, min(wanted, _fit(seconds_left, seconds_per_round)))


def statistic(samples: dict) -> list[float]:
    """The per-round statistic of interleaved ``samples`` (``{"method": [...], "baseline": [...]}``): the ratio
    method/baseline; of a point timed alone (``{"method": [...]}``): its time."""
    if "baseline" in samples:
        return [m / b for m, b in zip(samples["method"], samples["baseline"])]
    return list(samples["method"])
