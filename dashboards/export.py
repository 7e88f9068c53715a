"""The dashboards as files, for GitOps users and for Grafana/Kibana file provisioning.

`dashboards/grafana/<uid>.json` and `dashboards/kibana/paywatch.ndjson` in the repository
are this output with the defaults; a test keeps them equal to what the code generates.
"""

from __future__ import annotations

import json
from pathlib import Path

from paywatch.dashboards import grafana, kibana


def export_files(
    kibana_url: str = grafana.DEFAULT_KIBANA_URL, environments: tuple[str, ...] = grafana.DEFAULT_ENVIRONMENTS
) -> dict[str, str]:
    """Relative path → file content."""
    files = {
        f"grafana/{uid}.json": json.dumps(model, indent=2, sort_keys=True) + "\n"
        for uid, model in grafana.build_all(kibana_url, environments).items()
    }
    files["kibana/paywatch.ndjson"] = kibana.ndjson()
    return files


def write_export(directory: Path, **kwargs: object) -> list[Path]:
    written = []
    for relative, content in export_files(**kwargs).items():  # type: ignore[arg-type]
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        written.append(path)
    return written
