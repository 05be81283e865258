"""Dask and Zarr at the edge: read the store once into histograms, connect a cluster, fan grid points out."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spanet2.errors import DataError, InputError
from spanet2.stats.histograms import MethodHistograms, histogram_score_mhh
from spanet2.stats.signal_model import morph_terms

__all__ = [
    "HistogramRequest",
    "PointLog",
    "TaskRunner",
    "combine_chunk_histograms",
    "dask_client",
    "histogram_store_chunk",
    "point_key",
    "read_histograms",
    "read_method_histograms",
]

logger = logging.getLogger(__name__)


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


_REDUCE_FAN_IN = 8  # partial histograms summed per reduce task (tree depth log8 of the chunk count)


@dataclass(frozen=True)
class HistogramRequest:
    """What one scan config needs from a store: (score × m_HH) histograms of its methods and samples.

    signal_sample: a sample with kappa_terms (N, 3); or signal_samples ((name, κλ), ...) morphed from their
    `weight`; background samples use `weight`. score_edges (K+1,), mhh_edges (B+1,).
    """

    store: str
    methods: tuple[str, ...]
    signal_sample: str | None
    signal_samples: tuple[tuple[str, float], ...]
    background: tuple[str, ...]
    score_edges: tuple[float, ...]
    mhh_edges: tuple[float, ...]

    def signal_names(self) -> list[str]:
        return [self.signal_sample] if self.signal_sample else [name for name, _ in self.signal_samples]


def _columns_of(kind: str, read: Callable[[str], np.ndarray], n: int) -> np.ndarray:
    """The weight columns of one job: background (N, 3) w, w², 1; terms (N, 4) T0..T2, 1; weight (N, 2) w, 1."""
    ones = np.ones((n, 1))
    if kind == "terms":
        return np.concatenate([read("kappa_terms"), ones], axis=1)
    w = read("weight")[:, None]
    return (
        np.concatenate([w, w * w, ones], axis=1)
        if kind == "background"
        else np.concatenate([w, ones], axis=1)
    )


def histogram_store_chunk(
    store: str, sample: str, start: int, stop: int, jobs: dict[int, tuple[str, str, int]], edges: list
) -> dict:
    """One task on a worker: read rows [start, stop) of one sample (one Zarr chunk) and histogram every job.

    jobs: {job id: (method, kind, edges index)}; edges: [(score_edges, mhh_edges), ...]. Each column is read
    once for all jobs. Returns {"parts": {job id: part}, "readers": {"<host>:<pid>": 1}}, a part being the
    (C, K, B) histogram with the score range and the count of non-finite scores.
    """
    import socket

    from spanet2.events.store import open_store

    opened = open_store(store)
    cache: dict[str, np.ndarray] = {}

    def read(column: str) -> np.ndarray:
        if column not in cache:
            cache[column] = np.asarray(opened.array(sample, column)[start:stop])
        return cache[column]

    parts = {}
    for job, (method, kind, e) in jobs.items():
        score_edges, mhh_edges = edges[e]
        parts[job] = _chunk_histogram(
            read(f"{method}/score"),
            read(f"{method}/m_hh"),
            _columns_of(kind, read, stop - start),
            score_edges,
            mhh_edges,
        )
    return {"parts": parts, "readers": {f"{socket.gethostname()}:{os.getpid()}": 1}}


def combine_chunk_histograms(*results: dict) -> dict:
    """Sum partial results of `histogram_store_chunk` (a reduce task): histograms add, ranges widen."""
    parts: dict[int, dict] = {}
    readers: dict[str, int] = {}
    for res in results:
        for job, part in res["parts"].items():
            parts[job] = part if job not in parts else _combine([parts[job], part])
        for who, n in res["readers"].items():
            readers[who] = readers.get(who, 0) + n
    return {"parts": parts, "readers": readers}


def _check_columns(store, request: HistogramRequest, sample: str, kind: str) -> int:
    """Metadata only (no chunk is read here): sample, method columns, shapes. Returns the sample's length."""
    path = request.store
    if sample not in store.samples:
        raise DataError(path, sample, f"no such sample in the store; it has {store.samples}")
    columns = set(store.columns(sample))
    methods = [m for m in store.methods(sample) if f"{m}/score" in columns and f"{m}/m_hh" in columns]
    n = None
    needed = [("kappa_terms", 2)] if kind == "terms" else [("weight", 1)]
    for method in request.methods:
        if method not in methods:
            raise DataError(
                path,
                f"{sample}/{method}",
                f"the store has no method {method!r} (with score and m_hh) for sample {sample!r}; "
                f"methods there: {methods}",
            )
        needed += [(f"{method}/score", 1), (f"{method}/m_hh", 1)]
    for column, ndim in needed:
        shape = tuple(store.array(sample, column).shape)
        if len(shape) != ndim or (ndim == 2 and shape[1] != 3):
            want = "(N,)" if ndim == 1 else "(N, 3)"
            raise DataError(path, f"{sample}/{column}", f"expected shape {want}, found {shape}")
        if n is None:
            n = shape[0]
        elif shape[0] != n:
            raise DataError(path, f"{sample}/{column}", f"has {shape[0]} rows; the sample has {n} events")
    return int(n or 0)


