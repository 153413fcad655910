"""Dataset loading: local override, on-disk cache, public source, with line-numbered errors.

Order for a split of a real benchmark:

1. an explicit file or folder (``--data PATH``);
2. ``$LFPO_BENCH_DATA_DIR/<file name the task declares>`` (how tests point at ../shared/data);
3. the on-disk cache ``<cache>/data/<task>/<split>.jsonl`` written by an earlier public-source load;
4. the public source (HF ``datasets`` id, a URL of the authors' file, or the pip package that ships it),
   which is then cached.

The recorded hash, ``dataset_sha256`` (computed by ``Task.load_with_hash``), is the sha256 of the loaded
examples in canonical form (``records_sha256``), so the same data gives the same hash whatever source it
came from, synthetic tasks included. Malformed lines are reported with file and line number.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .paths import cache_dir, data_dir
from .types import UserError

log = logging.getLogger(__name__)


def records_sha256(records: list[dict]) -> str:
    h = hashlib.sha256()
    for i, r in enumerate(records):
        if i:
            h.update(b"\n")
        h.update(json.dumps(r, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL (optionally .gz) file; a bad line raises ``UserError`` naming file and line."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    out = []
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n}: malformed JSON line ({e.msg} at column {e.colno}); fix or remove that line") from None
            if not isinstance(rec, dict):
                raise UserError(f"{path}:{n}: expected a JSON object per line, got {type(rec).__name__}")
            out.append(rec)
    return out


def read_records(path: str | Path) -> list[dict]:
    """JSONL, JSONL.gz, a JSON array, or CSV with a header row."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file {str(path)!r} not found")
    name = path.name.lower()
    if name.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            return [dict(r) for r in csv.DictReader(f)]
    if name.endswith(".json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a JSON array of records")
        return data
    return read_jsonl(path)


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


@dataclass(frozen=True)
class Source:
    """A public source of one split."""

    describe: str  # shown by `lfpo-bench list` and in errors, e.g. "HF openai/gsm8k (main, test)"
    fetch: Callable[[], list[dict]]  # raises on failure (offline, missing package)


def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect to the Hub (``HF_ENDPOINT`` honoured; ``HF_HUB_OFFLINE=1``/``HF_DATASETS_OFFLINE=1``
    mean no) before ``datasets`` tries, so an offline machine gets its error at once."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout).close()
        return True
    except OSError:
        return False


def hf_source(path: str, name: str | None, split: str) -> Source:
    def fetch() -> list[dict]:
        try:
            import datasets  # noqa: F401
        except ImportError as e:
            raise RuntimeError("the `datasets` package is not installed (pip install 'lfpo-bench[eval]')") from e
        from datasets import load_dataset

        if not hub_reachable():  # fail now, not after ~30 s of retries and warnings
            raise ConnectionError("the Hugging Face Hub is not reachable from this machine (offline)")
        ds = load_dataset(path, name, split=split)
        return [dict(r) for r in ds]

    return Source(f"HF datasets {path}" + (f" ({name})" if name else "") + f" split={split}", fetch)


def url_source(url: str, fmt: str = "jsonl") -> Source:
    def fetch() -> list[dict]:
        import urllib.request

        with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 - fixed public URLs
            raw = r.read()
        if url.endswith(".gz"):
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8")
        if fmt == "csv":
            return [dict(x) for x in csv.DictReader(io.StringIO(text))]
        if fmt == "json":
            return json.loads(text)
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    return Source(url, fetch)


@dataclass
class Loaded:
    records: list[dict]
    origin: str  # where they came from (file path, cache, source description)


def load_split(
    task: str,
    split: str,
    *,
    local_name: str | None,
    source: Source | None,
    data_path: str | Path | None = None,
    convert: Callable[[list[dict]], list[dict]] | None = None,
) -> Loaded:
    """Load one split by the order in the module docstring. ``convert`` maps the source's records to the
    local file's schema when they differ (applied to public-source records only)."""
    candidates: list[Path] = []
    if data_path:
        p = Path(data_path).expanduser()
        if p.is_dir():
            if not local_name:
                raise UserError(f"--data {p} is a folder, but task {task!r} split {split!r} has no default file name; pass a file")
            p = p / local_name
        if not p.exists():
            raise UserError(f"data file {str(p)!r} for task {task!r} split {split!r} not found")
        candidates.append(p)
    elif local_name and data_dir() is not None and (data_dir() / local_name).exists():
        candidates.append(data_dir() / local_name)
    for p in candidates:
        recs = read_records(p)
        return Loaded(recs, str(p))
    cached = cache_dir() / "data" / task / f"{split}.jsonl"
    if cached.exists():
        recs = read_jsonl(cached)
        return Loaded(recs, f"cache {cached}")
    if source is None:
        raise UserError(f"task {task!r} has no split {split!r} and no public source for it")
    try:
        recs = source.fetch()
    except Exception as e:
        if local_name:
            hint = (f"pass --data FOLDER holding {local_name} for split {split!r} (a folder covers every split the command "
                    f"reads, the training task's too; a file covers only the evaluation split), or set LFPO_BENCH_DATA_DIR "
                    f"to that folder")
        else:
            hint = "pass --data PATH"
        raise UserError(
            f"could not load {task!r} split {split!r} from its public source {source.describe} "
            f"({type(e).__name__}: {str(e)[:200]}). Offline? {hint}."
        ) from None
    if convert is not None:
        recs = convert(recs)
    write_jsonl(cached, recs)
    log.info("cached %s/%s (%d records) at %s", task, split, len(recs), cached)
    return Loaded(recs, source.describe)


def require(record: dict[str, Any], fields: tuple[str, ...], where: str) -> None:
    missing = [f for f in fields if f not in record]
    if missing:
        raise UserError(f"{where}: record is missing field(s) {missing}; has {sorted(record)}")
