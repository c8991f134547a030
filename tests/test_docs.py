"""The docs hold together: the README stays short, its layout names every module of the package,
and every local link of the README, REPRODUCTION.md and docs/ leads to a file."""
from __future__ import annotations

import re

from workflow_helpers import REPO

README = (REPO / "README.md").read_text()
PAGES = [REPO / "README.md", REPO / "REPRODUCTION.md", REPO / "workflow/README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_the_readme_is_short():
    assert len(README.splitlines()) < 200


def test_the_readme_layout_names_every_module():
    layout = README.split("## Layout\n", 1)[1].split("```")[1]
    named = set(re.findall(r"^\s*(\S+)", layout, flags=re.M))
    package = REPO / "crt_repro"
    modules = {p.relative_to(package).as_posix() for p in package.rglob("*.py")
               if p.name != "__init__.py" or p.parent.name == "models"}
    assert not {m for m in modules if m not in named}, sorted(named)


def test_local_links_lead_to_files():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            path = (page.parent / target).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert not broken, broken
