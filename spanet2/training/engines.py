"""Training engines: one process (CPU/GPU, autocast), DDP under torchrun, DeepSpeed (ZeRO); one step API."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from spanet2.errors import ConfigError

__all__ = [
    "ENGINES",
    "Engine",
    "make_engine",
    "build_optimizer",
    "lr_factor",
    "parameter_groups",
    "torch_extensions_dir",
    "free_port",
]

logger = logging.getLogger(__name__)

ENGINES = ("single", "ddp", "deepspeed")

LossFn = Callable[[Any, Any], "tuple[torch.Tensor, dict[str, float]]"]

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.batchnorm._NormBase,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


def torch_extensions_dir() -> Path:
    """Where DeepSpeed's JIT-compiled ops are cached (set TORCH_EXTENSIONS_DIR unless the user did)."""
    default = Path.home() / ".cache" / "spanet2" / "torch_extensions"
    path = Path(os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(default)))
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a single-process rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: weights with `weight_decay`; biases and normalisation parameters without decay."""
    no_decay: set[int] = set()
    for module in model.modules():
        if isinstance(module, _NORM_TYPES):
            no_decay.update(id(p) for p in module.parameters(recurse=False))
    decay_params, plain_params = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if id(param) in no_decay or name.endswith("bias"):
            plain_params.append(param)
        else:
            decay_params.append(param)
    groups = [
        {"params": decay_params, "weight_decay": float(weight_decay)},
        {"params": plain_params, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module, name: str, learning_rate: float, weight_decay: float
) -> torch.optim.Optimizer:
    """Any torch optimiser by class name (`getattr(torch.optim, name)`), weight decay skipping biases/norms."""
    cls = getattr(torch.optim, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(
            "options", "optimizer", f"expected the name of a torch.optim optimiser (e.g. AdamW), got {name!r}"
        )
    return cls(parameter_groups(model, weight_decay), lr=learning_rate)


def lr_factor(
    step: int, *, total_steps: int, warmup_steps: int, schedule: str = "linear", cycles: float = 0
) -> float:
    """Learning-rate multiplier at optimiser step `step` (0-based), as upstream: per-step linear warm-up,
    then linear decay to 0 (schedule "linear", cycles 0) or cosine with `max(cycles, 1)` hard restarts."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min(max((step - warmup_steps) / decay_steps, 0.0), 1.0)
    if schedule == "cosine" or cycles > 0:
        n_cycles = max(float(cycles), 1.0)
        if progress >= 1.0:
            return 0.0
        return 0.5 * (1.0 + math.cos(math.pi * ((n_cycles * progress) % 1.0)))
    return max(0.0, 1.0 - progress)


def _move(obj: Any, device: torch.device, float_dtype: torch.dtype | None = None) -> Any:
    """Move a (nested dict/list of) tensors to `device`; optionally cast floating tensors."""
    if isinstance(obj, torch.Tensor):
        obj = obj.to(device, non_blocking=True)
        if float_dtype is not None and obj.is_floating_point():
            obj = obj.to(float_dtype)
        return obj
    if isinstance(obj, dict):
        return {k: _move(v, device, float_dtype) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_move(v, device, float_dtype) for v in obj)
    if hasattr(obj, "to") and callable(obj.to):
        return obj.to(device)
    return obj