def read_histograms(
    requests: Sequence[HistogramRequest], runner: TaskRunner
) -> list[tuple[dict[str, MethodHistograms], dict]]:
    """Histogram (score × m_HH) of every method of every request in one pass over the stores' chunks.

    The driver reads only metadata; each Zarr chunk of each sample is one task on a worker (every column
    read once for all requests that need it), and the partial histograms are summed by a tree of reduce
    tasks, so memory stays flat as the store grows. Returns, per request, ({method: MethodHistograms},
    store info: root attrs, the signal sample's attrs, and `readers` {"host:pid": chunks read there}).
    DataError names the store and dataset at fault (missing sample, method, column; scores outside [0, 1]).
    """
    from spanet2.events.store import open_store

    edges: list[tuple[np.ndarray, np.ndarray]] = []
    edge_ids: dict[tuple, int] = {}
    jobs: dict[tuple, int] = {}  # (store, sample, method, kind, edges id) → job id
    per_sample: dict[tuple[str, str], dict[int, tuple[str, str, int]]] = {}
    lengths: dict[tuple[str, str], tuple[int, int]] = {}
    stores = {}
    for request in requests:
        if request.store not in stores:
            stores[request.store] = open_store(request.store)
        key = (request.score_edges, request.mhh_edges)
        if key not in edge_ids:
            edge_ids[key] = len(edges)
            edges.append((np.asarray(request.score_edges), np.asarray(request.mhh_edges)))
        for sample in [*request.signal_names(), *request.background]:
            kind = (
                "background"
                if sample in request.background
                else ("terms" if request.signal_sample else "weight")
            )
            n = _check_columns(stores[request.store], request, sample, kind)
            chunk = int(stores[request.store].array(sample, f"{request.methods[0]}/score").chunks[0])
            lengths[(request.store, sample)] = (n, chunk)
            for method in request.methods:
                job_key = (request.store, sample, method, kind, edge_ids[key])
                if job_key not in jobs:
                    jobs[job_key] = len(jobs)
                per_sample.setdefault((request.store, sample), {})[jobs[job_key]] = (
                    method,
                    kind,
                    edge_ids[key],
                )
    calls = [
        (store, sample, start, min(start + chunk, n), sample_jobs, edges)
        for (store, sample), sample_jobs in per_sample.items()
        for n, chunk in [lengths[(store, sample)]]
        for start in range(0, n, chunk)
    ]
    total = runner.tree_reduce(
        histogram_store_chunk, calls, combine_chunk_histograms, description="store chunks"
    )
    logger.info("store read in %d chunk tasks by %s", len(calls), total["readers"])
    out = []
    for request in requests:
        e = edge_ids[(request.score_edges, request.mhh_edges)]

        def part(sample: str, method: str, request=request, e=e) -> dict:
            kind = (
                "background"
                if sample in request.background
                else ("terms" if request.signal_sample else "weight")
            )
            found = total["parts"].get(jobs[(request.store, sample, method, kind, e)])
            if found is None:  # an empty sample: nothing to read
                n_cols = {"background": 3, "terms": 4, "weight": 2}[kind]
                shape = (n_cols, len(request.score_edges) - 1, len(request.mhh_edges) - 1)
                found = {"hist": np.zeros(shape), "min": np.inf, "max": -np.inf, "bad": 0}
            return found

        out.append(_assemble(request, part, stores[request.store], total["readers"]))
    return out


