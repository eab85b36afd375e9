"""Where the sidecar keeps its files: platform dirs unless a flag or env var says otherwise."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from sidecar.settings import Config

APP_NAME = "sidecar"
APP_AUTHOR = "sidecar"


@dataclass(frozen=True, slots=True)
class Paths:
    """Resolved directories and the files inside them."""

    data_dir: Path
    log_dir: Path
    model_dir: Path

    @property
    def database(self) -> Path:
        return self.data_dir / "sidecar.sqlite3"

    @property
    def lock_file(self) -> Path:
        return self.data_dir / "sidecar.lock"

    @property
    def token_file(self) -> Path:
        return self.data_dir / "token"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "sidecar.log"

    @classmethod
    def from_config(cls, config: Config) -> Paths:
        import platformdirs

        data = config.data_dir or Path(platformdirs.user_data_dir(APP_NAME, APP_AUTHOR))
        log = config.log_dir or Path(platformdirs.user_log_dir(APP_NAME, APP_AUTHOR))
        # models are large and shared by every data dir (tests, profiles): not under data_dir
        shared = Path(platformdirs.user_data_dir(APP_NAME, APP_AUTHOR))
        models = config.model_dir or shared / "models"
        return cls(Path(data).resolve(), Path(log).resolve(), Path(models).resolve())

    def ensure(self) -> Paths:
        """Create the data and log directories private (0700), tightening existing ones.

        Raises ``OSError`` (its ``filename`` says which directory) if one cannot be made.
        """
        for d in (self.data_dir, self.log_dir):
            private_dir(d)
        for f in (self.lock_file, self.token_file):
            private_file(f)
        for f in self.log_dir.glob(f"{self.log_file.name}*"):  # the log and its rotations
            private_file(f)
        return self


#: What the sidecar's own files may be: the user's alone (POSIX; Windows ACLs are inherited).
DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> None:
    """``mkdir -p`` with mode 0700 for what it creates; an existing ``path`` loses group and
    other access (only the directory itself: parents are the user's, not ours)."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    _tighten(path, DIR_MODE)


def private_file(path: Path) -> None:
    """If ``path`` exists, take group and other access away (owner bits are left as they are:
    a file the user made read-only stays read-only)."""
    _tighten(path, FILE_MODE | stat.S_IXUSR)


def _tighten(path: Path, allowed: int) -> None:
    if os.name != "posix":
        return
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    mode = stat.S_IMODE(st.st_mode)
    if mode & ~allowed and st.st_uid == os.geteuid():
        try:
            os.chmod(path, mode & allowed)
        except OSError as exc:  # immutable, read-only mount: what then fails says so itself
            logging.getLogger(__name__).warning("cannot make %s private (%s)", path,
                                                exc.strerror or exc)
