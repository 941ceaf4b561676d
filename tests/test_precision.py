"""How many rounds a point needs: the interval of a median, the pilot's plan, and what a point reached."""

import math
import time

import numpy as np
import pytest
from scipy import stats

from persample_bench.precision import (
    Precision,
    median_interval,
    pilot_size,
    planned_rounds,
    relative_half_width,
    spread,
)
from persample_bench.timing import measure


@pytest.mark.parametrize("n", [10, 20, 50, 101, 400])
def test_the_interval_of_the_median_is_the_binomial_one(n):
    """Order statistics k and n + 1 - k, k the largest with P(Binomial(n, 1/2) < k) <= 2.5% (as scipy finds it)."""
    low, high = median_interval(list(range(1, n + 1)))
    k = int(stats.binom.ppf(0.025, n, 0.5))  # the largest k with cdf(k - 1) <= 2.5%, give or take one
    k = k if stats.binom.cdf(k - 1, n, 0.5) <= 0.025 else k - 1
    assert (low, high) == (k, n + 1 - k)


def test_the_interval_covers_the_median_95_times_in_100():
    rng = np.random.default_rng(0)
    covered = [median_interval(rng.lognormal(0, 0.1, 30)) for _ in range(4000)]
    rate = np.mean([low <= 1 <= high for low, high in covered])
    assert 0.94 < rate < 0.975, rate


def test_with_few_rounds_the_interval_is_their_range():
    assert median_interval([3.0, 1.0, 2.0, 5.0, 4.0]) == (1.0, 5.0)


def test_the_relative_half_width_is_half_the_log_width():
    assert relative_half_width([1.0] * 4 + [math.e**0.1] * 4 + [math.e**-0.1] * 4) == pytest.approx(0.1)


def test_one_stretched_round_does_not_set_the_spread():
    quiet = list(np.exp(np.random.default_rng(1).normal(0, 0.02, 20)))
    assert spread(quiet + [10.0]) < 0.04 < np.std(np.log(quiet + [10.0]))


@pytest.mark.parametrize(
    "noise, left, expected",
    [
        (0.01, 100.0, 10),  # quiet: the least rounds reach the target
        (0.05, 100.0, None),  # noisier: more rounds, (2.46 x 2 x 5% / 2%)^2 of them
        (0.20, 0.5, 10),  # noisy and out of time: the cap, but never fewer than the least
        (0.20, 5.0, 50),  # noisy: as many as fit
    ],
)
def test_the_plan_reaches_the_target_at_the_pilots_spread_within_the_time_left(noise, left, expected):
    pilot = list(np.exp(np.random.default_rng(2).normal(0, noise, 51)))
    rounds = planned_rounds(pilot, 0.1, Precision(0.02, max_time=60), left)
    wanted = math.ceil((1.96 * math.sqrt(math.pi / 2) * 2 * spread(pilot) / 0.02) ** 2)
    assert rounds == (expected or wanted) and 10 <= rounds <= max(10, left / 0.1)


@pytest.mark.parametrize(
    "field, value", [("target", 0), ("max_time", -1.0), ("target", float("nan")), ("min_rounds", 0)]
)
def test_a_precision_that_is_not_positive_is_refused_by_name(field, value):
    with pytest.raises(ValueError, match=f"the precision's {field} must be a positive"):
        Precision(**{"target": 0.02, "max_time": 1.0, field: value})


def test_a_quiet_point_stops_early_and_says_what_it_reached():
    calls = []

    def steady():
        calls.append(1)
        time.sleep(0.005)

    samples, reached = measure({"method": steady}, Precision(0.5, max_time=30))
    assert reached["pilot_rounds"] == 20  # a quarter of the cap holds more: the most a pilot takes
    assert reached["rounds"] == len(samples["method"]) == 10 and len(calls) == 1 + 20 + 10  # a round sizes the pilot
    assert reached["precision_target"] == 0.5 and reached["max_time"] == 30
    assert reached["resolved"] == (reached["precision"] <= 0.5)


@pytest.mark.parametrize("per_round, expected", [(0.001, 20), (0.1, 5), (0.04, 12), (0.15, 3), (10.0, 2)])
def test_the_pilot_takes_a_quarter_of_the_cap_in_5_to_20_rounds_leaving_room_for_ten(per_round, expected):
    assert pilot_size(per_round, Precision(0.02, max_time=2.0)) == expected


@pytest.mark.parametrize("cap, least", [(0.4, False), (0.1, True)])
def test_the_time_cap_holds_the_pilot_and_the_rounds_but_for_the_least(cap, least):
    # Every round sleeps 20 ms at least, so no more rounds than fit in the cap at 20 ms may be planned; a cap
    # too short for even the least (the first round, a pilot of two, ten rounds) gets those and no more.
    calls = []
    samples, reached = measure({"method": lambda: calls.append(time.sleep(0.02))}, Precision(0.001, max_time=cap))
    if least:
        assert (reached["pilot_rounds"], reached["rounds"], len(calls)) == (2, 10, 13)
    else:
        assert len(calls) <= cap / 0.02 and reached["rounds"] >= 10
