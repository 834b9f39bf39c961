"""Copy the Serve configs into the RayService manifests' `serveConfigV2` blocks.

    python deploy/kuberay/sync_serve_config.py          # rewrite the manifests
    python deploy/kuberay/sync_serve_config.py --check  # exit 1 if one has drifted

Each manifest embeds one config file verbatim (comments included) as a YAML block scalar;
everything else in the manifest is left as written. tests/unit/deploy/test_kuberay_manifest.py
fails when the parsed block and the parsed file differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
KUBERAY_DIR = REPO_ROOT / "deploy" / "kuberay"

# manifest -> the Serve config it deploys
MANIFESTS: dict[Path, Path] = {
    KUBERAY_DIR / "rayservice.yaml": REPO_ROOT / "serve_config.yaml",
    KUBERAY_DIR / "rayservice.gpu.yaml": REPO_ROOT / "serve_config.gpu.yaml",
}

_KEY = "  serveConfigV2: |"
_INDENT = " " * 4


def embed(manifest_text: str, config_text: str) -> str:
    """`manifest_text` with the block under `  serveConfigV2: |` replaced by `config_text`."""
    lines = manifest_text.splitlines()
    start = lines.index(_KEY) + 1
    end = start
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith(_INDENT)):
        end += 1
    while end > start and not lines[end - 1].strip():
        end -= 1  # blank lines after the block belong to the manifest
    block = [f"{_INDENT}{line}" if line.strip() else "" for line in config_text.splitlines()]
    return "\n".join([*lines[:start], *block, *lines[end:]]) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    drifted = []
    for manifest, config in MANIFESTS.items():
        current = manifest.read_text()
        wanted = embed(current, config.read_text())
        if current == wanted:
            continue
        drifted.append(manifest.relative_to(REPO_ROOT))
        if not check:
            manifest.write_text(wanted)
    for path in drifted:
        print(f"{'drifted' if check else 'rewrote'}: {path}")
    return 1 if check and drifted else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
