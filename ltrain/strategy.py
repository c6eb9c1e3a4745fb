"""Where a run executes: the accelerator and device choice, and the process layout around it.

The loop talks to a strategy object (`root_device`, `reduce`, `broadcast`, `is_global_zero`),
never to environment variables. `SingleDeviceStrategy` runs one process on one device;
`DDPStrategy` runs one process per device on torch.distributed (launcher.py starts them).
"""

from __future__ import annotations

import atexit
import inspect
import os
from datetime import timedelta
from typing import Any

import torch

from ltrain.errors import MisconfigurationException

VALID_ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(accelerator: str, devices: Any) -> torch.device:
    """The one device for `accelerator` ('auto' tries cuda, then mps, then cpu) and `devices`."""
    accelerator = _resolve_accelerator(accelerator)
    index = _device_index(devices, accelerator)
    if accelerator == "cuda":
        if index >= torch.cuda.device_count():
            raise MisconfigurationException(
                f"devices={devices!r}: there are only {torch.cuda.device_count()} CUDA devices"
            )
        return torch.device("cuda", index)
    return torch.device(accelerator)


def _device_index(devices: Any, accelerator: str) -> int:
    """The one device index `devices` names: 'auto', 1, '1', [i] or 'i,'."""
    if devices in ("auto", 1, "1", -1, "-1") and not isinstance(devices, bool):
        return 0
    if isinstance(devices, (list, tuple)) and len(devices) == 1 and isinstance(devices[0], int):
        return devices[0]
    if isinstance(devices, str) and devices.endswith(",") and devices[:-1].strip().isdigit():
        return int(devices[:-1])
    raise MisconfigurationException(
        f"devices={devices!r} is not valid for accelerator={accelerator!r}; "
        "use 'auto', a number of devices, or a list of device indices such as [0, 1]."
    )


def _device_indices(devices: Any, accelerator: str) -> list[int]:
    """The device indices of one node: one process runs on each.

    'auto' (or -1) means every GPU, or one process on the CPU; N means the first N devices (N
    processes on the CPU); a list or a string '0,2' names them.
    """
    if isinstance(devices, bool):
        raise MisconfigurationException(f"devices={devices!r}: expected a number, a list or 'auto'")
    available = torch.cuda.device_count() if accelerator == "cuda" else None
    if devices in ("auto", -1, "-1"):
        return list(range(available)) if available else [0]
    if isinstance(devices, str):
        parts = [p.strip() for p in devices.split(",") if p.strip()]
        if len(parts) == 1 and not devices.strip().endswith(","):
            devices = parts[0]
        elif parts and all(p.isdigit() for p in parts):
            devices = [int(p) for p in parts]
        if isinstance(devices, str):
            if not devices.isdigit():
                raise MisconfigurationException(
                    f"devices={devices!r}: expected a number, a list such as [0, 1], or 'auto'"
                )
            devices = int(devices)
    if isinstance(devices, int):
        if devices < 1:
            raise MisconfigurationException(
                f"devices={devices}: expected at least 1 (or -1 / 'auto' for every device)"
            )
        indices = list(range(devices))
    elif (
        isinstance(devices, (list, tuple))
        and devices
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in devices)
    ):
        indices = list(devices)
    else:
        raise MisconfigurationException(
            f"devices={devices!r}: expected a number, a list of device indices such as [0, 1], "
            "or 'auto'"
        )
    if available is not None and max(indices) >= available:
        raise MisconfigurationException(
            f"devices={devices!r}: there are only {available} CUDA devices"
        )
    if accelerator == "mps" and len(indices) > 1:
        raise MisconfigurationException(f"devices={devices!r}: there is only one MPS device")
    return indices


def _resolve_accelerator(accelerator: str) -> str:
    """'cpu', 'cuda' or 'mps' for `accelerator` ('auto' tries cuda, then mps, then cpu)."""
    if accelerator not in VALID_ACCELERATORS:
        raise MisconfigurationException(
            f"accelerator={accelerator!r} is not supported; valid: {', '.join(VALID_ACCELERATORS)}"
        )
    cuda, mps = torch.cuda.is_available(), _mps_available()
    if accelerator == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if accelerator == "gpu":
        if not (cuda or mps):
            raise MisconfigurationException(
                "accelerator='gpu' but no GPU is available (no CUDA or MPS device found); "
                "use accelerator='cpu' or 'auto'."
            )
        return "cuda" if cuda else "mps"
    if accelerator == "cuda" and not cuda:
        raise MisconfigurationException(
            "accelerator='cuda' but torch.cuda.is_available() is False; use 'cpu' or 'auto'."
        )
    if accelerator == "mps" and not mps:
        raise MisconfigurationException("accelerator='mps' but no MPS device is available.")
    return accelerator


