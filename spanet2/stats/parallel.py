"""Dask and Zarr at the edge: read the store once into histograms, connect a cluster, fan grid points out."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spanet2.events.errors import DataError, InputError
from spanet2.stats.histograms import MethodHistograms, histogram_score_mhh
from spanet2.stats.signal_model import morph_terms

__all__ = [
    "PointLog",
    "dask_client",
    "point_key",
    "read_method_histograms",
    "run_tasks",
]

logger = logging.getLogger(__name__)

READ_CHUNK = 262144  # events per Dask block when histogramming the store


def _chunk_histogram(score, mhh, weights, score_edges, mhh_edges):
    """One block: (C, K, B) histograms plus the score range and the count of non-finite scores."""
    score = np.asarray(score, dtype=np.float64)
    finite = np.isfinite(score)
    return {
        "hist": histogram_score_mhh(score, mhh, weights, score_edges, mhh_edges),
        "min": float(score[finite].min()) if finite.any() else np.inf,
        "max": float(score[finite].max()) if finite.any() else -np.inf,
        "bad": int((~finite).sum()),
    }


def _combine(parts: list[dict]) -> dict:
    return {
        "hist": np.sum([p["hist"] for p in parts], axis=0),
        "min": min(p["min"] for p in parts),
        "max": max(p["max"] for p in parts),
        "bad": sum(p["bad"] for p in parts),
    }


class _StoreReader:
    """Opens `<store>/<sample>/<column>` arrays (spanet2.events.store) as Dask arrays; errors name the path."""

    def __init__(self, path: str):
        from spanet2.events.store import open_store

        self.path = path
        self.store = open_store(path)
        self._cache: dict[str, Any] = {}

    def samples(self) -> list[str]:
        return self.store.samples

    def attrs(self, sample: str | None = None) -> dict:
        return self.store.attrs if sample is None else self.store.sample_attrs(sample)

    def methods(self, sample: str) -> list[str]:
        columns = set(self.store.columns(sample))
        return [m for m in self.store.methods(sample) if f"{m}/score" in columns and f"{m}/m_hh" in columns]

    def require_sample(self, sample: str) -> None:
        if sample not in self.samples():
            raise DataError(self.path, sample, f"no such sample in the store; it has {self.samples()}")

    def require_method(self, sample: str, method: str) -> None:
        if method not in self.methods(sample):
            raise DataError(
                self.path,
                f"{sample}/{method}",
                f"the store has no method {method!r} (with score and m_hh) for sample {sample!r}; "
                f"methods there: {self.methods(sample)}",
            )

    def array(self, sample: str, column: str, *, ndim: int, length: int | None = None):
        import dask.array as da

        key = f"{sample}/{column}"
        if key not in self._cache:
            arr = self.store.array(sample, column)
            if arr.ndim != ndim or (ndim == 2 and arr.shape[1] != 3):
                want = "(N,)" if ndim == 1 else "(N, 3)"
                raise DataError(self.path, key, f"expected shape {want}, found {tuple(arr.shape)}")
            chunks = (READ_CHUNK,) if ndim == 1 else (READ_CHUNK, 3)
            self._cache[key] = da.from_zarr(arr).rechunk(chunks)
        out = self._cache[key]
        if length is not None and out.shape[0] != length:
            raise DataError(self.path, key, f"has {out.shape[0]} rows; the sample has {length} events")
        return out


def _histogram_blocks(score, mhh, weights, score_edges, mhh_edges):
    """A delayed (C, K, B) histogram summed over aligned blocks of Dask arrays."""
    import dask

    chunk = dask.delayed(_chunk_histogram, pure=True)
    parts = [
        chunk(s, m, w, score_edges, mhh_edges)
        for s, m, w in zip(
            score.to_delayed().ravel(), mhh.to_delayed().ravel(), weights.to_delayed().ravel(), strict=True
        )
    ]
    return dask.delayed(_combine, pure=True)(parts)


def read_method_histograms(
    store: str,
    methods: Sequence[str],
    *,
    signal_sample: str | None,
    signal_samples: Sequence[tuple[str, float]],
    background: Sequence[str],
    score_edges: np.ndarray,
    mhh_edges: np.ndarray,
) -> tuple[dict[str, MethodHistograms], dict]:
    """Histogram (score × m_HH) of every method from the store in one Dask computation.

    The signal comes from `signal_sample` (column kappa_terms (N,3) fb) or is morphed from
    `signal_samples` [(name, κλ), ...] (column weight). Background samples use `weight`. Returns
    ({method: MethodHistograms}, store info: root attrs and the signal sample's attrs). DataError names the
    store and the dataset path at fault (missing sample, method, column; scores outside [0, 1]).
    """
    import dask
    import dask.array as da

    reader = _StoreReader(store)
    sig_names = [signal_sample] if signal_sample else [name for name, _ in signal_samples]
    for sample in [*sig_names, *background]:
        reader.require_sample(sample)
        for method in methods:
            reader.require_method(sample, method)
    graph: dict[tuple[str, str], Any] = {}
    for method in methods:
        for sample in [*sig_names, *background]:
            score = reader.array(sample, f"{method}/score", ndim=1)
            n = score.shape[0]
            mhh = reader.array(sample, f"{method}/m_hh", ndim=1, length=n)
            ones = da.ones((n, 1), chunks=(READ_CHUNK, 1))
            if sample in background:
                w = reader.array(sample, "weight", ndim=1, length=n)[:, None]
                columns = da.concatenate([w, w * w, ones], axis=1)  # (N, 3): weight, weight², count
            elif signal_sample:
                terms = reader.array(sample, "kappa_terms", ndim=2, length=n)
                columns = da.concatenate([terms, ones], axis=1)  # (N, 4): T0, T1, T2, count
            else:
                w = reader.array(sample, "weight", ndim=1, length=n)[:, None]
                columns = da.concatenate([w, ones], axis=1)  # (N, 2): weight at the sample's κλ, count
            columns = columns.rechunk((READ_CHUNK, columns.shape[1]))
            graph[(method, sample)] = _histogram_blocks(score, mhh, columns, score_edges, mhh_edges)
    keys = list(graph)
    computed = dict(zip(keys, dask.compute(*[graph[k] for k in keys]), strict=True))
    out: dict[str, MethodHistograms] = {}
    for method in methods:
        for sample in [*sig_names, *background]:
            part = computed[(method, sample)]
            if part["min"] < 0.0 or part["max"] > 1.0:
                raise DataError(
                    store,
                    f"{sample}/{method}/score",
                    f"scores must be probabilities in [0, 1]; found range "
                    f"[{part['min']:.4g}, {part['max']:.4g}]",
                )
            if part["bad"]:
                logger.warning(
                    "%s: %d events of %s have no finite %s score; they are never selected",
                    store,
                    part["bad"],
                    sample,
                    method,
                )
        bkg = np.sum([computed[(method, s)]["hist"] for s in background], axis=0)  # (3, K, B)
        if signal_sample:
            sig = computed[(method, signal_sample)]["hist"]  # (4, K, B)
            terms, count = sig[:3], sig[3]
        else:
            per_sample = np.stack(
                [computed[(method, name)]["hist"][0] for name, _ in signal_samples]
            )  # (S, K, B)
            terms = morph_terms([k for _, k in signal_samples], per_sample)  # (3, K, B)
            count = np.sum([computed[(method, name)]["hist"][1] for name, _ in signal_samples], axis=0)
        out[method] = MethodHistograms(
            method, np.asarray(score_edges), np.asarray(mhh_edges), terms, bkg[0], bkg[1], count, bkg[2]
        )
    info = {
        "root_attrs": _jsonable(reader.attrs()),
        "signal_attrs": _jsonable(reader.attrs(sig_names[0])) if sig_names else {},
    }
    return out, info


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, *, n_workers: int | None = None) -> Iterator[Any]:
    """A Dask client for the scan.

    scheduler None or "local": a LocalCluster with one single-threaded worker process per core (dashboard
    on 127.0.0.1, a free port); "synchronous": no cluster, tasks run in this process (debugging, tiny
    scans); anything else: the address of a running scheduler (tcp://host:port, or a scheduler file path).
    """
    if scheduler == "synchronous":
        yield None
        return
    from distributed import Client, LocalCluster

    if not logger.isEnabledFor(logging.DEBUG):  # worker start/stop chatter only with -v
        logging.getLogger("distributed").setLevel(logging.WARNING)

    if scheduler in (None, "local"):
        workers = n_workers or max(1, min(os.cpu_count() or 1, 8))
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address="127.0.0.1:0",
                host="127.0.0.1",
            ) as cluster,
            Client(cluster) as client,
        ):
            logger.info("Dask LocalCluster with %d workers; dashboard %s", workers, client.dashboard_link)
            yield client
        return
    try:
        if os.path.isfile(scheduler):
            client = Client(scheduler_file=scheduler, timeout="30s")
        else:
            client = Client(scheduler, timeout="30s")
    except (OSError, TimeoutError) as exc:
        raise InputError("--scheduler", scheduler, f"cannot connect to the Dask scheduler: {exc}") from None
    try:
        try:
            client.wait_for_workers(1, timeout=120)
        except TimeoutError:
            raise InputError(
                "--scheduler", scheduler, "the Dask scheduler has no workers after 120 s"
            ) from None
        logger.info(
            "Dask scheduler %s with %d workers",
            client.scheduler.address,
            len(client.scheduler_info().get("workers", {})),
        )
        yield client
    finally:
        client.close()


class PointLog:
    """Append-only JSONL of finished points; a rerun reads it and skips what is already there.

    Each line is one JSON object with a "key"; a half-written last line (a killed run) is ignored.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict) and "key" in rec:
                    self.records[rec["key"]] = rec
            self._repair()

    def _repair(self) -> None:
        """Rewrite without a torn last line so appends start on a fresh line."""
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records.values())
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def append(self, records: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            for rec in records:
                fh.write(json.dumps(rec, sort_keys=True) + "\n")
                self.records[rec["key"]] = rec
            fh.flush()
            os.fsync(fh.fileno())


def point_key(*parts: Any) -> str:
    """A stable key for a point from JSON-able parts (template fingerprint, settings, luminosity, κλ)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def run_tasks(
    client: Any,
    func: Callable[..., list[dict]],
    shared: Any,
    task_args: list[tuple],
    on_done: Callable[[list[dict]], None],
    *,
    description: str = "points",
) -> None:
    """Run func(shared, *args) for each args tuple; call on_done(result) as each finishes (any order).

    With a client the (small) shared input is scattered once to every worker, then tasks are mapped;
    without one they run here in order. Progress is shown with rich.
    """
    from rich.progress import Progress

    if not task_args:
        return
    with Progress(transient=True, disable=not _interactive()) as progress:
        bar = progress.add_task(description, total=len(task_args))
        if client is None:
            for args in task_args:
                on_done(func(shared, *args))
                progress.advance(bar)
            return
        from distributed import as_completed

        shared_future = client.scatter(shared, broadcast=True)
        futures = [client.submit(func, shared_future, *args, pure=False) for args in task_args]
        for future in as_completed(futures):
            on_done(future.result())
            progress.advance(bar)


def _interactive() -> bool:
    import sys

    return sys.stderr.isatty()
