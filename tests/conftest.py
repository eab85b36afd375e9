"""Shared fixtures: a real daemon process in tmp_path and a real WebSocket client."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sidecar.client import DaemonProcess, SidecarClient


def pytest_configure(config: pytest.Config) -> None:
    """Tests keep their folders in the temp dir: let every daemon and CLI run read there."""
    roots = [tempfile.gettempdir(), str(Path.home())]
    if config.option.basetemp:
        roots.append(str(Path(config.option.basetemp).resolve()))
    os.environ["SIDECAR_ALLOWED_ROOTS"] = os.pathsep.join(roots)


@pytest.fixture
def token() -> str:
    return "tok-" + secrets.token_urlsafe(24)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
async def daemon(data_dir: Path, token: str) -> AsyncIterator[DaemonProcess]:
    proc = await DaemonProcess.start(data_dir, token=token)
    try:
        yield proc
    finally:
        await proc.stop()


@pytest.fixture
async def client(daemon: DaemonProcess) -> AsyncIterator[SidecarClient]:
    c = await daemon.connect()
    try:
        yield c
    finally:
        await c.close()


# -- the real default model ----------------------------------------------------------------


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """Where ``sidecar models pull`` (run by scripts/setup) put the default GGUF."""
    from sidecar.paths import Paths
    from sidecar.settings import Config

    return Paths.from_config(Config.load({})).model_dir


@pytest.fixture(scope="session")
def default_model(model_dir: Path) -> Path:
    from sidecar.model_files import load_manifest, resolve

    model = resolve(load_manifest().default, model_dir)
    if not model.path.is_file():
        pytest.fail(f"the default model is missing at {model.path}: run `sidecar models pull` "
                    "(scripts/setup does)")
    return model.path


@pytest.fixture(scope="session")
def local_engine(default_model: Path, model_dir: Path):  # type: ignore[no-untyped-def]
    """One LocalExtractor for the whole session: the model loads once and stays warm."""
    from sidecar.extractors.local import LocalExtractor
    from sidecar.paths import Paths
    from sidecar.settings import Config

    config = Config.load({"model_dir": model_dir, "model_idle_unload_seconds": 3600.0})
    engine = LocalExtractor.from_config(config, Paths.from_config(config))
    yield engine
    engine.runtime._executor.submit(engine.runtime._unload_sync).result()
    engine.runtime._executor.shutdown(wait=True)


@pytest.fixture(scope="session")
def llama_server(default_model: Path):  # type: ignore[no-untyped-def]
    """A real OpenAI-compatible server (llama-cpp-python[server]) on loopback: its /v1 URL."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(default_model.parent / "llama-server-test.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(default_model),
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
         "--n_threads", str(max(1, (os.cpu_count() or 2) // 2)), "--model_alias", "default"],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "/models", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"llama_cpp.server did not start (see {log.name})")
        time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture
def keyring_file(tmp_path: Path) -> Iterator[Path]:
    """A plaintext keyring in tmp_path (keyrings.alt) standing in for the OS keyring."""
    import keyring
    from keyrings.alt.file import PlaintextKeyring

    previous = keyring.get_keyring()
    backend = PlaintextKeyring()
    backend.file_path = str(tmp_path / "keyring.cfg")  # instance-level override
    keyring.set_keyring(backend)
    yield tmp_path / "keyring.cfg"
    keyring.set_keyring(previous)
