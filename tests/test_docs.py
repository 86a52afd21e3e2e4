"""The repository's markdown: every relative link points at a file or folder that exists; the README's measured
tables are copies of the results files they name."""
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


def section(text: str, heading: str) -> str:
    """The lines of markdown ``text`` from ``heading`` up to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    lines = text.splitlines()
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].startswith("#") and len(lines[i].split(" ")[0]) <= len(level)), len(lines))
    return "\n".join(lines[start:end])


def uncopied_rows(text: str, base: str) -> list[str]:
    """The table rows of markdown ``text`` (but the hand-written targets table, headed ``| target |``) that no
    markdown file it links to, relative to ``base``, holds as a line."""
    sources = set()
    for target in LINK.findall(text):
        path = os.path.join(base, target.split("#")[0])
        if path.endswith(".md") and os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                sources.update(line.strip() for line in f)
    rows, table = [], []
    for line in text.splitlines() + [""]:
        if line.strip().startswith("|"):
            table.append(line.strip())
            continue
        if table and not table[0].startswith("| target |"):
            rows += [row for row in table if row not in sources]
        table = []
    return rows


def test_uncopied_rows_finds_edited_rows(tmp_path):
    (tmp_path / "r.md").write_text("| a | b |\n|---|---|\n| x | 1.0 |\n")
    text = ("[run](r.md)\n\n  | a | b |\n  |---|---|\n  | x | 1.0 |\n  | y | 2.0 |\n\n"
            "| target | met |\n|---|---|\n| z | yes |\n")
    assert uncopied_rows(text, str(tmp_path)) == ["| y | 2.0 |"]


def test_readme_measured_tables_are_copies_of_results():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        measured = section(f.read(), "### Measured")
    assert measured.count("|---") >= 5  # the targets table and the runs' tables
    assert uncopied_rows(measured, REPO) == []
