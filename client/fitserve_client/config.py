"""Where the CLI and `Client()` find the service: flags, then the environment
(`FITSERVE_URL`, `FITSERVE_API_KEY`), then the file `fitserve login` writes (`$FITSERVE_CONFIG`,
else `$XDG_CONFIG_HOME/fitserve/config.json`, else `~/.config/fitserve/config.json`), mode 0600:
it holds an API key.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class Credentials:
    url: str
    api_key: str | None


def config_path() -> Path:
    if explicit := os.environ.get("FITSERVE_CONFIG"):
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "fitserve" / "config.json"


def read_config(path: Path | None = None) -> dict[str, Any]:
    path = path or config_path()
    try:
        loaded = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    return loaded if isinstance(loaded, dict) else {}


def save_config(url: str, api_key: str, path: Path | None = None) -> Path:
    """Write the file with mode 0600 from its first byte: a temporary file made 0600, then
    renamed over the old one, so the key is never readable by others, not even for a moment."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file that was already there
        with os.fdopen(fd, "w") as out:
            json.dump({"url": url, "api_key": api_key}, out, indent=1)
            out.write("\n")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def resolve(url: str | None = None, api_key: str | None = None) -> Credentials:
    """The service and key to use: arguments, then environment, then the config file."""
    stored = read_config() if url is None or api_key is None else {}
    return Credentials(
        url=(url or os.environ.get("FITSERVE_URL") or stored.get("url") or DEFAULT_URL).rstrip("/"),
        api_key=api_key or os.environ.get("FITSERVE_API_KEY") or stored.get("api_key"),
    )
