"""Thresholds: parse a rule, fit it to validation scores, flag and rank scores.

Conventions:

* An image is flagged as an anomaly when ``score > threshold`` (strictly),
  see :func:`flag_anomalies`.
* Validation scores are the per-image scores of the held-out normal images
  recorded in the model file (``meta["validation"]["scores"][kind]``); the
  functions here take them as numpy arrays. Non-finite values are ignored.

Each data-driven rule (``auto``, ``pQ``, ``Ksigma``) is one small function;
:func:`fit_threshold` picks the one a :class:`ThresholdSpec` names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from aetool.errors import ConfigError

__all__ = [
    "AUTO_MAD_K",
    "MAD_TO_SIGMA",
    "Threshold",
    "ThresholdSpec",
    "fit_threshold",
    "finite_scores",
    "flag_anomalies",
    "parse_threshold",
    "percentile_rank",
]

#: Scale factor turning a median absolute deviation into a standard deviation
#: (exact for normally distributed data).
MAD_TO_SIGMA = 1.4826


#: ``auto`` threshold = median + AUTO_MAD_K * MAD_TO_SIGMA * MAD of the
#: validation scores. 4 rather than the textbook 3 because reconstruction
#: errors are right-skewed; see benchmarks/threshold_rule.py for the measured
#: false-positive rates of the candidates.
AUTO_MAD_K = 4.0


_THRESHOLD_HELP = (
    "use 'auto', a number such as 0.012, a validation percentile such as p99 or p99.5, "
    "or mean + k standard deviations such as 3sigma"
)


@dataclass(frozen=True)
class ThresholdSpec:
    """A parsed threshold rule, before it meets any validation scores.

    Attributes:
        kind: ``"auto"``, ``"value"``, ``"percentile"`` or ``"sigma"``.
        param: the number (threshold value, percentile or k); ``None`` for auto.
        text: the spec as the user wrote it (stripped).
    """

    kind: str
    param: float | None
    text: str


@dataclass(frozen=True)
class Threshold:
    """A threshold value and the human-readable rule that produced it."""

    value: float
    rule: str


_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?"


_PERCENTILE_RE = re.compile(rf"p\s*({_NUMBER})")


_SIGMA_RE = re.compile(rf"({_NUMBER})\s*(?:sigma|σ)")


_VALUE_RE = re.compile(_NUMBER)


def parse_threshold(spec: str) -> ThresholdSpec:
    """Parse a threshold rule.

    Accepted forms (case-insensitive, surrounding spaces ignored):

    * ``auto``: a robust rule on the validation scores, see :func:`fit_threshold`;
    * a number such as ``0.0123`` or ``1e-3`` (>= 0): that exact value;
    * ``pQ`` such as ``p99`` or ``p99.5`` (0 <= Q <= 100): the Q-th percentile
      of the validation scores;
    * ``Ksigma`` such as ``3sigma`` or ``2.5sigma`` (K >= 0): mean + K * std of
      the validation scores.

    Raises:
        ConfigError: the spec matches none of these forms.
    """
    text = str(spec).strip()
    low = text.lower()
    if low == "auto":
        return ThresholdSpec("auto", None, text)
    if m := _PERCENTILE_RE.fullmatch(low):
        q = float(m.group(1))
        if not 0 <= q <= 100:
            raise ConfigError(
                f"threshold percentile {text!r} is outside p0..p100; {_THRESHOLD_HELP}"
            )
        return ThresholdSpec("percentile", q, text)
    if m := _SIGMA_RE.fullmatch(low):
        k = float(m.group(1))
        if k < 0:
            raise ConfigError(f"threshold {text!r} needs a non-negative k; {_THRESHOLD_HELP}")
        return ThresholdSpec("sigma", k, text)
    if _VALUE_RE.fullmatch(low):
        value = float(low)
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"threshold {text!r} must be a finite number >= 0; {_THRESHOLD_HELP}")
        return ThresholdSpec("value", value, text)
    raise ConfigError(f"invalid threshold {text!r}; {_THRESHOLD_HELP}")


def finite_scores(values: np.ndarray | Sequence[float]) -> np.ndarray:
    """The finite values as a flat float64 array (validation scores may hold NaN)."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def _fmt(x: float) -> str:
    return f"{x:g}"


