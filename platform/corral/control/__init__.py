"""Reconcilers: (object, observed world) -> (status, actions), shared by the embedded loop and the operator.

* One pure reconciler per kind: :func:`reconcile_dataset`, :func:`reconcile_model`,
  :func:`reconcile_finetunejob`, :func:`reconcile_deployment`, :func:`reconcile_gpupool`.
  They read only their arguments (no clock, no environment, no I/O) and never know which
  backend they run on.
* :mod:`~corral.control._actions` - what they ask for (submit a Ray job, deploy a Serve
  config, create an object, ...); :mod:`~corral.control._observed` - what they are given.
* :class:`Runner` - the loop over a store and a driver, the one both composition roots
  assemble (:mod:`corral.embedded` for ``corral up``, ``corral_operator`` on a cluster);
  this package imports neither.
"""

from ._actions import (
    Action,
    CreateObject,
    DeleteServe,
    DeployServe,
    MaterializeModel,
    PatchObject,
    RecordEvent,
    Result,
    StopJob,
    SubmitJob,
    WriteFile,
)
from ._conditions import get_condition, is_true, set_condition
from ._dataset import reconcile_dataset
from ._deployment import app_config, app_name, config_matches, reconcile_deployment, route_prefix
from ._finetunejob import reconcile_finetunejob
from ._gpupool import reconcile_gpupool
from ._jobspec import job_document, job_files, output_model_name, submission_id
from ._lineage import DATASETS_ANNOTATION, SOURCE_JOB_ANNOTATION
from ._model import reconcile_model
from ._observed import (
    FINALIZER,
    ArtifactProbe,
    ControlSettings,
    DatasetCheck,
    DatasetWorld,
    DeploymentWorld,
    FineTuneJobWorld,
    GPUPoolWorld,
    ModelWorld,
    TrainingObservation,
)
from ._runner import Runner

__all__ = [
    "DATASETS_ANNOTATION",
    "FINALIZER",
    "SOURCE_JOB_ANNOTATION",
    "Action",
    "ArtifactProbe",
    "ControlSettings",
    "CreateObject",
    "DatasetCheck",
    "DatasetWorld",
    "DeleteServe",
    "DeployServe",
    "DeploymentWorld",
    "FineTuneJobWorld",
    "GPUPoolWorld",
    "MaterializeModel",
    "ModelWorld",
    "PatchObject",
    "RecordEvent",
    "Result",
    "Runner",
    "StopJob",
    "SubmitJob",
    "TrainingObservation",
    "WriteFile",
    "app_config",
    "app_name",
    "config_matches",
    "get_condition",
    "is_true",
    "job_document",
    "job_files",
    "output_model_name",
    "reconcile_dataset",
    "reconcile_deployment",
    "reconcile_finetunejob",
    "reconcile_gpupool",
    "reconcile_model",
    "route_prefix",
    "set_condition",
    "submission_id",
]
