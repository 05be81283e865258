"""The model-kind registry: each kind ("spanet2", "dnn") says how to load and save its options, train, evaluate
and predict, and what it needs; searches and repeats look a kind up instead of comparing its name."""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spanet2.errors import InputError

__all__ = ["ModelKind", "register", "get_kind", "kind_names"]

PathLike = str | os.PathLike


@dataclass(frozen=True)
class ModelKind:
    """One kind of model. The callables import their module when called (torch loads only when used).

    options_type() → the options dataclass; load_options(path) / save_options(options, path) its JSON;
    train(options, *, log_dir, name, event_file, training_file, validation_file, pairing, seed, engine,
    epoch_callback, progress) → a result with `run_dir`; evaluate(run_dir, test_file, *, pairing) → the `test`
    numbers (accuracy, auc, ...); predict(run_dir, input_file, output_file, *, pairing) writes a predictions file.
    """

    name: str
    options_type: Callable[[], type]
    load_options: Callable[[PathLike], Any]
    save_options: Callable[[Any, PathLike], None]
    train: Callable[..., Any]
    evaluate: Callable[..., dict[str, Any]]
    predict: Callable[..., Any]
    #: The network reads the event-file YAML (topology) and the options name the data files.
    uses_event_file: bool
    #: The model assigns jets itself (val_pairing_efficiency exists); False: it takes a `pairing` source.
    pairs_jets: bool
    #: One trial may span several workers (DDP / DeepSpeed engines).
    multi_worker: bool
    #: The option that turns the GPU on for one run, or None.
    gpu_option: str | None
    #: The CLI command that trains it (`spanet2 <train_command> -of OPTIONS ...`).
    train_command: str

    def option_names(self) -> frozenset[str]:
        """The option keys of this kind (what a search space or override may set)."""
        return frozenset(f.name for f in dataclasses.fields(self.options_type()))

    def default_options(self) -> Any:
        return self.options_type()()


_REGISTRY: dict[str, ModelKind] = {}


def register(kind: ModelKind) -> ModelKind:
    """Add a kind (a new kind is one `register` call in one file)."""
    _REGISTRY[kind.name] = kind
    return kind


def kind_names() -> tuple[str, ...]:
    """The registered kinds, in registration order."""
    return tuple(_REGISTRY)


def get_kind(name: str, *, flag: str = "--model") -> ModelKind:
    """The registered kind `name`; InputError naming `flag` otherwise."""
    if name not in _REGISTRY:
        raise InputError(flag, None, f"expected {' or '.join(_REGISTRY)}, got {name!r}")
    return _REGISTRY[name]


def _lazy(module: str, name: str, *, call: bool = True) -> Callable[..., Any]:
    """`module.name` imported on first use: called with the arguments, or (call=False) returned itself."""

    def use(*args: Any, **kwargs: Any) -> Any:
        found = getattr(importlib.import_module(module), name)
        return found(*args, **kwargs) if call else found

    return use


# ---- SPANet2 ----
def _spanet2_train(options: Any, *, pairing: str = "min-dr", **kwargs: Any) -> Any:
    from spanet2.training.trainer import train

    del pairing  # SPANet2 assigns the jets itself
    return train(options, **kwargs)


def _spanet2_evaluate(run_dir: PathLike, test_file: PathLike, *, pairing: str = "min-dr") -> dict[str, Any]:
    from spanet2.training.evaluation import evaluate

    del pairing
    return evaluate(run_dir, test_file)


def _spanet2_predict(
    run_dir: PathLike, input_file: PathLike, output_file: PathLike, *, pairing: str = "min-dr"
):
    from spanet2.training.predict import predict

    del pairing
    return predict(run_dir, input_file, output_file, progress=False)


register(
    ModelKind(
        name="spanet2",
        options_type=_lazy("spanet2.training.options", "Options", call=False),
        load_options=_lazy("spanet2.training.options", "load_options"),
        save_options=_lazy("spanet2.training.options", "save_options"),
        train=_spanet2_train,
        evaluate=_spanet2_evaluate,
        predict=_spanet2_predict,
        uses_event_file=True,
        pairs_jets=True,
        multi_worker=True,
        gpu_option="num_gpu",
        train_command="train",
    )
)


# ---- the DNN baseline on high-level observables ----
def _dnn_train(options: Any, *, event_file: PathLike | None = None, engine: str | None = None, **kwargs: Any):
    from spanet2.training.dnn import train_dnn

    del event_file, engine  # the DNN reads no topology and trains on one process
    return train_dnn(options, **kwargs)


def _dnn_evaluate(run_dir: PathLike, test_file: PathLike, *, pairing: str = "min-dr") -> dict[str, Any]:
    from spanet2.training.dnn import evaluate_dnn

    return evaluate_dnn(run_dir, test_file, pairing=pairing)


def _dnn_predict(run_dir: PathLike, input_file: PathLike, output_file: PathLike, *, pairing: str = "min-dr"):
    from spanet2.training.dnn import predict_dnn

    return predict_dnn(run_dir, output_file, input_file, pairing=pairing)


register(
    ModelKind(
        name="dnn",
        options_type=_lazy("spanet2.training.dnn", "DNNOptions", call=False),
        load_options=_lazy("spanet2.training.dnn", "load_dnn_options"),
        save_options=_lazy("spanet2.training.dnn", "save_dnn_options"),
        train=_dnn_train,
        evaluate=_dnn_evaluate,
        predict=_dnn_predict,
        uses_event_file=False,
        pairs_jets=False,
        multi_worker=False,
        gpu_option=None,
        train_command="dnn train",
    )
)