def fit_threshold(spec: ThresholdSpec | str, val_scores: np.ndarray | Sequence[float]) -> Threshold:
    """Turn a threshold rule into a value using the stored validation scores.

    Rules (``n`` finite validation scores ``v``):

    * ``auto``: ``median(v) + AUTO_MAD_K * MAD_TO_SIGMA * MAD(v)`` with
      ``MAD(v) = median(|v - median(v)|)``, i.e. median + 4 * 1.4826 * MAD, a
      "4 robust sigma" bound. The median and MAD ignore a few anomalous or
      mislabelled images in the validation split (unlike mean + k*std or a
      high percentile of a small split), and k = 4 compensates for the right
      skew of reconstruction errors. When MAD is 0 (over half the scores are
      identical) the sample standard deviation replaces
      ``MAD_TO_SIGMA * MAD``.
    * value: the number itself (``rule == "explicit"``); needs no validation
      scores.
    * ``pQ``: ``numpy.percentile(v, Q)`` with linear interpolation.
    * ``Ksigma``: ``mean(v) + K * std(v)`` with the sample standard deviation
      (``ddof=1``; 0 when n == 1).

    Args:
        spec: a :class:`ThresholdSpec` or a string for :func:`parse_threshold`.
        val_scores: validation scores of one score kind.

    Raises:
        ConfigError: the spec is invalid, or a data-driven rule has no finite
            validation scores to work on.
    """
    if not isinstance(spec, ThresholdSpec):
        spec = parse_threshold(spec)
    if spec.kind == "value":
        assert spec.param is not None
        return Threshold(float(spec.param), "explicit")
    v = finite_scores(val_scores)
    if v.size == 0:
        raise ConfigError(
            f"threshold {spec.text!r} needs validation scores, but the model file has none "
            "for this score kind; pass a numeric threshold such as 0.01 instead"
        )
    if spec.kind == "percentile":
        assert spec.param is not None
        return _percentile_rule(v, spec.param)
    if spec.kind == "sigma":
        assert spec.param is not None
        return _sigma_rule(v, spec.param)
    return _auto_rule(v)


def _of(v: np.ndarray) -> str:
    n = v.size
    return f"of {n} validation score{'s' if n != 1 else ''}"


def _std(v: np.ndarray) -> float:
    return float(v.std(ddof=1)) if v.size > 1 else 0.0


def _percentile_rule(v: np.ndarray, q: float) -> Threshold:
    """``pQ``: the Q-th percentile (linear interpolation) of finite scores ``v``."""
    value = float(np.percentile(v, q))
    return Threshold(value, f"p{_fmt(q)} {_of(v)}")


def _sigma_rule(v: np.ndarray, k: float) -> Threshold:
    """``Ksigma``: mean + K * sample standard deviation of finite scores ``v``."""
    value = float(v.mean()) + k * _std(v)
    return Threshold(value, f"mean + {_fmt(k)}*std {_of(v)}")


def _auto_rule(v: np.ndarray) -> Threshold:
    """``auto``: median + AUTO_MAD_K robust sigmas of finite scores ``v``."""
    med = float(np.median(v))
    mad = float(np.median(np.abs(v - med)))
    k = _fmt(AUTO_MAD_K)
    if mad > 0:
        value = med + AUTO_MAD_K * MAD_TO_SIGMA * mad
        return Threshold(value, f"auto: median + {k}*{MAD_TO_SIGMA}*MAD {_of(v)}")
    return Threshold(med + AUTO_MAD_K * _std(v), f"auto: median + {k}*std {_of(v)} (MAD is 0)")


def flag_anomalies(
    scores: np.ndarray | Sequence[float], threshold: float | Threshold
) -> np.ndarray:
    """Boolean anomaly flags: ``score > threshold`` (NaN scores give False)."""
    t = threshold.value if isinstance(threshold, Threshold) else float(threshold)
    return np.asarray(scores, dtype=np.float64) > t


def percentile_rank(
    scores: np.ndarray | Sequence[float] | float, val_scores: np.ndarray | Sequence[float]
) -> np.ndarray:
    """Rank of each score among the normal validation scores, in [0, 100].

    The percentage of validation scores ``<=`` the score: 0 below every
    validation score, 100 at or above the largest. Non-finite scores give NaN.

    Raises:
        ConfigError: there are no finite validation scores.
    """
    v = np.sort(finite_scores(val_scores))
    if v.size == 0:
        raise ConfigError("percentile ranks need validation scores, but the model file has none")
    s = np.asarray(scores, dtype=np.float64)
    ranks = np.searchsorted(v, s, side="right") * (100.0 / v.size)
    return np.where(np.isfinite(s), ranks, np.nan)
