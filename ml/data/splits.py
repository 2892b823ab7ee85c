"""Train/test splits by subject, stratified, deterministic.

Slices of one subject are near-identical, so an image-level split leaks: a model can be tested
on a neighbour of a slice it trained on. The default is therefore a subject-level split; the
design's image-level split exists only for comparison.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence

import numpy as np


def _largest_remainder(sizes: dict[Hashable, int], total: int, rng: np.random.Generator):
    """Share ``total`` over keys in proportion to ``sizes`` (ties broken by a seeded order)."""
    keys = sorted(sizes, key=repr)
    n = sum(sizes.values())
    if n == 0:
        return dict.fromkeys(keys, 0)
    quotas = {k: sizes[k] * total / n for k in keys}
    alloc = {k: int(np.floor(quotas[k])) for k in keys}
    left = total - sum(alloc.values())
    tiebreak = {k: float(v) for k, v in zip(keys, rng.random(len(keys)), strict=True)}
    for k in sorted(keys, key=lambda k: (-(quotas[k] - alloc[k]), tiebreak[k]))[:left]:
        alloc[k] += 1
    return alloc


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def stratified_split(
    units: Sequence[str],
    strata: Sequence[Hashable],
    test_fraction: float = 0.2,
    seed: int = 42,
    groups: Sequence[Hashable] | None = None,
) -> dict[str, str]:
    """Assign each unit (a subject, or an image) to ``"train"`` or ``"test"``.

    Without ``groups`` the number of test units is ``round(n * test_fraction)``. With
    ``groups`` (the source of each unit) every group gets its own ``round(n_g * test_fraction)``
    test units, so a small source is still represented in the test split instead of losing
    its share to larger ones; the overall fraction may then differ a little. In both cases at
    least one unit goes to test and one stays in training when there are two or more, and the
    test units are spread over the strata by largest remainder. Which units go to test inside
    a stratum is a seeded permutation of the sorted units, so the same inputs always give the
    same split.

    Args:
        units: unit ids (unique).
        strata: one stratum key per unit (for example the AS status).
        test_fraction: share of units for the test split, in [0, 1).
        seed: random seed.
        groups: optional group per unit (for example the source), allocated separately.

    Returns:
        unit id -> split name.
    """
    if len(units) != len(strata) or (groups is not None and len(groups) != len(units)):
        raise ValueError("units, strata and groups differ in length")
    if len(set(units)) != len(units):
        raise ValueError("unit ids must be unique")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError("test_fraction must be in [0, 1)")
    rng = np.random.default_rng(seed)
    group_of = list(groups) if groups is not None else [None] * len(units)

    def n_test_for(n: int) -> int:
        k = _round_half_up(n * test_fraction)
        if n >= 2 and test_fraction > 0:
            k = min(max(k, 1), n - 1)
        return k

    members: dict[Hashable, dict[Hashable, list[str]]] = defaultdict(lambda: defaultdict(list))
    for u, s, g in zip(units, strata, group_of, strict=True):
        members[g][s].append(u)
    out: dict[str, str] = {}
    for g in sorted(members, key=repr):
        by_stratum = members[g]
        n_g = sum(len(v) for v in by_stratum.values())
        alloc = _largest_remainder({k: len(v) for k, v in by_stratum.items()}, n_test_for(n_g), rng)
        for k in sorted(by_stratum, key=repr):
            ordered = sorted(by_stratum[k])
            test_idx = set(rng.permutation(len(ordered))[: alloc[k]].tolist())
            for i, u in enumerate(ordered):
                out[u] = "test" if i in test_idx else "train"
    return out


def subject_strata(
    subject_ids: Sequence[str], sources: Sequence[str], status: Sequence[int]
) -> tuple[list[str], list[tuple[str, int]]]:
    """Per subject (sorted): (source, majority AS status over its slices)."""
    pos: dict[str, list[int]] = defaultdict(list)
    src: dict[str, str] = {}
    for s, so, st in zip(subject_ids, sources, status, strict=True):
        pos[s].append(int(st))
        src.setdefault(s, so)
    subjects = sorted(pos)
    strata = [(src[s], int(np.mean(pos[s]) >= 0.5)) for s in subjects]
    return subjects, strata


def validation_split(
    subject_ids: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, val) with whole subjects held out; at least one subject each when possible.

    Args:
        subject_ids: (N,) subject of each image.
        fraction: share of subjects to hold out (0 disables validation).
        seed: shuffles the subjects.
    """
    subjects = np.array(sorted(set(subject_ids.tolist())))
    n = len(subjects)
    if fraction <= 0 or n < 2:
        return np.arange(len(subject_ids)), np.array([], dtype=int)
    rng = np.random.default_rng(seed)
    rng.shuffle(subjects)
    n_val = min(n - 1, max(1, round(n * fraction)))
    held = set(subjects[:n_val].tolist())
    is_val = np.array([s in held for s in subject_ids.tolist()])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)
