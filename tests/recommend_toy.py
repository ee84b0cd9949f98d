"""A toy purchase history with a planted pattern, shared by the recommendation tests.

Four groups; group ``g`` has two companions (``g0001``, ``g0002``) always
bought together, and two variants (``g0011``, ``g0012``) of which a basket
holds exactly one. So: frequently bought together with a variant = its
group's companions; most similar to a variant = the other variant (same
companions, never in the same basket). One basket in three also holds a
companion of the next group (noise).
"""

from __future__ import annotations

import datetime as dt

import numpy as np

GROUPS = ("1", "2", "3", "4")


def companions(g: str) -> tuple[str, str]:
    return f"{g}0001", f"{g}0002"


def variants(g: str) -> tuple[str, str]:
    return f"{g}0011", f"{g}0012"


def toy_baskets(n: int = 240, seed: int = 3) -> list[tuple[str, tuple[str, ...]]]:
    """``n`` (visitor, items) baskets with the planted pattern."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        g = GROUPS[i % len(GROUPS)]
        items = [variants(g)[int(rng.integers(2))], *companions(g)]
        if i % 3 == 0:
            nxt = GROUPS[(i + 1) % len(GROUPS)]
            items.append(companions(nxt)[int(rng.integers(2))])
        out.append((f"v{i % 40}", tuple(items)))
    return out


def toy_times(n: int) -> list[dt.datetime]:
    t0 = dt.datetime(2011, 1, 1, tzinfo=dt.timezone.utc)
    return [t0 + dt.timedelta(hours=i) for i in range(n)]