class SingleDeviceStrategy:
    """One process on one device: reductions are identities and every rank is rank zero."""

    world_size = 1
    global_rank = 0
    local_rank = 0
    node_rank = 0
    is_global_zero = True
    distributed = False

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.root_device = torch.device(device)

    def setup(self) -> None:
        """Nothing to start with one process."""

    def reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        return tensor

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        return decision

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return obj

    def barrier(self, name: str | None = None) -> None:
        """Nothing to wait for with one process."""

    def shard_loader(self, loader: Any, kind: str) -> Any:
        return loader

    def before_manual_backward(self, runner: Any, loss: torch.Tensor) -> None:
        """Nothing to prepare: gradients stay in this process."""

    def wrap(self, module: torch.nn.Module) -> None:
        """No wrapper: the trainer calls the module's training_step itself."""


DDP_STRATEGY_NAMES = ("ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false")


class DDPStrategy:
    """Data-parallel training on torch.distributed: one process per device, gradients averaged.

    Under a launcher (torchrun, or ltrain's own: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
    MASTER_PORT set) the process joins that group. Otherwise `setup()` starts the other local
    processes the way torchrun would, re-running this program, and this one becomes rank 0.
    Backend: nccl on CUDA, gloo on the CPU. `timeout` bounds every collective, so a rank that
    died ends the others with an error instead of a hang. Keyword arguments beyond these go to
    `torch.nn.parallel.DistributedDataParallel` (find_unused_parameters, static_graph, ...).
    """

    distributed = True

    def __init__(
        self,
        process_group_backend: str | None = None,
        timeout: timedelta | float = timedelta(minutes=30),
        start_method: str = "popen",
        **ddp_kwargs: Any,
    ) -> None:
        if start_method != "popen":
            raise MisconfigurationException(
                f"DDPStrategy(start_method={start_method!r}): only 'popen' (re-running the "
                "program once per process, as torchrun does) is available"
            )
        if process_group_backend not in (None, "gloo", "nccl"):
            raise MisconfigurationException(
                f"DDPStrategy(process_group_backend={process_group_backend!r}): expected "
                "'gloo', 'nccl' or None (nccl on CUDA, gloo on the CPU)"
            )
        from torch.nn.parallel import DistributedDataParallel

        accepted = inspect.signature(DistributedDataParallel.__init__).parameters
        unknown = sorted(set(ddp_kwargs) - set(accepted) - {"module", "device_ids"})
        if unknown:
            raise MisconfigurationException(
                f"DDPStrategy({', '.join(unknown)}=...): not an argument of "
                "torch.nn.parallel.DistributedDataParallel"
            )
        self.process_group_backend = process_group_backend
        self.timeout = timeout if isinstance(timeout, timedelta) else timedelta(seconds=timeout)
        self.ddp_kwargs = ddp_kwargs
        self.accelerator = "cpu"
        self.device_indices = [0]
        self.num_nodes = 1
        self._launched: dict[str, int] | None = None
        self._children: list[Any] = []

    def configure(self, accelerator: str, devices: Any, num_nodes: int) -> None:
        """Fix the process layout; the trainer calls this once with its own arguments."""
        if accelerator == "mps":
            raise MisconfigurationException(
                "strategy='ddp' is not available on MPS; use accelerator='cpu' or a CUDA machine"
            )
        self.accelerator = accelerator
        self.num_nodes = num_nodes
        launched = launcher_environment()
        if launched is not None and devices in ("auto", -1, "-1"):
            devices = launched["LOCAL_WORLD_SIZE"]  # as many as the launcher started here
        device_indices = _device_indices(devices, accelerator)
        if launched is not None:
            local_world = launched["LOCAL_WORLD_SIZE"]
            if len(device_indices) != local_world:
                if accelerator == "cuda" or len(device_indices) != 1:
                    raise MisconfigurationException(
                        f"devices={len(device_indices)} but the launcher started {local_world} "
                        "processes on this node; make them agree (or use devices='auto')"
                    )
                device_indices = [0] * local_world
            if launched["WORLD_SIZE"] != local_world * num_nodes:
                raise MisconfigurationException(
                    f"num_nodes={num_nodes} with {local_world} processes per node makes "
                    f"{local_world * num_nodes}, but the launcher's WORLD_SIZE is "
                    f"{launched['WORLD_SIZE']}; set num_nodes to the number of nodes"
                )
        elif num_nodes > 1:
            raise MisconfigurationException(
                f"num_nodes={num_nodes}: start one launcher per node, e.g. `torchrun "
                f"--nnodes={num_nodes} --node_rank=<i> --nproc_per_node=<devices> "
                "--master_addr=<node 0> --master_port=29500 -m ltrain fit CONFIG` (see README)"
            )
        self.device_indices = device_indices
        self._launched = launched

    # ------------------------------------------------------------------ layout
    @property
    def world_size(self) -> int:
        if self._launched is not None:
            return self._launched["WORLD_SIZE"]
        return len(self.device_indices) * self.num_nodes

    @property
    def global_rank(self) -> int:
        return self._launched["RANK"] if self._launched is not None else 0

    @property
    def local_rank(self) -> int:
        return self._launched["LOCAL_RANK"] if self._launched is not None else 0

    @property
    def node_rank(self) -> int:
        return self.global_rank // len(self.device_indices)

    @property
    def is_global_zero(self) -> bool:
        return self.global_rank == 0

    @property
    def root_device(self) -> torch.device:
        if self.accelerator == "cuda":
            return torch.device("cuda", self.device_indices[self.local_rank])
        return torch.device(self.accelerator)

    @property
    def backend(self) -> str:
        return self.process_group_backend or ("nccl" if self.accelerator == "cuda" else "gloo")

    # ------------------------------------------------------------------ processes
    def setup(self) -> None:
        """Start the other local processes (when no launcher did) and join the process group."""
        from ltrain import launcher

        if self._launched is None:
            self._children = launcher.start_other_ranks(len(self.device_indices))
            self._launched = launcher_environment()
        if self.accelerator == "cuda":
            torch.cuda.set_device(self.root_device)
        join_process_group(self.backend, self.timeout)

    def reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        """`tensor` reduced over every rank ('mean', 'sum', 'max' or 'min')."""
        import torch.distributed as dist

        ops = {
            "mean": dist.ReduceOp.SUM,
            "sum": dist.ReduceOp.SUM,
            "max": dist.ReduceOp.MAX,
            "min": dist.ReduceOp.MIN,
        }
        # nccl reduces only CUDA tensors: a value logged from a CPU tensor or a number travels
        reduced = tensor.detach().to(self.root_device, dtype=torch.float32, copy=True)
        dist.all_reduce(reduced, op=ops[op])
        reduced = reduced / self.world_size if op == "mean" else reduced
        return reduced.to(tensor.device)

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        """True when every rank (`all`) or any rank decided True: all ranks act the same."""
        flag = torch.tensor(int(bool(decision)), device=self.root_device)
        total = int(self.reduce(flag, "sum").item())
        return total == self.world_size if all else total > 0

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Rank `src`'s `obj` on every rank (any picklable value)."""
        import torch.distributed as dist

        holder = [obj]
        dist.broadcast_object_list(holder, src=src)
        return holder[0]

    def barrier(self, name: str | None = None) -> None:
        import torch.distributed as dist

        dist.barrier()

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def before_manual_backward(self, runner: Any, loss: torch.Tensor) -> None:
        """Get DDP ready for one more backward of the same step (manual optimization).

        DDP's forward prepares the gradient reduction for one backward; a training_step that
        calls manual_backward more than once (a GAN's two losses) must prepare each of them.
        """
        if not torch.is_grad_enabled() or not runner.require_backward_grad_sync:
            return
        runner.require_forward_param_sync = True
        used: list[torch.Tensor] = []
        if runner.find_unused_parameters and not runner.static_graph:
            used = [loss]  # the reducer walks the graph from here to find unused parameters
        runner.reducer._rebuild_buckets()
        runner.reducer.prepare_for_backward(used)

    def shard_loader(self, loader: Any, kind: str) -> Any:
        """This rank's share of `loader` (see data/sharding.py)."""
        from ltrain.data.sharding import shard_loader

        return shard_loader(loader, self.global_rank, self.world_size, kind)

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel around a module whose forward is `module.training_step`.

        Running the step through DDP's forward is what lets DDP prepare the gradient reduction
        of the backward that follows; the user's `self` in training_step stays their module.
        """
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.root_device.index] if self.root_device.type == "cuda" else None
        return DistributedDataParallel(
            _TrainingStepForward(module), device_ids=device_ids, **self.ddp_kwargs
        )


class _TrainingStepForward(torch.nn.Module):
    """Makes `training_step` the forward of a module (what DDP wraps); adds no parameters' names
    to checkpoints, which are always taken from the user's module itself."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module.training_step(*args, **kwargs)


