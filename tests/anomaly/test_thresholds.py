"""Tests for aetool.anomaly.thresholds: parsing, fitting, flagging and ranking."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aetool.anomaly.thresholds import (
    AUTO_MAD_K,
    MAD_TO_SIGMA,
    Threshold,
    ThresholdSpec,
    fit_threshold,
    flag_anomalies,
    parse_threshold,
    percentile_rank,
)
from aetool.errors import ConfigError

VAL = np.arange(1.0, 101.0)  # validation scores 1..100


# --- threshold parsing and fitting -----------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("auto", ThresholdSpec("auto", None, "auto")),
        (" AUTO ", ThresholdSpec("auto", None, "AUTO")),
        ("0.0123", ThresholdSpec("value", 0.0123, "0.0123")),
        ("1e-3", ThresholdSpec("value", 0.001, "1e-3")),
        (".5", ThresholdSpec("value", 0.5, ".5")),
        ("p99", ThresholdSpec("percentile", 99.0, "p99")),
        ("P99.5", ThresholdSpec("percentile", 99.5, "P99.5")),
        ("3sigma", ThresholdSpec("sigma", 3.0, "3sigma")),
        ("2.5 sigma", ThresholdSpec("sigma", 2.5, "2.5 sigma")),
    ],
)
def test_parse_threshold(spec: str, expected: ThresholdSpec) -> None:
    assert parse_threshold(spec) == expected


@pytest.mark.parametrize(
    "spec",
    ["", "p", "p101", "p-1", "pabc", "sigma", "-3sigma", "-1", "nan", "inf", "3sigmas", "0.1x"],
)
def test_parse_threshold_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(ConfigError, match="p99") as info:
        parse_threshold(spec)
    assert "\n" not in str(info.value)


def test_fit_threshold_percentile_and_sigma_exact() -> None:
    p99 = fit_threshold("p99", VAL)
    assert p99.value == pytest.approx(99.01)
    assert p99.rule == "p99 of 100 validation scores"
    assert fit_threshold("p99.5", VAL).value == pytest.approx(99.505)
    assert fit_threshold("p50", VAL).value == pytest.approx(50.5)
    sig = fit_threshold("3sigma", VAL)
    # sample std of 1..100 = sqrt(100 * 101 / 12) = 29.011491975882016
    assert sig.value == pytest.approx(50.5 + 3 * 29.011491975882016)
    assert sig.rule == "mean + 3*std of 100 validation scores"


def test_fit_threshold_explicit_needs_no_validation_scores() -> None:
    t = fit_threshold("0.25", np.array([]))
    assert t == Threshold(0.25, "explicit")


def test_fit_threshold_auto_is_median_plus_mad() -> None:
    v = np.array([1.0, 2.0, 3.0, 4.0, 100.0])  # one outlier must not move it
    t = fit_threshold(parse_threshold("auto"), v)
    # median 3, |v - 3| = 2,1,0,1,97 -> MAD 1
    assert t.value == pytest.approx(3 + AUTO_MAD_K * MAD_TO_SIGMA * 1)
    assert t.rule == "auto: median + 4*1.4826*MAD of 5 validation scores"
    assert fit_threshold("auto", VAL).value == pytest.approx(50.5 + 4 * 1.4826 * 25)


def test_fit_threshold_auto_zero_mad_falls_back_to_std() -> None:
    v = np.array([2.0, 2.0, 2.0, 2.0, 4.0])
    t = fit_threshold("auto", v)
    assert t.value == pytest.approx(2.0 + 4 * np.std(v, ddof=1))
    assert "MAD is 0" in t.rule


def test_fit_threshold_ignores_non_finite_and_needs_scores() -> None:
    assert fit_threshold("p100", [1.0, np.nan, 3.0, np.inf]).value == 3.0
    with pytest.raises(ConfigError, match="numeric threshold"):
        fit_threshold("auto", [np.nan])
    with pytest.raises(ConfigError):
        fit_threshold("p99", [])


def test_flag_anomalies_is_strict() -> None:
    flags = flag_anomalies([1.0, 2.0, 3.0, np.nan], Threshold(2.0, "explicit"))
    assert flags.tolist() == [False, False, True, False]


# --- percentile rank -----------------------------------------------------------


def test_percentile_rank_exact_values() -> None:
    r = percentile_rank([0.5, 1.0, 50.0, 50.5, 100.0, 1e9, np.nan], VAL)
    assert r[:6].tolist() == [0.0, 1.0, 50.0, 50.0, 100.0, 100.0]
    assert math.isnan(r[6])
    # ties count as <=, and unsorted validation scores are fine
    assert percentile_rank(2.0, [2.0, 1.0, 2.0, 3.0]).item() == 75.0
    with pytest.raises(ConfigError):
        percentile_rank([1.0], [])
