"""The repository's markdown: every relative link points at a file or folder that exists."""
import os
import re
import subprocess

from conftest import REPO

LINK = re.compile(r"\]\(([^)\s]+)\)")


def broken_links(path: str) -> list[str]:
    """The relative link targets in markdown file ``path`` that do not exist (anchors and URLs not checked)."""
    with open(path, encoding="utf-8") as f:
        targets = [m.group(1).split("#")[0] for m in LINK.finditer(f.read())]
    return [t for t in targets if t and not re.match(r"[a-z]+:", t)
            and not os.path.exists(os.path.join(os.path.dirname(path), t))]


def test_broken_links_finds_missing_targets(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "a.md").write_text("x")
    page = tmp_path / "docs" / "page.md"
    page.write_text("[ok](../a.md) [anchor](../a.md#top) [web](https://example.org/x) [gone](../b.md) [self](#s)")
    assert broken_links(str(page)) == ["../b.md"]


def test_every_relative_link_resolves():
    files = subprocess.run(["git", "-C", REPO, "ls-files", "*.md"], capture_output=True, text=True,
                           check=True).stdout.split()
    assert "README.md" in files and "docs/speed.md" in files
    broken = {f: b for f in files if (b := broken_links(os.path.join(REPO, f)))}
    assert broken == {}
