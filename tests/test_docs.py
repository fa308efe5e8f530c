"""The documentation: README.md stays a short start whose links hold, and the MkDocs site (mkdocs.yml,
docs/) builds with --strict: no broken link or anchor, no page left out of the nav, and the CLI
reference generated from the typer app (scripts/cli_reference.py)."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# [text](target) and ![alt](target), with an optional "title"; the target up to a space or ')'.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def readme_links() -> list[tuple[str, str]]:
    """README's relative links, as (path, anchor); web addresses and in-page anchors left out."""
    links = []
    for target in LINK.findall(README.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        path, _, anchor = target.partition("#")
        links.append((path, anchor))
    return links


def test_readme_is_short_and_names_the_test_command():
    lines = README.read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines: move the details into a page of docs/"
    # CI runs the README's test command (.ci/run).
    assert "make test" in README.read_text()


def test_every_relative_link_of_the_readme_points_at_a_file():
    links = readme_links()
    assert links, "README.md links to no page of docs/"
    missing = sorted({path for path, _ in links if not (ROOT / path).exists()})
    assert not missing, f"README.md links to files that do not exist: {missing}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (the docs extra: pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                            str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stderr[-5000:]
    return out


def test_the_site_builds_strictly_with_the_generated_cli_reference(site: Path):
    reference = (site / "cli" / "index.html").read_text()
    for command in ("optimize", "profile", "serve", "report", "zoo", "doctor", "clean", "images build"):
        assert f"nav-orch {command}</code>" in reference, command
    assert (site / "report.png").is_file() and (site / "data").is_dir()


def test_the_readme_anchors_into_the_docs_exist(site: Path):
    for path, anchor in readme_links():
        if not anchor or not path.startswith("docs/") or not path.endswith(".md"):
            continue
        page = Path(path).relative_to("docs").with_suffix("")
        html = site / ("index.html" if page.name == "index" else page / "index.html")
        assert f'id="{anchor}"' in html.read_text(), f"README.md: {path}#{anchor} is not an anchor of that page"
