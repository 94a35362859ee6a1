"""Image labels and ground-truth masks: from folder names, a labels CSV, MVTec masks.

Labels are ``0`` (normal), ``1`` (anomaly) or ``None`` (unknown). Without a
labels file they come from the folder layout of the whole scored set
(:func:`infer_labels`: ``good``/``normal``/``ok`` folders are 0, their
siblings 1), which covers MVTec-AD and anomalib's Folder layout. A labels CSV
(:func:`read_labels_csv`) replaces that inference and is matched against each
image by relative path, path as given, then resolved path
(:func:`match_labels`). Ground-truth masks are found next to the images
(:func:`find_mask`); loading one onto an error map's grid is evaluation's job.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path, PurePath, PurePosixPath

from aetool.data.inputs import ImageRef
from aetool.data.shards import path_key
from aetool.errors import ConfigError

__all__ = [
    "ANOMALY_DIR_NAMES",
    "GOOD_DIR_NAMES",
    "find_mask",
    "infer_label",
    "infer_labels",
    "label_key",
    "match_labels",
    "read_labels_csv",
    "scored_root",
]

#: Directory names (case-insensitive) that hold normal images.
GOOD_DIR_NAMES = frozenset({"good", "normal", "ok"})


#: Directory names (case-insensitive) that hold anomalous images on their own,
#: used by :func:`infer_label` when no sibling ``good`` folder is known.
ANOMALY_DIR_NAMES = frozenset({"abnormal", "anomaly", "anomalous", "bad", "defect", "defective"})


_LABEL_WORDS = {
    "0": 0,
    "normal": 0,
    "good": 0,
    "ok": 0,
    "1": 1,
    "anomaly": 1,
    "anomalous": 1,
    "abnormal": 1,
    "bad": 1,
    "defect": 1,
    "defective": 1,
}


def _dir_parts(relpath: str | PurePath) -> tuple[str, ...]:
    if isinstance(relpath, PurePath):
        return tuple(p for p in relpath.parts[:-1] if p not in ("/", "."))
    # PurePath(...).parts less "/" and ".", as plain string operations (it runs per image)
    parts = [p for p in str(relpath).replace("\\", "/").split("/") if p not in ("", ".")]
    return tuple(parts[:-1])


def infer_label(relpath: str | PurePath) -> int | None:
    """Label one image from its own folder names.

    The deepest folder named ``good``/``normal``/``ok`` (case-insensitive)
    or ``abnormal``/``anomaly``/``anomalous``/``bad``/``defect``/``defective``
    decides: 0 for the first group, 1 for the second; otherwise ``None``.
    Sibling folders such as MVTec's ``test/broken_large`` need the whole set
    of paths; use :func:`infer_labels` for that.
    """
    for part in reversed(_dir_parts(relpath)):
        name = part.lower()
        if name in GOOD_DIR_NAMES:
            return 0
        if name in ANOMALY_DIR_NAMES:
            return 1
    return None


def infer_labels(relpaths: Sequence[str | PurePath]) -> list[int | None]:
    """Label images from the folder layout of the whole set.

    A folder that has a ``good``/``normal``/``ok`` child folder (compared
    case-insensitively) among the paths is an anchor: images under that
    good child are 0 and images under any other child folder of the anchor
    are 1. The deepest anchor containing an image decides. Images under no
    anchor fall back to :func:`infer_label` (an ``abnormal`` folder alone
    still gives 1), else ``None``.

    Handles MVTec-AD (``bottle/test/good/000.png`` -> 0,
    ``bottle/test/broken_large/000.png`` -> 1, also with ``test`` itself as
    the scored root, while ``bottle/train/good`` anchors only ``train``) and
    anomalib Folder layouts (``normal/`` and ``abnormal/`` side by side).

    Args:
        relpaths: image paths relative to the scored root, ``/`` separated.
    """
    all_parts = [_dir_parts(p) for p in relpaths]
    anchors: set[tuple[str, ...]] = set()
    for parts in all_parts:
        for d, name in enumerate(parts):
            if name.lower() in GOOD_DIR_NAMES:
                anchors.add(parts[:d])
    labels: list[int | None] = []
    for rel, parts in zip(relpaths, all_parts, strict=True):
        label: int | None = None
        for d in range(len(parts) - 1, -1, -1):
            if parts[:d] in anchors:
                label = 0 if parts[d].lower() in GOOD_DIR_NAMES else 1
                break
        else:
            label = infer_label(rel)
        labels.append(label)
    return labels


def read_labels_csv(path: str | Path) -> dict[str, int]:
    """Read image labels from a CSV file with a ``path,label`` header.

    Labels are ``0``/``1`` or the words normal/good/ok (0) and
    anomaly/anomalous/abnormal/bad/defect/defective (1), case-insensitive.
    Paths are kept as written, with ``\\`` turned into ``/`` and a leading
    ``./`` removed; blank lines are skipped. Extra columns are ignored.

    Raises:
        ConfigError: the file is missing or unreadable, lacks the header, a
            row has an empty path or an unknown label, or one path is given
            two different labels.
    """
    p = Path(path)
    if p.exists() and not p.is_file():  # a FIFO would block: never opened
        raise ConfigError(f"cannot read labels file {p}: not a regular file")
    try:
        with p.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as fh:
            rows = list(csv.reader(fh))
    except (OSError, csv.Error) as exc:  # csv.Error: a field over the size limit, a NUL byte
        raise ConfigError(f"cannot read labels file {p}: {str(exc)[:200]}") from None
    header_at = next((i for i, row in enumerate(rows) if any(c.strip() for c in row)), None)
    if header_at is None:
        raise ConfigError(f"labels file {p} is empty; it needs a 'path,label' header and rows")
    header = [c.strip().lower() for c in rows[header_at]]
    if "path" not in header or "label" not in header:
        raise ConfigError(
            f"labels file {p} needs a header row with 'path' and 'label' columns, "
            f"got {','.join(rows[header_at])!r}"
        )
    ip, il = header.index("path"), header.index("label")
    labels: dict[str, int] = {}
    for lineno, row in enumerate(rows[header_at + 1 :], start=header_at + 2):
        if not any(c.strip() for c in row):
            continue
        where = f"{p}, line {lineno}"
        if len(row) <= max(ip, il):
            raise ConfigError(f"{where}: expected 'path,label' columns, got {','.join(row)!r}")
        key, word = path_key(row[ip]), row[il].strip().lower()
        if not key:
            raise ConfigError(f"{where}: the path is empty")
        if word not in _LABEL_WORDS:
            raise ConfigError(
                f"{where}: label {row[il].strip()!r} is not 0/1 or normal/anomaly (good/bad)"
            )
        value = _LABEL_WORDS[word]
        if labels.get(key, value) != value:
            raise ConfigError(f"{where}: {key!r} already has label {labels[key]}")
        labels[key] = value
    return labels


def _mask_candidates(base: Path, rel: PurePath) -> list[Path]:
    names = [f"{rel.stem}_mask{rel.suffix}", rel.name]
    if rel.suffix.lower() != ".png":
        names += [f"{rel.stem}_mask.png", f"{rel.stem}.png"]
    return [base / rel.parent / name for name in names]


def find_mask(
    image_relpath: str | PurePath,
    root: str | Path | None,
    masks_dir: str | Path | None = None,
) -> Path | None:
    """The ground-truth mask file of an image, or ``None`` when there is none.

    Without ``masks_dir`` the MVTec-AD layout is assumed:
    ``<dataset>/test/<defect>/<name>.png`` ->
    ``<dataset>/ground_truth/<defect>/<name>_mask.png``, found from the last
    ``test`` folder in ``root / image_relpath`` (so ``root`` may be the
    dataset, its ``test`` folder or a defect folder). Normal images have no
    mask; treat them as all-zero.

    With ``masks_dir`` the masks mirror the image paths relative to ``root``:
    ``<masks_dir>/<relpath dir>/<name>_mask<ext>`` or the same file name
    (``.png`` also tried for other image extensions); when the relative path
    starts below a ``test`` folder, the part after it is tried too.

    Args:
        image_relpath: the image path relative to ``root`` (or a full path
            when ``root`` is ``None``).
        root: the scored folder.
        masks_dir: a folder of masks mirroring the images.
    """
    rel = PurePath(str(image_relpath).replace("\\", "/"))
    full = Path(root) / rel if root is not None else Path(rel)
    if masks_dir is not None:
        rels = [rel]
        if "test" in rel.parts[:-1]:
            i = len(rel.parts) - 2 - rel.parts[-2::-1].index("test")
            rels.append(PurePath(*rel.parts[i + 1 :]))
        for r in rels:
            for cand in _mask_candidates(Path(masks_dir), r):
                if cand.is_file():
                    return cand
        return None
    parts = full.parts
    dirs = parts[:-1]
    if "test" not in dirs:
        return None
    i = len(dirs) - 1 - dirs[::-1].index("test")
    gt = Path(*parts[:i], "ground_truth", *parts[i + 1 : -1])
    cand = gt / f"{full.stem}_mask.png"
    return cand if cand.is_file() else None


def label_key(ref: ImageRef) -> str:
    """The path :func:`infer_labels` sees: the scored folder's own name, then the relative path.

    Including the folder's name labels ``score test/good`` and
    ``score normal/ abnormal/`` as their parent folder would be.
    """
    root = Path(scored_root(ref)).name
    return f"{root}/{ref.relpath}" if root else ref.relpath


def match_labels(refs: Sequence[ImageRef], labels: Mapping[str, int]) -> list[int | None]:
    """Look each image up by relative path, path as given, then resolved path."""
    by_key = {path_key(k): int(v) for k, v in labels.items()}
    by_real: dict[str, int] | None = None
    out: list[int | None] = []
    for ref in refs:
        label = by_key.get(path_key(ref.relpath), by_key.get(path_key(str(ref.path))))
        if label is None:
            if by_real is None:
                by_real = {os.path.realpath(k): v for k, v in by_key.items()}
            label = by_real.get(os.path.realpath(ref.path))
        out.append(label)
    return out


def scored_root(ref: ImageRef) -> str:
    """The absolute folder an image was found under (its path minus its relative path)."""
    if ref.relpath.rsplit("/", 1)[-1] != os.path.basename(ref.path):
        return _strip(os.path.abspath(ref.path), ref.relpath)
    # the file's folder minus the relative path's folders: one computation a folder
    return _strip(os.path.abspath(os.path.dirname(ref.path)), os.path.dirname(ref.relpath))


@lru_cache(maxsize=4096)
def _strip(path: str, relpath: str) -> str:
    p = Path(path)
    for _ in PurePosixPath(relpath).parts:
        p = p.parent
    return str(p)