def _assemble(request: HistogramRequest, part: Callable[[str, str], dict], store, readers: dict) -> tuple:
    sig_names = request.signal_names()
    hists: dict[str, MethodHistograms] = {}
    for method in request.methods:
        for sample in [*sig_names, *request.background]:
            p = part(sample, method)
            if p["min"] < 0.0 or p["max"] > 1.0:
                raise DataError(
                    request.store,
                    f"{sample}/{method}/score",
                    f"scores must be probabilities in [0, 1]; found range [{p['min']:.4g}, {p['max']:.4g}]",
                )
            if p["bad"]:
                logger.warning(
                    "%s: %d events of %s have no finite %s score; they are never selected",
                    request.store,
                    p["bad"],
                    sample,
                    method,
                )
        bkg = np.sum([part(s, method)["hist"] for s in request.background], axis=0)  # (3, K, B)
        if request.signal_sample:
            sig = part(request.signal_sample, method)["hist"]  # (4, K, B)
            terms, count = sig[:3], sig[3]
        else:
            per_sample = np.stack([part(name, method)["hist"][0] for name, _ in request.signal_samples])
            terms = morph_terms([k for _, k in request.signal_samples], per_sample)  # (3, K, B)
            count = np.sum([part(name, method)["hist"][1] for name, _ in request.signal_samples], axis=0)
        hists[method] = MethodHistograms(
            method,
            np.asarray(request.score_edges),
            np.asarray(request.mhh_edges),
            terms,
            bkg[0],
            bkg[1],
            count,
            bkg[2],
        )
    info = {
        "root_attrs": _jsonable(store.attrs),
        "signal_attrs": _jsonable(store.sample_attrs(sig_names[0])) if sig_names else {},
        "readers": dict(readers),
    }
    return hists, info


def read_method_histograms(
    store: str,
    methods: Sequence[str],
    *,
    signal_sample: str | None,
    signal_samples: Sequence[tuple[str, float]],
    background: Sequence[str],
    score_edges: np.ndarray,
    mhh_edges: np.ndarray,
    client: Any = None,
) -> tuple[dict[str, MethodHistograms], dict]:
    """`read_histograms` for one store and one binning (on `client`'s workers, or here without one)."""
    request = HistogramRequest(
        str(store),
        tuple(methods),
        signal_sample,
        tuple((str(n), float(k)) for n, k in signal_samples),
        tuple(background),
        tuple(float(x) for x in score_edges),
        tuple(float(x) for x in mhh_edges),
    )
    return read_histograms([request], TaskRunner(client))[0]


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


@contextlib.contextmanager
def dask_client(
    scheduler: str | None = None, *, n_workers: int | None = None, tls_dir: str | os.PathLike | None = None
) -> Iterator[Any]:
    """A Dask client for the scan.

    scheduler None or "local": a LocalCluster on 127.0.0.1 with one single-threaded worker process per core,
    its links secured by temporary TLS certificates (other users of the node cannot join), dashboard on
    127.0.0.1 (a free port); "synchronous": no cluster, tasks run in this process (debugging, tiny scans);
    anything else: the address of a running scheduler (tls://host:port, tcp://…, or a scheduler file),
    with the credentials in `tls_dir` (written by `python -m spanet2.stats.security DIR`, as
    `slurm/scan.sh` does).
    """
    if scheduler == "synchronous":
        yield None
        return
    import dask
    from distributed import Client, LocalCluster

    # on an oversubscribed node (training beside the scan) the default 30 s comm timeouts drop the client
    dask.config.set({"distributed.comm.timeouts.connect": "120s", "distributed.comm.timeouts.tcp": "300s"})

    from spanet2.stats.security import load_security, temporary_security

    if not logger.isEnabledFor(logging.DEBUG):  # worker start/stop chatter only with -v
        logging.getLogger("distributed").setLevel(logging.WARNING)

    if scheduler in (None, "local"):
        workers = n_workers or max(1, min(os.cpu_count() or 1, 8))
        security = temporary_security()
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address="127.0.0.1:0",
                host="127.0.0.1",
                protocol="tls",
                security=security,
            ) as cluster,
            Client(cluster, security=security) as client,
        ):
            logger.info("Dask LocalCluster with %d workers; dashboard %s", workers, client.dashboard_link)
            yield client
        return
    security = load_security(tls_dir) if tls_dir is not None else None
    address = _scheduler_address(scheduler)
    if address.startswith("tls://") and security is None:
        raise InputError(
            "--scheduler", scheduler, "the scheduler speaks TLS; give its credentials with --tls-dir DIR"
        )
    if address.startswith("tcp://") and not address[len("tcp://") :].startswith(_LOOPBACK):
        logger.warning(
            "%s: an unencrypted scheduler beyond 127.0.0.1; anyone who reaches it runs code", address
        )
    try:
        if os.path.isfile(scheduler):
            client = Client(scheduler_file=scheduler, timeout="30s", security=security)
        else:
            client = Client(scheduler, timeout="30s", security=security)
    except (OSError, TimeoutError) as exc:
        raise InputError("--scheduler", scheduler, f"cannot connect to the Dask scheduler: {exc}") from None
    try:
        # slurm/scan.sh says how many workers it started: wait for all, so the work is spread from the start
        expected = max(1, int(os.environ.get("SPANET2_DASK_MIN_WORKERS", "1") or 1))
        try:
            client.wait_for_workers(expected, timeout=120)
        except TimeoutError:
            raise InputError(
                "--scheduler", scheduler, f"the Dask scheduler has fewer than {expected} worker(s) after 120 s"
            ) from None
        logger.info(
            "Dask scheduler %s with %d workers",
            client.scheduler.address,
            len(client.scheduler_info().get("workers", {})),
        )
        yield client
    finally:
        client.close()


