"""Pack files for a machine that can only receive them in loads of limited size, and unpack them
there: the wheels the GPU check needs on a GPU machine without network (see docs/models.md).

    python scripts/gpu_stage.py pack --src DIR --out STAGE [--part-mib 60]
    python scripts/gpu_stage.py unpack --stage STAGE --dest DIR

`pack` spreads the files of DIR over STAGE/part1, part2, ... (each at most --part-mib, files cut
into chunks where a part fills up) and writes manifest.json into the last part. The parts
can then travel one at a time; `unpack`, once all are there, joins the chunks back into DIR's
files and checks each one's SHA-256, so a missing or damaged part fails loudly instead of
installing half a wheel.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

MIB = 1 << 20
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Chunk:
    part: str
    name: str
    size: int


@dataclass(frozen=True)
class PackedFile:
    name: str
    sha256: str
    size: int
    chunks: list[Chunk]


def pack(src: Path, out: Path, part_bytes: int) -> list[PackedFile]:
    """Files of `src` into `out/partN` folders of at most `part_bytes` each, in name order."""
    if part_bytes < 1:
        raise ValueError("part_bytes must be positive")
    files = sorted(p for p in src.iterdir() if p.is_file())
    if not files:
        raise ValueError(f"{src} holds no files to pack")
    part, used = 1, 0
    packed: list[PackedFile] = []
    for path in files:
        chunks: list[Chunk] = []
        digest = hashlib.sha256()
        with path.open("rb") as stream:
            # Each piece fills what is left of the current part, so only the last part is short.
            while piece := stream.read(part_bytes - used):
                folder = out / f"part{part}"
                folder.mkdir(parents=True, exist_ok=True)
                name = f"{path.name}.{len(chunks):03d}"
                (folder / name).write_bytes(piece)
                digest.update(piece)
                chunks.append(Chunk(folder.name, name, len(piece)))
                used += len(piece)
                if used == part_bytes:
                    part, used = part + 1, 0
        size = sum(chunk.size for chunk in chunks)
        packed.append(PackedFile(path.name, digest.hexdigest(), size, chunks))
    last = part if used or part == 1 else part - 1
    (out / f"part{last}").mkdir(parents=True, exist_ok=True)
    manifest = {"parts": last, "files": [asdict(f) for f in packed]}
    (out / f"part{last}" / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return packed


def unpack(stage: Path, dest: Path) -> list[Path]:
    """Every packed file rebuilt in `dest`, its size and SHA-256 checked."""
    manifests = sorted(stage.glob(f"part*/{MANIFEST}"))
    if len(manifests) != 1:
        raise FileNotFoundError(f"expected one {MANIFEST} under {stage}/part*, found {manifests}")
    manifest = json.loads(manifests[0].read_text())
    missing = [
        f"part{n}" for n in range(1, manifest["parts"] + 1) if not (stage / f"part{n}").is_dir()
    ]
    if missing:
        raise FileNotFoundError(f"parts not here yet: {', '.join(missing)}")
    dest.mkdir(parents=True, exist_ok=True)
    rebuilt: list[Path] = []
    for entry in manifest["files"]:
        target = dest / entry["name"]
        digest, size = hashlib.sha256(), 0
        with target.open("wb") as out:
            for chunk in entry["chunks"]:
                piece = (stage / chunk["part"] / chunk["name"]).read_bytes()
                out.write(piece)
                digest.update(piece)
                size += len(piece)
        if size != entry["size"] or digest.hexdigest() != entry["sha256"]:
            raise ValueError(f"{target.name} does not match what was packed")
        rebuilt.append(target)
    return rebuilt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack")
    packing.add_argument("--src", type=Path, required=True)
    packing.add_argument("--out", type=Path, required=True)
    packing.add_argument("--part-mib", type=float, default=60.0)
    unpacking = commands.add_parser("unpack")
    unpacking.add_argument("--stage", type=Path, required=True)
    unpacking.add_argument("--dest", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "pack":
        packed = pack(args.src, args.out, int(args.part_mib * MIB))
        parts = sorted({c.part for f in packed for c in f.chunks}, key=lambda p: int(p[4:]))
        print(f"{len(packed)} files in {len(parts)} parts under {args.out}: {' '.join(parts)}")
    else:
        rebuilt = unpack(args.stage, args.dest)
        print(f"{len(rebuilt)} files rebuilt in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
