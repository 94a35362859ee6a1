"""One normalised sha256 per file under a folder, for tools/golden_outputs.sh.

    python3 tools/normalise_output.py DIR > manifest.txt

Model files: the tensors' bytes (hex digest per tensor) and the JSON metadata with
timing keys dropped.  Text: lines with wall-clock figures dropped.  Others: as is.
"""

import hashlib
import json
import re
import sys
from pathlib import Path

VOLATILE = {"seconds", "images_per_s", "finished", "started", "elapsed_s", "time_s"}


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def normalised(p: Path, root: str) -> str:
    data = p.read_bytes()
    if p.suffix == ".safetensors":
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + n])
        meta = header.pop("__metadata__", {})
        body = data[8 + n :]
        out = []
        for name in sorted(header):
            a, b = header[name]["data_offsets"]
            out.append(
                f"{name} {header[name]['dtype']} {header[name]['shape']} {hashlib.sha256(body[a:b]).hexdigest()}"
            )
        for k, v in sorted(meta.items()):
            try:
                v = json.dumps(_strip(json.loads(v)), sort_keys=True)
            except ValueError:
                pass
            out.append(f"{k} {v.replace(root, 'OUT')}")
        return "\n".join(out)
    text = data.decode("utf-8", "surrogateescape")
    if p.name.startswith(("stdout-info", "stderr-info")):
        text = "\n".join(
            ln
            for ln in text.splitlines()
            if not re.search(
                r'"(seconds|images_per_s|finished)"|\d+(\.\d+)? ?(s|ms)\b|\d{4}-\d\d-\d\dT|images/s',
                ln,
            )
        )
    if p.suffix == ".html":
        text = "\n".join(
            ln for ln in text.splitlines() if not re.search(r"\d ?(s|ms)\b|seconds|images/s", ln)
        )
    return text.replace(root, "OUT")


def main(folder: str) -> None:
    root = str(Path(folder).resolve())
    for p in sorted(Path(root).rglob("*")):
        if p.is_file():
            digest = hashlib.sha256(
                normalised(p, root).encode("utf-8", "surrogateescape")
            ).hexdigest()
            print(digest[:16], p.relative_to(root))


if __name__ == "__main__":
    main(sys.argv[1])
