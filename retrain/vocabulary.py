"""The words of the `MLPlatform` port, spelled once: the tags that tie a job, a data asset and a model
version to the cycle that made them, and the job and provisioning status sets (Azure ML's vocabulary,
which the local adapter speaks too). `retrain.ports` re-exports them; see docs/architecture.md."""

from __future__ import annotations

# -- Tags -------------------------------------------------------------------------------------------------
# On a training job (set at submit; the Event Grid handler reads the first two back) and on the model
# version registered from it (`workflow.lineage_tags`), and on a data asset.
TAG_INSTANCE_ID = "orchestration_instance_id"  # the orchestration that submitted the job / registered it
TAG_TICKER = "ticker"
TAG_DATA_ASSET = "data_asset"
TAG_DATA_VERSION = "data_version"
TAG_CODE_VERSION = "code_version"
TAG_JOB_NAME = "job_name"
TAG_TRAINER = "trainer"  # the trainer that produced it (champion and challenger may differ)
TAG_MODEL_FAMILY = "model_family"
TAG_BUNDLE = "bundle"  # "true" on a model bundle's ModelRef (ports.BundleRef.as_model)
TAG_BATCH_TICKERS = "batch_tickers"  # on a batch training job: the tickers it trains, comma-joined, in order
# Azure: on a job, "<model>:<version>" of the champion it was compared with; on a model version, "true"
# for the one champion. The local adapter marks the champion with an MLflow alias of the same name.
TAG_CHAMPION = "champion"
TAG_CHAMPION_VERSION = "champion_version"  # local adapter, on a job: the champion's version
TAG_GATE_DECISION = "gate_decision"  # "deploy" or "reject"
TAG_GATE_FORCED = "gate_forced"
TAG_GATE_REASONS = "gate_reasons"
TAG_METRIC_PREFIX = "metric_"  # metric_<name> on a model version
# Set by the trainer on its run (YYYY-MM-DD, docs/trainer-contract.md) and copied by `register_model` onto
# the model version: the last target date the served model was fitted on (the data end, with the refit;
# the monitor's drift reference ends there) and the last one the evaluation model (whose test metrics the
# gate judged) was fitted on.
TAG_FITTED_DATA_END = "fitted_data_end"
TAG_EVALUATION_FIT_END = "evaluation_fit_end"
FIT_END_TAGS = (TAG_FITTED_DATA_END, TAG_EVALUATION_FIT_END)
# On a data asset.
TAG_SOURCE = "source"
TAG_SHA256 = "sha256"
TAG_AS_OF = "as_of"

GATE_DEPLOY = "deploy"
GATE_REJECT = "reject"

# -- Job statuses (azure.ai.ml.entities.JobStatus vocabulary) -----------------------------------------------
JOB_TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Canceled", "NotResponding", "Paused"})
JOB_STATUSES = (
    frozenset(
        {
            "NotStarted",
            "Starting",
            "Provisioning",
            "Preparing",
            "Queued",
            "Running",
            "Finalizing",
            "CancelRequested",
            "Unknown",
        }
    )
    | JOB_TERMINAL_STATUSES
)
# The statuses a local training process ends in (it is never NotResponding or Paused).
JOB_ENDED_STATUSES = frozenset({"Completed", "Failed", "Canceled"})

# -- Provisioning states of endpoints and deployments ----------------------------------------------------
# Azure's vocabulary; `NotFound` is ours. A traffic update is a long-running operation: the endpoint is
# `Updating` until it is `Succeeded` with the new traffic.
PROVISIONING_STATES = frozenset(
    {"Creating", "Updating", "Deleting", "Succeeded", "Failed", "Canceled", "NotFound"}
)
PROVISIONING_TERMINAL = frozenset({"Succeeded", "Failed", "Canceled", "NotFound"})
# While an endpoint is in one of these states, another operation on it is refused (Azure: 409).
PROVISIONING_IN_PROGRESS = frozenset({"Creating", "Updating", "Deleting"})

SLOTS = ("blue", "green")
