"""REPRODUCTION.md quotes the committed verdicts: its claim table, and the paragraph that opens
with each claim, must say, claim by claim, what the workflow's `results/cpu/claims.csv` decides,
or *not decided yet* while that file is not written; before it, (d) and (f), which no run decides,
as `results/cpu/cost_claims.csv` decides them. A verdict typed by hand that the measurements do not
support, or a decided claim left without its paragraph, fails here."""
from __future__ import annotations

import re

import pandas as pd
from workflow_helpers import REPO

from crt_repro.report.claims import combine

CLAIMS = "abcdef"
UNDECIDED = "not decided yet"


def _by_claim(text: str, opening: str, verdict) -> dict[str, list[str]]:
    """Claim letter (group 1 of ``opening``) -> ``verdict(match)`` of each line that opens so."""
    found = {}
    for line in text.splitlines():
        m = re.match(opening, line)
        if m:
            found.setdefault(m.group(1), []).append(verdict(m))
    return found


def report_verdicts(text: str) -> dict[str, list[str]]:
    """Claim letter -> the verdict cells (last column) of the REPRODUCTION.md rows that open with it."""
    return _by_claim(text, r"\|\s*\(([a-f])\)", lambda m: m.string.strip().strip("|").split("|")[-1].strip())


def paragraph_verdicts(text: str) -> dict[str, list[str]]:
    """Claim letter -> the verdicts that open its paragraphs: "**(e) did not hold.** ..." or
    "**(f) did not hold, on parameters; ...**" (the verdict runs to the first period or comma)."""
    return _by_claim(text, r"\*\*\(([a-f])\) ([^.,*]+)", lambda m: m.group(2).strip())


def test_reproduction_md_quotes_the_committed_claims():
    text = (REPO / "REPRODUCTION.md").read_text()
    verdicts = report_verdicts(text)
    assert sorted(verdicts) == list(CLAIMS) and all(len(v) == 1 for v in verdicts.values()), verdicts
    paragraphs = paragraph_verdicts(text)
    claims_csv, cost_csv = REPO / "results/cpu/claims.csv", REPO / "results/cpu/cost_claims.csv"
    decided = CLAIMS if claims_csv.exists() else "df" if cost_csv.exists() else ""
    assert {verdicts[c][0] for c in CLAIMS if c not in decided} <= {UNDECIDED}
    assert sorted(paragraphs) == list(decided) and all(len(v) == 1 for v in paragraphs.values()), paragraphs
    if not decided:
        return
    table = pd.read_csv(claims_csv if claims_csv.exists() else cost_csv)
    for claim in decided:
        decided = combine(list(table.loc[table["claim"] == claim, "verdict"]))
        # "not resolved" may say at how many seeds: "not resolved at 3 seeds".
        quoted = rf"{re.escape(decided)}( at \d+ seeds)?"
        assert re.fullmatch(rf"\**{quoted}\**", verdicts[claim][0]), (claim, decided)
        assert re.fullmatch(quoted, paragraphs[claim][0]), (claim, decided, paragraphs[claim][0])


def test_report_verdicts_reads_the_last_cell_of_each_claim_row():
    text = "| claim | x | verdict |\n|---|---|---|\n| (a) one | 3 | held |\n| (f) two | – | **did not hold** |\n"
    assert report_verdicts(text) == {"a": ["held"], "f": ["**did not hold**"]}


def test_paragraph_verdicts_read_the_verdict_that_opens_each_claim_paragraph():
    text = "**(a) not resolved at 3 seeds.** The means\n**(f) did not hold, on parameters; x.** At\n(b) held\n"
    assert paragraph_verdicts(text) == {"a": ["not resolved at 3 seeds"], "f": ["did not hold"]}
