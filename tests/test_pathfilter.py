"""Path filter rules, table-driven, with the agents' real default extensions and excludes."""

from __future__ import annotations

from pathlib import PurePath, PurePosixPath

import pytest

from sidecar.domain import DEFAULT_EXCLUDES, DEFAULT_EXTENSIONS
from sidecar.pathfilter import included


def defaults(rel: str, *, is_dir: bool = False, extensions: tuple[str, ...] = DEFAULT_EXTENSIONS,
             include_globs: tuple[str, ...] = (), exclude: tuple[str, ...] = DEFAULT_EXCLUDES
             ) -> bool:
    return included(PurePosixPath(rel), extensions=extensions, include_globs=include_globs,
                    exclude=exclude, is_dir=is_dir)


@pytest.mark.parametrize(("rel", "is_dir", "expected"), [
    # directories
    (".git", True, False),
    ("src/.git", True, False),
    ("node_modules", True, False),
    ("web/node_modules", True, False),
    (".venv", True, False),
    ("Projects", True, True),
    ("notes/2024", True, True),
    ("reports.tmp", True, False),  # name patterns apply to folders too
    # files
    ("notes.md", False, True),
    ("Docs/Report.PDF", False, True),
    (".hidden.md", False, False),
    ("a/.env", False, False),
    ("~$report.docx", False, False),
    ("team/~$Budget.docx", False, False),
    ("x.swp", False, False),
    ("a.tmp", False, False),
    ("b.part", False, False),
    ("movie.mp4.crdownload", False, False),
    (".DS_Store", False, False),
    ("photos/.ds_store", False, False),
    ("desktop.ini", False, False),
    ("Desktop.ini", False, False),
    ("Thumbs.db", False, False),
    ("song.mp3", False, False),
    ("Makefile", False, False),
    # a file under an excluded folder (watcher events name files directly)
    ("node_modules/pkg/README.md", False, False),
    (".git/COMMIT_EDITMSG.txt", False, False),
    ("web/node_modules/a/b.json", False, False),
    ("a.tmp/inside.md", False, False),
])
def test_defaults(rel: str, is_dir: bool, expected: bool) -> None:
    assert defaults(rel, is_dir=is_dir) is expected


def test_dir_only_patterns_do_not_match_files() -> None:
    assert defaults("node_modules", is_dir=True) is False
    assert defaults("node_modules", extensions=()) is True  # a file named node_modules
    assert defaults("notes/.git", extensions=()) is False  # ".*" still hides it


@pytest.mark.parametrize(("extensions", "rel", "expected"), [
    ((".md",), "a.MD", True),
    ((".MD",), "a.md", True),
    (("md",), "a.md", True),
    (("PDF",), "x/y/Scan.Pdf", True),
    ((" .txt ",), "a.txt", True),
    ((".md",), "a.txt", False),
    ((".md",), "md", False),
    ((".gz",), "backup.tar.gz", True),
    ((".tar.gz",), "backup.tar.gz", False),  # suffix is the last extension only
])
def test_extensions(extensions: tuple[str, ...], rel: str, expected: bool) -> None:
    assert defaults(rel, extensions=extensions) is expected


@pytest.mark.parametrize(("globs", "rel", "expected"), [
    (("notes/**/*.md",), "notes/a.md", True),
    (("notes/**/*.md",), "notes/2024/06/a.md", True),
    (("notes/**/*.md",), "Notes/X/A.MD", True),
    (("notes/**/*.md",), "other/notes/a.md", False),
    (("notes/**/*.md",), "notes/a.txt", False),
    (("**/notes/*.md",), "deep/er/notes/a.md", True),
    (("**/notes/*.md",), "notes/a.md", True),
    (("notes/*.md",), "notes/sub/a.md", False),
    (("*.org",), "deep/todo.org", True),
    (("TODO*",), "x/TODO.txt", True),
    (("journal/**",), "journal/2024/day.log", True),
    (("report-??.txt",), "report-01.txt", True),
    (("report-??.txt",), "report-001.txt", False),
    (("report-[0-9].txt",), "report-7.txt", True),
    (("report-[!0-9].txt",), "report-x.txt", True),
    (("report-[!0-9].txt",), "report-7.txt", False),
    (("a[b.txt",), "a[b.txt", True),  # unclosed bracket is literal
])
def test_include_globs_only(globs: tuple[str, ...], rel: str, expected: bool) -> None:
    assert defaults(rel, extensions=(), include_globs=globs) is expected


def test_extensions_or_globs() -> None:
    kw = {"extensions": (".md",), "include_globs": ("journal/**/*.log",)}
    assert defaults("a.md", **kw) is True
    assert defaults("journal/2024/day.log", **kw) is True
    assert defaults("other/day.log", **kw) is False


def test_everything_when_no_extensions_and_no_globs() -> None:
    assert defaults("any/file.xyz", extensions=()) is True
    assert defaults("Makefile", extensions=()) is True
    assert defaults("a.tmp", extensions=()) is False  # excludes still apply
    assert defaults(".hidden", extensions=(), exclude=()) is True


def test_globs_do_not_apply_to_directories() -> None:
    assert defaults("anything", is_dir=True, extensions=(".md",),
                    include_globs=("notes/**/*.md",)) is True


@pytest.mark.parametrize(("exclude", "rel", "is_dir", "expected"), [
    (("build/",), "build", True, False),
    (("build/",), "src/build", True, False),
    (("build/",), "build", False, True),
    (("build/",), "build/out.txt", False, False),
    (("docs/private",), "docs/private", True, False),
    (("docs/private",), "docs/private/a.md", False, False),
    (("docs/private",), "x/docs/private", True, True),  # a pattern with "/" is rooted
    (("**/drafts/",), "a/b/drafts", True, False),
    (("**/*.bak",), "a/b/c.bak", False, False),
    (("/top.md",), "top.md", False, False),
    (("/top.md",), "sub/top.md", False, True),
    (("*.LOG",), "Server.log", False, False),
    (("secret*",), "Secret-plan.md", False, False),
    ((), ".git", True, True),
])
def test_custom_excludes(exclude: tuple[str, ...], rel: str, is_dir: bool,
                         expected: bool) -> None:
    assert defaults(rel, is_dir=is_dir, extensions=(), exclude=exclude) is expected


def test_root_and_pure_path_types() -> None:
    assert defaults("", is_dir=True) is True
    assert included(PurePath("notes", "a.md"), extensions=(".md",), include_globs=(),
                    exclude=DEFAULT_EXCLUDES, is_dir=False) is True
