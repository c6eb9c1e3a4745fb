"""`Logger`: the interface the trainer writes metrics and hyperparameters through.

Loggers receive Python floats keyed as they should be stored, with `epoch` already in the dict
and the step passed separately (as Lightning does); they never aggregate. `FolderLogger` is the
shared base of the loggers that write into `<save_dir>/<name>/version_<N>` (CSV, TensorBoard):
the version folder is claimed in one place, `runs.claim_version_folder`, and several such loggers
given to one Trainer share one folder (`share_version_folder`).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from argparse import Namespace
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ltrain.errors import MisconfigurationException
from ltrain.files import claim_version_folder, write_text_atomically

if TYPE_CHECKING:
    from torch import nn

    from ltrain.callbacks.model_checkpoint import ModelCheckpoint


class Logger:
    """Base class for loggers; subclasses override what they store."""

    # The CLI hands a logger whose files go into `<save_dir>/<name>/version_<N>` the run folder's
    # save_dir, name and version; loggers with a store of their own (W&B, MLflow) set this False.
    writes_version_folder: ClassVar[bool] = True

    @property
    def name(self) -> str | None:
        return None

    @property
    def version(self) -> int | str | None:
        return None

    @property
    def save_dir(self) -> str | None:
        return None

    @property
    def root_dir(self) -> str | None:
        return None

    @property
    def log_dir(self) -> str | None:
        return None

    @property
    def fixed_log_dir(self) -> str | None:
        """`log_dir` if asking for it creates nothing (no version folder to claim first)."""
        return self.log_dir

    def use_version(self, version: int | str | None) -> None:
        """Write into `version`, claimed by another process of the run, instead of claiming one."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Store one row of values."""

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        """Store the module's hyperparameters."""

    def log_graph(self, model: nn.Module, input_array: Any = None) -> None:
        """Record the model's graph (TensorBoard's `log_graph=True`); called at each stage's start."""

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        """Called (on rank 0) after `checkpoint_callback` wrote a checkpoint file: the hook the
        loggers with `log_model` upload checkpoints from."""

    def save(self) -> None:
        """Make everything logged so far durable."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint records of the logger, so a resume can continue it exactly."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> bool:
        """Return to the state a checkpoint recorded (e.g. drop rows written after it).

        True when this logger goes on in the checkpoint's own files: only there are the rows a
        resume replays written again (elsewhere they would repeat the checkpoint's run).
        """
        return False

    def finalize(self, status: str) -> None:
        """Called once when a run ends with status 'success', 'failed' or 'interrupted'."""
        self.save()


class FolderLogger(Logger):
    """A logger writing into `<save_dir>/<name>/version_<N>` (N: one past the largest existing).

    The folder is claimed (one `mkdir`, never shared with another run) only when first needed.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        name: str | None,
        version: int | str | None,
        prefix: str,
    ) -> None:
        self._save_dir = os.fspath(save_dir)
        self._name = name or ""
        self._version = version
        self._prefix = prefix
        self._log_dir: str | None = None
        self._leader: FolderLogger | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def root_dir(self) -> str:
        return os.path.join(self._save_dir, self._name)

    @property
    def version(self) -> int | str:
        """The version number; asking for it claims the folder (one `mkdir`, never shared)."""
        return self._ensure_version()

    @property
    def log_dir(self) -> str:
        if self._log_dir is None:
            log_dir = self._folder_of(self._ensure_version())
            os.makedirs(log_dir, exist_ok=True)
            self._log_dir = log_dir
        return self._log_dir

    @property
    def fixed_log_dir(self) -> str | None:
        """The version folder if the version is already known, without creating anything."""
        return None if self._version is None else self._folder_of(self._version)

    def _folder_of(self, version: int | str) -> str:
        """The folder a version's files go in (a subclass may add a subfolder)."""
        folder = version if isinstance(version, str) else f"version_{version}"
        return os.path.join(self.root_dir, folder)

    def use_version(self, version: int | str | None) -> None:
        if version is not None and version != self._version:
            self._version = version
            self._log_dir = None  # a folder asked for before belongs to the old version

    def _ensure_version(self) -> int | str:
        if self._version is None:
            if self._leader is not None:
                self._version = self._leader.version
            else:
                self._version, _ = claim_version_folder(self.root_dir)
        return self._version


def use_rank_zero_versions(loggers: Sequence[Logger], strategy: Any) -> None:
    """Every rank of a data-parallel run writes into the version folders rank 0 claims (only
    rank 0 creates folders)."""
    if strategy.world_size == 1 or not loggers:
        return
    versions = [logger.version if strategy.is_global_zero else None for logger in loggers]
    for logger, version in zip(loggers, strategy.broadcast(versions), strict=True):
        logger.use_version(version)


def share_version_folder(loggers: Sequence[Logger]) -> None:
    """Folder loggers under the same `<save_dir>/<name>` write into one version folder.

    The first one claims `version_N` (when it is first needed); each later one without a version
    of its own uses N instead of claiming N+1, so one run's metrics.csv, TensorBoard events and
    hparams.yaml sit side by side.
    """
    leaders: dict[str, FolderLogger] = {}
    for logger in loggers:
        if not isinstance(logger, FolderLogger):
            continue
        leader = leaders.setdefault(os.path.abspath(logger.root_dir), logger)
        if leader is not logger and logger._version is None:
            logger._leader = leader


def write_hparams_yaml(path: str, params: Mapping[str, Any]) -> None:
    """`hparams.yaml` at `path` (atomically): the values plain YAML can hold, keys sorted."""
    import yaml

    plain = yaml_safe_items(params, "hparams.yaml")
    text = yaml.safe_dump(plain, sort_keys=True) if plain else "{}\n"
    write_text_atomically(path, text)


def as_params(params: Mapping[str, Any] | Namespace) -> dict[str, Any]:
    """Hyperparameters as a dict: Lightning's loggers take a mapping or an argparse Namespace."""
    if isinstance(params, Namespace):
        return vars(params)
    if isinstance(params, Mapping):
        return dict(params)
    raise TypeError(
        f"log_hyperparams: expected a dict or an argparse.Namespace, got {type(params).__name__}"
    )


def add_prefix(metrics: Mapping[str, float], prefix: str) -> dict[str, float]:
    """Lightning's `prefix` argument: keys become `<prefix>-<key>`."""
    if not prefix:
        return dict(metrics)
    return {f"{prefix}-{key}": value for key, value in metrics.items()}


def yaml_safe_items(params: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The items plain YAML can hold; each other one is skipped with a warning naming it."""
    import yaml

    plain = {}
    for key, value in params.items():
        try:
            yaml.safe_dump(value)
        except yaml.YAMLError:
            warnings.warn(
                f"{where}: skipping {key!r}, a {type(value).__name__} is not plain data "
                "(numbers, strings, lists, dicts)",
                stacklevel=2,
            )
            continue
        plain[key] = value
    return plain


def flatten_params(params: Mapping[str, Any], parent: str = "") -> dict[str, Any]:
    """Nested dicts as `outer/inner` keys: TensorBoard's and MLflow's hparams are flat."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{parent}/{key}" if parent else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, name))
        else:
            flat[name] = value
    return flat


def package_installed(module: str) -> bool:
    """Whether an optional package can be imported (it is not imported to find out)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require_package(module: str, logger: str, extra: str) -> None:
    """Refuse to build `logger` when its optional package is missing, naming the install line."""
    if not package_installed(module):
        raise MisconfigurationException(
            f"{logger} needs the {module!r} package, which is not installed: "
            f"pip install 'ltrain[{extra}]'"
        )
