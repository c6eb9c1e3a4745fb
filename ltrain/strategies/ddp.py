"""`DDPStrategy`: data-parallel training on torch.distributed, one process per device.

launcher.py starts the processes when no launcher (torchrun) did.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import os
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch

from ltrain.errors import MisconfigurationException
from ltrain.strategies.devices import device_indices

if TYPE_CHECKING:
    from ltrain.module import Module

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
        indices = device_indices(devices, accelerator)
        if launched is not None:
            local_world = launched["LOCAL_WORLD_SIZE"]
            if len(indices) != local_world:
                if accelerator == "cuda" or len(indices) != 1:
                    raise MisconfigurationException(
                        f"devices={len(indices)} but the launcher started {local_world} "
                        "processes on this node; make them agree (or use devices='auto')"
                    )
                indices = [0] * local_world
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
        self.device_indices = indices
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
        from ltrain.strategies import launcher

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

    def all_gather(
        self, tensor: torch.Tensor, group: Any = None, sync_grads: bool = False
    ) -> torch.Tensor:
        """Every rank's `tensor` (same shape on each), stacked in rank order: (world_size, ...);
        with `sync_grads` the gradient flows back to each rank's own tensor."""
        from torch.distributed.nn.functional import all_gather

        tensor = tensor.contiguous()
        with contextlib.nullcontext() if sync_grads else torch.no_grad():
            gathered = all_gather(tensor, group) if group is not None else all_gather(tensor)
        return torch.stack(gathered)

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

    def wrap(self, module: Module) -> torch.nn.Module:
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

    def __init__(self, module: Module) -> None:
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
    from ltrain.strategies.launcher import follow_parent

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
    """Destroy the process group while the interpreter is whole. Cycles are collected first:
    a DistributedDataParallel wrapper left in one still holds the group, whose gloo threads
    would then be torn down during interpreter finalization, which can abort the process
    ("terminate called without an active exception", exit code 134)."""
    import gc

    import torch.distributed as dist

    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
        gc.collect()
