"""Training, evaluation, checkpoints and run directories, studies, precision and distributed
set-up: the code behind ``nlsam train``, ``nlsam eval`` and ``nlsam study``.

* :mod:`.config`: :class:`TrainConfig`, every option of a training, and the YAML files it is read
  from and saved to;
* :mod:`.train`: :func:`train`, one run into its run directory, resumable: the loop;
* :mod:`.prepare`: :func:`prepare_run`, everything a run settles before its loop;
* :mod:`.optimisation`: the optimiser, the lr schedule and :class:`Optimisation`, one epoch of training;
* :mod:`.device`: the device and the random generators; :mod:`.progress`: what a run prints;
* :mod:`.evaluate`: :func:`evaluate`, top-1 / top-5 and loss of a network on a loader;
* :mod:`.loading`: :func:`build_network` and :func:`load_model`, a network from a config or a run;
* :mod:`.checkpoint` and :mod:`.run_dir`: what a run directory holds, its lock, starting and resuming;
* :mod:`.study`: grids of runs (:func:`load_study`, :func:`execute_study`);
* :mod:`.precision`: ``--amp`` and the precision a run trained in;
* :mod:`.distributed`: the process group of a ``torchrun`` training.
"""

from .checkpoint import (
    best_checkpoint,
    best_epoch,
    load_checkpoint,
    peek_checkpoint,
    resolve_checkpoint_path,
    save_checkpoint,
)
from .config import (
    AMP_MODES,
    CHOICES,
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_YAML_BYTES,
    MAX_YAML_DEPTH,
    TrainConfig,
    config_keys,
    load_yaml,
    parse_yaml,
    resolve_config,
    save_yaml,
)
from .device import resolve_device, seed_everything
from .distributed import DistInfo
from .evaluate import TTA_MODES, check_finite_outputs, evaluate
from .loading import META_DEFAULTS, build_network, load_model, model_from_checkpoint
from .optimisation import NonFiniteLossError, Optimisation, build_optimizer, lr_factor
from .precision import (
    cpu_has_native_bf16,
    listed_precisions,
    machine_name,
    precision_name,
    resolve_amp,
    trained_precision,
)
from .prepare import PreparedRun, data_meta, prepare_run
from .progress import Progress
from .run_dir import (
    RESUME_CHANGEABLE,
    RunDirInUseError,
    default_run_dir,
    lock_holder,
    lock_run_dir,
    open_run_dir,
    read_metrics,
    recorded_machines,
    recorded_precision,
    resume_changes,
    resumed_config,
    saved_settings,
)
from .study import (
    RunStatus,
    Study,
    StudyRun,
    load_study,
    run_state,
    run_status,
    waiting_seed_blocks,
)
from .study_runner import (
    StudyDirInUseError,
    execute_study,
    lock_study_dir,
)
from .train import train

__all__ = [
    "RESUME_CHANGEABLE",
    "AMP_MODES",
    "CHOICES",
    "DistInfo",
    "MAX_BATCH",
    "MAX_EPOCHS",
    "MAX_YAML_BYTES",
    "MAX_YAML_DEPTH",
    "META_DEFAULTS",
    "NonFiniteLossError",
    "Optimisation",
    "PreparedRun",
    "Progress",
    "RunDirInUseError",
    "RunStatus",
    "Study",
    "StudyDirInUseError",
    "StudyRun",
    "TTA_MODES",
    "TrainConfig",
    "best_checkpoint",
    "best_epoch",
    "build_network",
    "build_optimizer",
    "check_finite_outputs",
    "config_keys",
    "cpu_has_native_bf16",
    "data_meta",
    "default_run_dir",
    "evaluate",
    "execute_study",
    "listed_precisions",
    "load_checkpoint",
    "load_model",
    "load_study",
    "load_yaml",
    "lock_holder",
    "lock_run_dir",
    "lock_study_dir",
    "lr_factor",
    "machine_name",
    "model_from_checkpoint",
    "open_run_dir",
    "parse_yaml",
    "peek_checkpoint",
    "precision_name",
    "prepare_run",
    "read_metrics",
    "recorded_machines",
    "recorded_precision",
    "resolve_amp",
    "resolve_checkpoint_path",
    "resolve_config",
    "resolve_device",
    "resume_changes",
    "resumed_config",
    "run_state",
    "run_status",
    "save_checkpoint",
    "save_yaml",
    "saved_settings",
    "seed_everything",
    "train",
    "trained_precision",
    "waiting_seed_blocks",
]
