"""A small stage runner: each stage writes its outputs and is skipped when its inputs are unchanged.

A stage's *fingerprint* hashes the part of the study config it reads, the content of every file it reads
(options JSON, tune configs, the event file, and the output files of the stages it consumes), the fingerprints
of the stages it depends on and the spanet2 version; the record `<out>/stages/<name>.json` stores the
fingerprint, the outputs and the wall time. A stage reruns when its record is missing, its fingerprint changed,
an output vanished, or `--from` names it (or a stage before it). File hashes are cached by (size, mtime) in
`<out>/.file_hashes.json`, so an unchanged large file is not read again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Stage", "StageRunner", "file_sha256", "fingerprint"]

log = logging.getLogger(__name__)


def fingerprint(*parts: Any) -> str:
    """A stable sha256 over JSON-serialisable parts (dict keys sorted)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_sha256(path: Path, *, block: int = 1 << 22) -> str:
    """sha256 of a file's content, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _no_files(config: Any) -> Iterable[Path]:
    return ()


def _section_value(value: Any) -> Any:
    """A config section for `fingerprint`: dataclasses as `dataclasses.asdict` (also inside mappings)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {k: _section_value(v) for k, v in value.items()}
    return value


@dataclass
class Stage:
    """One step of the study.

    name: unique stage name. run: `fn(ctx) -> dict` returning a JSON-serialisable summary (paths of the
    outputs under `outputs`). config_keys: dotted keys of the study config the stage reads (mapping keys or
    dataclass fields: `models.spanet2`). after: stages whose outputs it consumes (their output *files* are hashed
    too). reads: `fn(config) -> paths` of the files outside the study folder that the stage reads (options JSON,
    tune configs, event file).
    """

    name: str
    run: Callable[[Any], dict]
    config_keys: Sequence[str] = ()
    after: Sequence[str] = ()
    description: str = ""
    reads: Callable[[Any], Iterable[Path]] = _no_files


@dataclass
class StageRunner:
    """Runs `stages` in order under `out_dir`. config: the study config, a mapping or (nested) dataclasses."""

    out_dir: Path
    config: Any
    stages: list[Stage]
    progress: Callable[[str], None] = print
    records: dict[str, dict] = field(default_factory=dict)
    version: str = ""
    _hash_cache: dict[str, list] | None = field(default=None, repr=False)

    def _cache_path(self) -> Path:
        return self.out_dir / ".file_hashes.json"  # not under stages/: that folder holds one record per stage

    def file_hash(self, path: Path) -> str | None:
        """Content hash of `path` (None when it does not exist), cached by size and mtime."""
        path = Path(path).resolve()
        try:
            st = path.stat()
        except OSError:
            return None
        if not path.is_file():  # a folder output (run dir, Zarr store): its stage's fingerprint stands for it
            return "folder"
        if self._hash_cache is None:
            try:
                self._hash_cache = json.loads(self._cache_path().read_text())
            except (OSError, json.JSONDecodeError):
                self._hash_cache = {}
        key, stamp = str(path), [st.st_size, st.st_mtime_ns]
        cached = self._hash_cache.get(key)
        if cached is not None and cached[:2] == stamp:
            return cached[2]
        digest = file_sha256(path)
        self._hash_cache[key] = [*stamp, digest]
        return digest

    def _save_hash_cache(self) -> None:
        if self._hash_cache is None:
            return
        path = self._cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self._hash_cache, indent=0, sort_keys=True) + "\n")
        os.replace(tmp, path)

    def _read_files(self, stage: Stage) -> dict[str, str | None]:
        """{path: content hash} of the files the stage reads: its declared files and its inputs' output files."""
        files = {str(p): self.file_hash(Path(p)) for p in stage.reads(self.config)}
        for name in stage.after:
            record = self.records.get(name) or self._load_record(name) or {}
            for rel in record.get("outputs", []):
                files[f"<{name}>/{rel}"] = self.file_hash(self.out_dir / rel)
        return files

    def stage_fingerprint(self, stage: Stage, fingerprints: dict[str, str]) -> str:
        """The stage's fingerprint from its config keys, the files it reads, its inputs' fingerprints and the
        package version."""
        return fingerprint(stage.name, self._config_subset(stage.config_keys), self._read_files(stage),
                           [fingerprints[a] for a in stage.after], self.version)  # fmt: skip

    def fingerprints(self) -> dict[str, str]:
        """Every stage's current fingerprint, without running anything."""
        out: dict[str, str] = {}
        for stage in self.stages:
            out[stage.name] = self.stage_fingerprint(stage, out)
        return out

    def _config_subset(self, keys: Sequence[str]) -> dict:
        """{dotted key: value} of the config: mapping keys or dataclass fields, a dataclass as its `asdict`."""
        out = {}
        for key in keys:
            node: Any = self.config
            for part in key.split("."):
                if isinstance(node, Mapping):
                    node = node.get(part)
                elif dataclasses.is_dataclass(node) and not isinstance(node, type):
                    node = getattr(node, part, None)
                else:
                    node = None
            out[key] = _section_value(node)
        return out

    def _record_path(self, name: str) -> Path:
        return self.out_dir / "stages" / f"{name}.json"

    def _load_record(self, name: str) -> dict | None:
        path = self._record_path(name)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def run(self, ctx: Any, *, from_stage: str | None = None, only: Sequence[str] | None = None) -> dict:
        """Run the stages in order; returns {name: record}. `from_stage` forces that stage and all later ones."""
        names = self.names()
        forced: set[str] = set()
        if from_stage is not None:
            forced = set(names[names.index(from_stage):])
        fingerprints: dict[str, str] = {}
        (self.out_dir / "stages").mkdir(parents=True, exist_ok=True)
        for i, stage in enumerate(self.stages, 1):
            fp = self.stage_fingerprint(stage, fingerprints)
            fingerprints[stage.name] = fp
            record = self._load_record(stage.name)
            if only is not None and stage.name not in only:
                if record is not None:
                    self.records[stage.name] = record
                continue
            outputs_ok = record is not None and all(
                (self.out_dir / p).exists() for p in record.get("outputs", [])
            )
            if stage.name not in forced and record is not None and record.get("fingerprint") == fp and outputs_ok:
                self.progress(f"[{i}/{len(self.stages)}] {stage.name}: up to date, skipped")
                self.records[stage.name] = record
                continue
            self.progress(f"[{i}/{len(self.stages)}] {stage.name}: running — {stage.description}")
            t0 = time.perf_counter()
            summary = stage.run(ctx) or {}
            wall = time.perf_counter() - t0
            record = {"name": stage.name, "fingerprint": fp, "wall_s": round(wall, 2),
                      "outputs": [str(p) for p in summary.pop("outputs", [])], "summary": summary,
                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
            tmp = self._record_path(stage.name).with_suffix(".json.tmp")
            tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
            tmp.replace(self._record_path(stage.name))
            self.records[stage.name] = record
            self._save_hash_cache()
            self.progress(f"[{i}/{len(self.stages)}] {stage.name}: done in {wall:.1f} s")
        self._save_hash_cache()
        return self.records