def _scheduler_address(scheduler: str) -> str:
    """The address a scheduler argument points at (read from a scheduler file)."""
    if os.path.isfile(scheduler):
        try:
            return str(json.loads(Path(scheduler).read_text())["address"])
        except (OSError, ValueError, KeyError, TypeError):
            raise InputError("--scheduler", scheduler, "not a Dask scheduler file (no address)") from None
    return scheduler


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


class TaskRunner:
    """Runs the scan's tasks on a Dask client's workers, or here in order when client is None.

    The driver only plans (argument tuples) and collects (results in submission order, or each as it
    finishes through on_done). Progress is shown with rich on a terminal.
    """

    def __init__(self, client: Any):
        self.client = client

    def share(self, obj: Any) -> Any:
        """Send a (small) input to every worker once; tasks receive it in place of the object."""
        if self.client is None:
            return obj
        # in a list: a scattered dict would use its own keys ("templates", ...) as Dask keys, shared by
        # every config of a batch
        return self.client.scatter([obj], broadcast=True, hash=False)[0]

    def map(
        self,
        func: Callable[..., Any],
        calls: Sequence[tuple],
        *,
        on_done: Callable[[int, Any], None] | None = None,
        description: str = "tasks",
    ) -> list[Any]:
        """[func(*args) for args in calls], run as one task each; on_done(index, result) as each finishes."""
        from rich.progress import Progress

        results: list[Any] = [None] * len(calls)
        if not calls:
            return results
        with Progress(transient=True, disable=not _interactive()) as progress:
            bar = progress.add_task(description, total=len(calls))
            if self.client is None:
                for i, args in enumerate(calls):
                    results[i] = func(*args)
                    if on_done:
                        on_done(i, results[i])
                    progress.advance(bar)
                return results
            from distributed import as_completed

            futures = [self.client.submit(func, *args, pure=False) for args in calls]
            index = {f.key: i for i, f in enumerate(futures)}
            for future in as_completed(futures):
                i = index[future.key]
                results[i] = future.result()
                if on_done:
                    on_done(i, results[i])
                progress.advance(bar)
                future.release()
        return results

    def tree_reduce(
        self,
        func: Callable[..., Any],
        calls: Sequence[tuple],
        combine: Callable[..., Any],
        *,
        description: str = "tasks",
    ) -> Any:
        """combine(*[func(*args) for args in calls]) as a tree: reduce tasks of `_REDUCE_FAN_IN` inputs run
        on the workers while other leaves still run; only the final result comes back to the driver.
        Without a client the leaves are folded in one at a time (memory of two partial results)."""
        if self.client is None:
            total = combine()
            for args in calls:
                total = combine(total, func(*args))
            return total
        level = [self.client.submit(func, *args, pure=False) for args in calls]
        while len(level) > 1:
            level = [
                self.client.submit(combine, *level[i : i + _REDUCE_FAN_IN], pure=False)
                for i in range(0, len(level), _REDUCE_FAN_IN)
            ]
        if not level:
            return combine()
        logger.debug("%s: %d leaf tasks, reduced in a tree", description, len(calls))
        return level[0].result()


def _interactive() -> bool:
    import sys

    return sys.stderr.isatty()
