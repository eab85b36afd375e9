"""Where the sidecar keeps its files: platform dirs unless a flag or env var says otherwise."""

from __future__ import annotations

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
        for d in (self.data_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self