class Engine:
    """One training process. Subclasses: DDP and DeepSpeed. Use `setup`, then `train_step` per batch.

    Attributes: rank, world_size, device, is_main (rank 0 writes the log directory).
    """

    name = "single"

    def __init__(self, *, use_gpu: bool, precision: str = "32"):
        self.rank = 0
        self.world_size = 1
        self.local_rank = 0
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        if use_gpu and not torch.cuda.is_available():
            logger.warning("a GPU was requested but CUDA is not available: training on the CPU")
        self.precision = str(precision)
        self.model: nn.Module | None = None
        self._bare: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self.gradient_clip = 0.0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    # ----------------------------------------------------------------- setup
    def setup(self, model: nn.Module, options: Any, *, steps_per_epoch: int) -> None:
        """Move the model, build optimiser and per-step LR schedule from the options."""
        self.gradient_clip = float(options.gradient_clip)
        self._bare = model.to(self.device)
        self.model = self._bare
        self.optimizer = build_optimizer(
            self._bare, options.optimizer, options.learning_rate, options.l2_penalty
        )
        if getattr(options, "compile", False):
            self.model = torch.compile(self._bare)  # optional; checkpoints keep the bare module's names
        self.scheduler = self._scheduler(self.optimizer, options, steps_per_epoch)
        if self.device.type == "cuda" and self.precision in ("16", "fp16"):
            self.scaler = torch.amp.GradScaler("cuda")

    @staticmethod
    def _scheduler(optimizer, options, steps_per_epoch: int):
        total = max(int(options.epochs) * steps_per_epoch, 1)
        warmup = int(round(float(options.learning_rate_warmup_epochs) * steps_per_epoch))
        schedule = getattr(options, "lr_schedule", "linear")
        cycles = float(options.learning_rate_cycles)

        def factor(step: int) -> float:
            return lr_factor(step, total_steps=total, warmup_steps=warmup, schedule=schedule, cycles=cycles)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    @property
    def module(self) -> nn.Module:
        """The bare model (unwrapped), for evaluation and checkpoints."""
        assert self._bare is not None
        return self._bare

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda" and self.precision in ("bf16", "16", "fp16"):
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()

    def to_device(self, batch: Any) -> Any:
        return _move(batch, self.device)

    # ----------------------------------------------------------------- steps
    def train_step(self, batch: Any, loss_fn: LossFn) -> tuple[float, dict[str, float]]:
        """Forward, loss, backward, clip, optimiser and scheduler step. Returns (loss, parts)."""
        assert self.model is not None and self.optimizer is not None and self.scheduler is not None
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            outputs = self.model(batch)
            loss, parts = loss_fn(outputs, batch)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            self._clip()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self._clip()
            self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach()), parts

    def _clip(self) -> None:
        if self.gradient_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.gradient_clip)

    @property
    def learning_rate(self) -> float:
        assert self.optimizer is not None
        return float(self.optimizer.param_groups[0]["lr"])

    # ------------------------------------------------------------ checkpoints
    def training_state(self, run_path: Path | None = None, tag: str = "last") -> dict[str, Any]:
        """Optimiser + scheduler (+ grad scaler) state for the checkpoint (weights_only-loadable)."""
        state: dict[str, Any] = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }
        if self.scaler is not None:
            state["grad_scaler"] = self.scaler.state_dict()
        return state

    def load_training_state(self, state: dict[str, Any], run_path: Path | None = None) -> None:
        """Restore what `training_state` saved (on resume)."""
        self.module.load_state_dict(state["model"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        if "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and "grad_scaler" in state:
            self.scaler.load_state_dict(state["grad_scaler"])

    # --------------------------------------------------------- collectives
    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(tensor)
        return tensor.tolist()

    def _collective_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def close(self) -> None:
        """Tear down what this engine started (the process group)."""


class DDPEngine(Engine):
    """DistributedDataParallel; launched by `torchrun` (env RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).
    Backend nccl on GPU, gloo on CPU."""

    name = "ddp"

    def __init__(self, *, use_gpu: bool, precision: str = "32"):
        super().__init__(use_gpu=use_gpu, precision=precision)
        self._own_group = _init_process_group(self.device)
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)

    def setup(self, model: nn.Module, options: Any, *, steps_per_epoch: int) -> None:
        super().setup(model, options, steps_per_epoch=steps_per_epoch)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # The loss gives every head a (zero) gradient even when its scale is 0, so no unused-parameter scan.
        self.model = nn.parallel.DistributedDataParallel(
            self.model, device_ids=device_ids, find_unused_parameters=False
        )

    def close(self) -> None:
        if self._own_group and dist.is_initialized():
            dist.destroy_process_group()


class DeepSpeedEngine(Engine):
    """DeepSpeed (any ZeRO stage). Config from options.deepspeed_config (JSON path) or built from the options;
    a missing distributed env (single process) is filled with a free local rendezvous."""

    name = "deepspeed"

    def __init__(self, *, use_gpu: bool, precision: str = "32", config_path: str = "", zero_stage: int = 0):
        super().__init__(use_gpu=use_gpu, precision=precision)
        torch_extensions_dir()
        if "RANK" not in os.environ:
            os.environ.update(
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(free_port()),
                RANK="0",
                LOCAL_RANK="0",
                WORLD_SIZE="1",
            )
        self._own_group = _init_process_group(self.device)
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
        self.config_path = config_path
        self.zero_stage = int(zero_stage)
        self._engine = None
        self._input_dtype: torch.dtype | None = None

    def deepspeed_config(self, options: Any) -> dict[str, Any]:
        """The DeepSpeed config: the user's JSON (batch sizes and clipping filled in when absent) or our default."""
        if self.config_path:
            path = Path(self.config_path)
            try:
                config = json.loads(path.read_text())
            except OSError as exc:
                raise ConfigError(
                    path, "deepspeed_config", f"cannot read the DeepSpeed config: {exc.strerror}"
                ) from None
            except json.JSONDecodeError as exc:
                raise ConfigError(path, None, f"not valid JSON: {exc.msg} (line {exc.lineno})") from None
            if not isinstance(config, dict):
                raise ConfigError(path, None, "expected a JSON object")
        else:
            config = {
                # torch's AdamW: DeepSpeed's own CPU Adam would JIT-compile for minutes
                "optimizer": {
                    "type": options.optimizer if options.optimizer in ("Adam", "AdamW") else "AdamW",
                    "params": {
                        "lr": options.learning_rate,
                        "weight_decay": options.l2_penalty,
                        "torch_adam": True,
                    },
                },
                "zero_optimization": {"stage": self.zero_stage},
            }
            if self.precision == "bf16":
                config["bf16"] = {"enabled": True}
            elif self.precision in ("16", "fp16"):
                config["fp16"] = {"enabled": True}
        micro = max(int(options.batch_size) // self.world_size, 1)
        config.pop("train_batch_size", None)
        config.setdefault("train_micro_batch_size_per_gpu", micro)
        config.setdefault("gradient_accumulation_steps", 1)
        if options.gradient_clip > 0:
            config.setdefault("gradient_clipping", float(options.gradient_clip))
        config.setdefault("steps_per_print", 10**9)
        config.setdefault("wall_clock_breakdown", False)
        return config

    def setup(self, model: nn.Module, options: Any, *, steps_per_epoch: int) -> None:
        import deepspeed

        self.gradient_clip = 0.0  # DeepSpeed clips itself (config "gradient_clipping")
        config = self.deepspeed_config(options)
        model = model.to(self.device)
        groups = parameter_groups(model, options.l2_penalty)
        has_optimizer = "optimizer" in config
        optimizer = (
            None
            if has_optimizer
            else build_optimizer(model, options.optimizer, options.learning_rate, options.l2_penalty)
        )

        def scheduler_factory(opt):
            return self._scheduler(opt, options, steps_per_epoch)

        engine, opt, _, sched = deepspeed.initialize(
            model=model,
            model_parameters=groups if has_optimizer else None,
            optimizer=optimizer,
            lr_scheduler=scheduler_factory,
            config=config,
            dist_init_required=False,
        )
        self._engine = engine
        self.model = engine
        self.optimizer = opt
        self.scheduler = sched
        if engine.bfloat16_enabled():
            self._input_dtype = torch.bfloat16
        elif engine.fp16_enabled():
            self._input_dtype = torch.float16

    @property
    def module(self) -> nn.Module:
        assert self._engine is not None
        return self._engine.module

    def autocast(self) -> contextlib.AbstractContextManager:
        # DeepSpeed holds the weights in bf16/fp16 while inputs and buffers (normalisation statistics) stay
        # float32: autocast casts at each matmul, so the model needs no precision-specific code.
        if self._input_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self._input_dtype)

    def train_step(self, batch: Any, loss_fn: LossFn) -> tuple[float, dict[str, float]]:
        engine = self._engine
        engine.train()
        with self.autocast():
            outputs = engine(batch)
            loss, parts = loss_fn(outputs, batch)
        engine.backward(loss)
        engine.step()  # optimiser + clipping + LR scheduler
        return float(loss.detach().float()), parts

    @property
    def learning_rate(self) -> float:
        return float(self._engine.get_lr()[0])

    def training_state(self, run_path: Path | None = None, tag: str = "last") -> dict[str, Any]:
        """The scheduler here; the (possibly ZeRO-partitioned) optimiser in DeepSpeed's own checkpoint under
        `checkpoints/deepspeed/<tag>` (written by every rank)."""
        state: dict[str, Any] = {"scheduler": self.scheduler.state_dict(), "deepspeed_tag": tag}
        if run_path is not None:
            self._engine.save_checkpoint(
                str(Path(run_path) / "checkpoints" / "deepspeed"), tag=tag, save_latest=False
            )
        return state

    def load_training_state(self, state: dict[str, Any], run_path: Path | None = None) -> None:
        tag = state.get("deepspeed_tag")
        ds_dir = None if run_path is None else Path(run_path) / "checkpoints" / "deepspeed"
        if tag and ds_dir is not None and (ds_dir / str(tag)).is_dir():
            self._engine.load_checkpoint(
                str(ds_dir), tag=str(tag), load_optimizer_states=True, load_lr_scheduler_states=True
            )
        else:
            logger.warning(
                "no DeepSpeed optimiser state next to the checkpoint: resuming with fresh optimiser state"
            )
            self.module.load_state_dict(state["model"])
            if "scheduler" in state:
                self.scheduler.load_state_dict(state["scheduler"])

    def close(self) -> None:
        if self._own_group and dist.is_initialized():
            dist.destroy_process_group()


def _init_process_group(device: torch.device) -> bool:
    """Join the process group described by the torchrun environment; True if this call created it."""
    if dist.is_initialized():
        return False
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ConfigError(
            "--engine",
            "ddp",
            "needs a distributed launch: run under `torchrun --nproc_per_node N "
            f"-m spanet2.train ...` (missing environment: {', '.join(missing)})",
        )
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return True


def make_engine(name: str, options: Any, *, use_gpu: bool) -> Engine:
    """Build the engine `name` ("single" | "ddp" | "deepspeed") from the options."""
    precision = str(getattr(options, "precision", "32"))
    if name == "single":
        return Engine(use_gpu=use_gpu, precision=precision)
    if name == "ddp":
        return DDPEngine(use_gpu=use_gpu, precision=precision)
    if name == "deepspeed":
        return DeepSpeedEngine(
            use_gpu=use_gpu,
            precision=precision,
            config_path=str(getattr(options, "deepspeed_config", "") or ""),
            zero_stage=int(getattr(options, "zero_stage", 0)),
        )
    raise ConfigError("--engine", None, f"expected one of {', '.join(ENGINES)}, got {name!r}")
