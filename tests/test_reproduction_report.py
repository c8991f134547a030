"""REPRODUCTION.md quotes the committed verdicts: its claim table must say, claim by claim, what
the workflow's `results/cpu/claims.csv` decides, or *not decided yet* while that file is not
written. A verdict typed by hand that the runs do not support fails here."""
from __future__ import annotations

import re

import pandas as pd
from workflow_helpers import REPO

from crt_repro.report.claims import combine

CLAIMS = "abcdef"
UNDECIDED = "not decided yet"


def report_verdicts(text: str) -> dict[str, list[str]]:
    """Claim letter -> the verdict cells (last column) of the REPRODUCTION.md rows that open with it."""
    verdicts = {}
    for line in text.splitlines():
        m = re.match(r"\|\s*\(([a-f])\)", line)
        if m:
            verdicts.setdefault(m.group(1), []).append(line.strip().strip("|").split("|")[-1].strip())
    return verdicts


def test_reproduction_md_quotes_the_committed_claims():
    verdicts = report_verdicts((REPO / "REPRODUCTION.md").read_text())
    assert sorted(verdicts) == list(CLAIMS) and all(len(v) == 1 for v in verdicts.values()), verdicts
    claims_csv = REPO / "results/cpu/claims.csv"
    if not claims_csv.exists():
        assert {v[0] for v in verdicts.values()} == {UNDECIDED}
        return
    table = pd.read_csv(claims_csv)
    for claim in CLAIMS:
        decided = combine(list(table.loc[table["claim"] == claim, "verdict"]))
        # "not resolved" may say at how many seeds: "not resolved at 3 seeds".
        assert re.fullmatch(rf"\**{re.escape(decided)}( at \d+ seeds)?\**", verdicts[claim][0]), (claim, decided)


def test_report_verdicts_reads_the_last_cell_of_each_claim_row():
    text = "| claim | x | verdict |\n|---|---|---|\n| (a) one | 3 | held |\n| (f) two | – | **did not hold** |\n"
    assert report_verdicts(text) == {"a": ["held"], "f": ["**did not hold**"]}
