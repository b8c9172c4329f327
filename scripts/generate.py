"""Regenerate the generated files committed to the repository (`make generate`); tests check for drift."""

from __future__ import annotations

from pathlib import Path

from kpimon.streams.schemas import schema_documents
from monitoring.generate import generated_files as monitoring_files

ROOT = Path(__file__).resolve().parent.parent


def generated_files() -> dict[Path, str]:
    """Path (relative to the repository) -> the content the code generates for it."""
    files = {Path("docs/schemas") / name: text for name, text in schema_documents().items()}
    files.update(monitoring_files())  # Prometheus rules and config, Grafana dashboards and provisioning
    return files


def main() -> None:
    for path, text in generated_files().items():
        target = ROOT / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