def launcher_environment() -> dict[str, int] | None:
    """RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE when a launcher started this process."""
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    if not all(os.environ.get(name) for name in names):
        return None
    world = int(os.environ["WORLD_SIZE"])
    return {
        "RANK": int(os.environ["RANK"]),
        "WORLD_SIZE": world,
        "LOCAL_RANK": int(os.environ["LOCAL_RANK"]),
        "LOCAL_WORLD_SIZE": int(os.environ.get("LOCAL_WORLD_SIZE", world)),
    }


def join_process_group(backend: str, timeout: timedelta = timedelta(minutes=30)) -> None:
    """Join the launcher's process group (once per process; the env:// rendezvous)."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    from ltrain.launcher import follow_parent

    follow_parent()
    environment = launcher_environment()
    if environment is None:
        raise MisconfigurationException(
            "joining a process group needs RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and "
            "MASTER_PORT (set by torchrun or by ltrain's launcher)"
        )
    dist.init_process_group(
        backend,
        rank=environment["RANK"],
        world_size=environment["WORLD_SIZE"],
        timeout=timeout,
    )
    atexit.register(_leave_process_group)


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def make_strategy(
    strategy: Any, accelerator: str, devices: Any, num_nodes: int
) -> SingleDeviceStrategy | DDPStrategy:
    """The strategy object for the Trainer's arguments.

    'auto' is one device in one process unless several devices or nodes are asked for (or a
    launcher started several processes): then it is 'ddp'.
    """
    if isinstance(strategy, str) and strategy not in ("auto", "single_device", *DDP_STRATEGY_NAMES):
        valid = ", ".join(repr(n) for n in ("auto", "single_device", *DDP_STRATEGY_NAMES))
        raise MisconfigurationException(f"strategy={strategy!r} is not available; valid: {valid}")
    if isinstance(strategy, SingleDeviceStrategy):
        return strategy
    if not isinstance(strategy, (str, DDPStrategy)) and strategy is not None:
        raise MisconfigurationException(
            f"strategy={type(strategy).__name__}: expected a name such as 'ddp', a DDPStrategy "
            "or a SingleDeviceStrategy"
        )
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
        raise MisconfigurationException(f"num_nodes={num_nodes!r}: expected an integer >= 1")
    accelerator = _resolve_accelerator(accelerator)
    launched = launcher_environment()
    several = launched is not None and launched["WORLD_SIZE"] > 1
    if strategy in ("auto", None, "single_device"):
        if devices in ("auto", -1, "-1") and accelerator != "cuda" and not several:
            return SingleDeviceStrategy(select_device(accelerator, devices))
        indices = _device_indices(devices, accelerator)
        if len(indices) == 1 and num_nodes == 1 and not several:
            return SingleDeviceStrategy(select_device(accelerator, [indices[0]]))
        if strategy == "single_device":
            raise MisconfigurationException(
                f"strategy='single_device' with devices={devices!r} and num_nodes={num_nodes}: "
                "several processes need strategy='ddp'"
            )
        strategy = "ddp"
    if isinstance(strategy, str):
        strategy = DDPStrategy(find_unused_parameters=strategy == "ddp_find_unused_parameters_true")
    strategy.configure(accelerator, devices, num_nodes)
    return strategy


def gpu_kind() -> str | None:
    """'cuda' or 'mps' when this machine has such a GPU, else None (Lightning's start-up line)."""
    return "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else None
