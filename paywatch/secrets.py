"""Secrets come from the environment or a mounted file, never from the YAML file itself."""

from __future__ import annotations

import os
from pathlib import Path


def read_secret(env: str | None, file: Path | None = None) -> str | None:
    """A secret from the environment, else from a file; never from the YAML itself."""
    if env and os.environ.get(env):
        return os.environ[env]
    if file is not None:
        return Path(file).read_text().strip()
    return None
