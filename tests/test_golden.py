"""Runs on real imagery decide what they decided before: every tile's status, reason, scene,
cluster, ranks and scores, the counts and the summary, for six cases (both stage-1 rules, the
bank, near-duplicates, dates and per-cell caps, uint16 scaling, a re-selection).

The expected decisions (``tests/golden/runs.json``) were recorded by ``tests/golden/make_golden.py``
from the code before a refactor; regenerate them only for a change of behaviour that is meant.
"""

import json
import math

from .golden.make_golden import COLUMNS, HERE, record_cases


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=0, abs_tol=1e-4)
    return a == b


def test_runs_decide_as_recorded(tmp_path):
    expected = json.loads((HERE / "runs.json").read_text())
    got = json.loads(json.dumps(record_cases(tmp_path)))  # the same JSON types as the recording
    assert set(got) == set(expected)
    for name, want in expected.items():
        have = got[name]
        assert have["counts"] == want["counts"], name
        assert have["summary"] == want["summary"], name
        assert have["stage1"] == want["stage1"] and have["stage2"] == want["stage2"], name
        assert set(have["tiles"]) == set(want["tiles"]), name
        differ = [(tile, column, want["tiles"][tile][i], have["tiles"][tile][i])
                  for tile in want["tiles"] for i, column in enumerate(COLUMNS)
                  if not _same(want["tiles"][tile][i], have["tiles"][tile][i])]
        assert not differ, f"{name}: {len(differ)} value(s) differ, e.g. {differ[:5]}"
