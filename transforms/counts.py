"""Job counts summed inside the pipeline and written beside its staged outputs, for the launcher's summary.

A step emits small dicts of counts (``{"read": 120, "REFUND": 2}``) as a
side output; :class:`WriteCounts` sums them (one global combine: a few
integers, whatever the data size) and writes one JSON file; after the job,
:func:`read_counts` gives the launcher the totals. The data is counted
where it is read, by the workers, so the launcher never reads it a
second time.

>>> sum_counts([{"read": 2, "used": 1}, {"read": 3}])
{'read': 5, 'used': 1}
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping

import apache_beam as beam

__all__ = ["WriteCounts", "read_counts", "sum_counts"]


def sum_counts(dicts: Iterable[Mapping[str, int]]) -> dict:
    total: Counter = Counter()
    for d in dicts:
        total.update(d)
    return dict(total)


def _write(counts: Mapping[str, int], path: str) -> None:
    from transforms.io import write_text

    write_text(json.dumps(dict(sorted(counts.items())), indent=2) + "\n", path)


class WriteCounts(beam.PTransform):
    """Count dicts -> their sum as JSON at ``path`` (written once, ``{}`` when no dict arrives)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def expand(self, counts):
        return counts | "Sum" >> beam.CombineGlobally(sum_counts) | "Write" >> beam.Map(_write, self.path)


def read_counts(path: str) -> dict:
    """The counts :class:`WriteCounts` wrote at ``path`` (local or any FileSystems scheme)."""
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as f:
        return json.loads(f.read().decode("utf-8"))
