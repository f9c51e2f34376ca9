"""Train the fall detector's impact model on SisFall.

Usage::

    python -m lab.train_falls --sisfall ../shared/datasets/sisfall [--out FILE]

What it does, so that anyone with the full public dataset can re-run it:

1. Every recording is resampled (:func:`lab.resample.resample_imu`) to
   each rate in ``--rates`` and streamed through the real
   :class:`posture.falls.FallDetector` with a model that never fires, so
   that every impact candidate runs to its end. The up direction is the
   accelerometer low-passed at 3 Hz (what the engine uses without a
   gyroscope), with SisFall's upright reading (0, -1, 0) as reference.
2. A candidate counts if the trunk was lying and still after it (the
   detector's posture gate). In a fall recording the strongest such
   candidate (largest impulse) is the fall; in an ADL recording every such
   candidate is a non-fall.
3. A class-balanced, L2-regularised logistic regression on
   ``--features`` is validated leave-one-subject-out: each subject's
   recordings are scored by a model fitted without that subject, all rates
   pooled. A recording is detected if any of its gated candidates reaches
   the threshold.
4. The threshold is the one with the highest worst-rate sensitivity among
   those whose worst-rate specificity is at least ``--min-specificity``
   (the middle of a tie). The final model is fitted on all subjects and
   saved as a small ``.npz`` (:func:`posture.falls.model.save_fall_model`).

The detector's rules (docs/falls.md) are fixed, not fitted; the model is
their only learned part. ``--held-out`` then measures the whole detector
the honest way: each subject's recordings go through the full engine with
a model fitted without that subject (same threshold), and the report gives
every family and subject group on held-out subjects only.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import signal

from lab.datasets import (
    SISFALL_NOMINAL_UP_SENSOR,
    SisFallRecording,
    list_sisfall,
    read_sisfall,
)
from lab.eval_falls import FallReport, evaluate_falls
from lab.evaluate import format_falls
from lab.resample import resample_imu
from posture.falls import FallCandidate, FallDetector, FallSettings
from posture.falls.model import DEFAULT_MODEL_PATH, FEATURE_NAMES, FallModel, save_fall_model

__all__ = ["CandidateRow", "collect_candidates", "fit_logistic", "main"]

_log = logging.getLogger(__name__)

DEFAULT_FEATURES = ("log_impulse_gs", "peak_lp_acc_g")
_UP_CUTOFF_HZ = 3.0


@dataclass(frozen=True)
class CandidateRow:
    """One gated candidate: which recording, at which rate, and its features."""

    recording: str
    subject: str
    is_fall: bool
    rate_hz: float
    features: dict[str, float]
    train: bool
    """False for the weaker candidates of a fall recording (not used for fitting)."""


def _up_from_acc(acc_g: NDArray[np.float64], rate_hz: float) -> NDArray[np.float64]:
    sos = signal.butter(2, _UP_CUTOFF_HZ, fs=rate_hz, output="sos")
    zi = signal.sosfilt_zi(sos)[:, :, None] * acc_g[0][None, None, :]
    low, _ = signal.sosfilt(sos, acc_g, axis=0, zi=zi)
    return np.asarray(low / np.linalg.norm(low, axis=1, keepdims=True))


def collect_candidates(
    recordings: Sequence[SisFallRecording], rates_hz: Sequence[float], settings: FallSettings
) -> list[CandidateRow]:
    """Run the detector (never firing) over every recording at every rate.

    Returns the candidates that passed the lying-and-still gate.
    """
    rows: list[CandidateRow] = []
    with tempfile.TemporaryDirectory() as tmp:
        null_path = Path(tmp) / "never.npz"
        k = len(FEATURE_NAMES)
        save_fall_model(
            FallModel(FEATURE_NAMES, np.zeros(k), np.ones(k), np.zeros(k), -50.0, 1.0), null_path
        )
        never = FallSettings(
            **{
                **settings.__dict__,
                "model_path": str(null_path),
                "unmoving_impulse_gs": 1e9,
                "soft_min_peak_lp_g": 1e9,
            }
        )
        for rec in recordings:
            for rate in rates_hz:
                acc = resample_imu(rec.acc_g, rec.sample_rate_hz, rate)
                t = np.arange(acc.shape[0]) / rate
                seen: list[FallCandidate] = []
                detector = FallDetector(never, rate, on_candidate=seen.append)
                detector.set_reference_up(SISFALL_NOMINAL_UP_SENSOR)
                detector.process(t, acc, None, _up_from_acc(acc, rate))
                gated = [
                    c
                    for c in [*seen, *detector.pending_candidates]
                    if "tilt_post_deg" in c.features
                ]
                strongest = max(gated, key=lambda c: c.features["impulse_gs"], default=None)
                for cand in gated:
                    rows.append(
                        CandidateRow(
                            recording=rec.name,
                            subject=rec.subject,
                            is_fall=rec.is_fall,
                            rate_hz=rate,
                            features=dict(cand.features),
                            train=(not rec.is_fall) or cand is strongest,
                        )
                    )
    return rows


def fit_logistic(
    x: NDArray[np.float64], y: NDArray[np.float64], l2: float = 1.0, iterations: int = 50
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], float]:
    """Class-balanced L2 logistic regression by Newton's method.

    Returns ``(mean, scale, weights, bias)`` for standardised inputs.

    Raises:
        ValueError: fewer than one example of either class.
    """
    if not (0 < y.sum() < y.size):
        raise ValueError("need both falls and non-falls to fit")
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-9
    z = np.hstack([(x - mean) / scale, np.ones((x.shape[0], 1))])
    weight = np.where(y == 1, 0.5 / y.mean(), 0.5 / (1.0 - y.mean()))
    penalty = l2 * np.diag(np.r_[np.ones(z.shape[1] - 1), 0.0])
    w = np.zeros(z.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        grad = z.T @ (weight * (p - y)) + penalty @ w
        hess = (z * (weight * p * (1.0 - p))[:, None]).T @ z + penalty
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return mean, scale, w[:-1], float(w[-1])


def _matrix(rows: Sequence[CandidateRow], names: Sequence[str]) -> NDArray[np.float64]:
    return np.array([[r.features[n] for n in names] for r in rows], dtype=np.float64)


def _model(rows: Sequence[CandidateRow], names: tuple[str, ...], l2: float) -> FallModel:
    train = [r for r in rows if r.train]
    mean, scale, weights, bias = fit_logistic(
        _matrix(train, names), np.array([float(r.is_fall) for r in train]), l2
    )
    return FallModel(names, mean, scale, weights, bias, 0.5)


def loso_scores(
    rows: Sequence[CandidateRow], names: tuple[str, ...], l2: float
) -> dict[tuple[float, str], float]:
    """Max held-out probability per (rate, recording) over its gated candidates."""
    best: dict[tuple[float, str], float] = {}
    for subject in sorted({r.subject for r in rows}):
        held = [r for r in rows if r.subject == subject]
        model = _model([r for r in rows if r.subject != subject], names, l2)
        for r in held:
            key = (r.rate_hz, r.recording)
            best[key] = max(best.get(key, 0.0), model.probability(r.features))
    return best


def _rates_table(
    scores: dict[tuple[float, str], float],
    recordings: Sequence[SisFallRecording],
    rates: Sequence[float],
    threshold: float,
) -> dict[float, tuple[float, float]]:
    """(sensitivity, specificity) per rate at ``threshold``."""
    out: dict[float, tuple[float, float]] = {}
    for rate in rates:
        hits = [(rec.is_fall, scores.get((rate, rec.name), 0.0) >= threshold) for rec in recordings]
        falls = [hit for is_fall, hit in hits if is_fall]
        adls = [not hit for is_fall, hit in hits if not is_fall]
        out[rate] = (float(np.mean(falls)), float(np.mean(adls)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m lab.train_falls", description=__doc__)
    parser.add_argument("--sisfall", required=True, type=Path, help="SisFall folder")
    parser.add_argument("--rates", default="25,50,100", help="comma-separated rates in Hz")
    parser.add_argument("--features", default=",".join(DEFAULT_FEATURES))
    parser.add_argument("--l2", type=float, default=1.0)
    parser.add_argument("--min-specificity", type=float, default=0.998)
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL_PATH)
    parser.add_argument("--dry-run", action="store_true", help="validate only, write nothing")
    parser.add_argument(
        "--held-out",
        type=float,
        default=None,
        metavar="HZ",
        help="also run the full engine at HZ on each subject with a model fitted without it",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    names = tuple(n.strip() for n in args.features.split(",") if n.strip())
    if not names or set(names) - set(FEATURE_NAMES):
        parser.error(f"--features must be among {', '.join(FEATURE_NAMES)}")
    rates = [float(r) for r in args.rates.split(",")]
    recordings = [read_sisfall(p) for p in list_sisfall(args.sisfall)]
    rows = collect_candidates(recordings, rates, FallSettings())
    print(f"{len(recordings)} recordings, {len(rows)} gated candidates at {rates} Hz")
    scores = loso_scores(rows, names, args.l2)
    grid = np.round(np.arange(0.05, 0.951, 0.05), 2)
    table = {float(th): _rates_table(scores, recordings, rates, float(th)) for th in grid}
    print("leave-one-subject-out, lying path only: threshold -> sensitivity/specificity per rate")
    for th, per_rate in table.items():
        cells = "  ".join(f"{r:g} Hz {se:.2%}/{sp:.2%}" for r, (se, sp) in per_rate.items())
        print(f"  {th:.2f}: {cells}")
    ok = [
        th for th, pr in table.items() if min(sp for _, sp in pr.values()) >= args.min_specificity
    ]
    if not ok:
        print(f"no threshold reaches specificity {args.min_specificity:.2%}", file=sys.stderr)
        return 1
    best_sens = max(min(se for se, _ in table[th].values()) for th in ok)
    tied = [th for th in ok if math.isclose(min(se for se, _ in table[th].values()), best_sens)]
    threshold = float(np.median(tied))
    chosen = _rates_table(scores, recordings, rates, threshold)
    cells = "  ".join(f"{r:g} Hz {se:.2%}/{sp:.2%}" for r, (se, sp) in chosen.items())
    print(f"chosen threshold {threshold:.3f}, leave-one-subject-out: {cells}")
    final = _model(rows, names, args.l2)
    final = FallModel(
        final.feature_names, final.mean, final.scale, final.weights, final.bias, threshold
    )
    weights = {n: round(float(w), 3) for n, w in zip(names, final.weights, strict=True)}
    print(f"threshold {threshold:.3f}; standardised weights {weights}, bias {final.bias:.3f}")
    if not args.dry_run:
        save_fall_model(final, args.out)
        print(f"wrote {args.out}")
    if args.held_out is not None:
        report = held_out_report(args.sisfall, rows, names, args.l2, threshold, args.held_out)
        print(f"\nleave-one-subject-out through the full engine at {args.held_out:g} Hz:")
        print(format_falls(report))
    return 0


def held_out_report(
    sisfall: Path,
    rows: Sequence[CandidateRow],
    names: tuple[str, ...],
    l2: float,
    threshold: float,
    rate_hz: float,
) -> FallReport:
    """Every subject through the full engine with a model fitted without it."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for subject in sorted({r.subject for r in rows}):
            fitted = _model([r for r in rows if r.subject != subject], names, l2)
            path = Path(tmp) / f"without-{subject}.npz"
            save_fall_model(
                FallModel(
                    fitted.feature_names,
                    fitted.mean,
                    fitted.scale,
                    fitted.weights,
                    fitted.bias,
                    threshold,
                ),
                path,
            )
            part = evaluate_falls(
                sisfall, rate_hz, subjects=[subject], fall=FallSettings(model_path=str(path))
            )
            results += part.recordings
    return FallReport(rate_hz=rate_hz, has_gyro=True, block=10, recordings=results)


if __name__ == "__main__":
    sys.exit(main())
