"""A small stage runner: each stage writes its outputs and is skipped when its inputs are unchanged.

A stage's *fingerprint* hashes the part of the study config it reads plus the fingerprints of the stages it
depends on; the record `<out>/stages/<name>.json` stores the fingerprint, the outputs and the wall time. A
stage reruns when its record is missing, its fingerprint changed, an output vanished, or `--from` names it
(or a stage before it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Stage", "StageRunner", "fingerprint"]

log = logging.getLogger(__name__)


def fingerprint(*parts: Any) -> str:
    """A stable sha256 over JSON-serialisable parts (dict keys sorted)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class Stage:
    """One step of the study.

    name: unique stage name. run: `fn(ctx) -> dict` returning a JSON-serialisable summary (paths of the
    outputs under `outputs`). config_keys: dotted keys of the study config the stage reads. after: stages
    whose outputs it consumes.
    """

    name: str
    run: Callable[[Any], dict]
    config_keys: Sequence[str] = ()
    after: Sequence[str] = ()
    description: str = ""


@dataclass
class StageRunner:
    out_dir: Path
    config: dict
    stages: list[Stage]
    progress: Callable[[str], None] = print
    records: dict[str, dict] = field(default_factory=dict)

    def _config_subset(self, keys: Sequence[str]) -> dict:
        out = {}
        for key in keys:
            node: Any = self.config
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            out[key] = node
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
            fp = fingerprint(stage.name, self._config_subset(stage.config_keys),
                             [fingerprints[a] for a in stage.after])
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
            self.progress(f"[{i}/{len(self.stages)}] {stage.name}: done in {wall:.1f} s")
        return self.records
