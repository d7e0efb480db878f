"""The Azure Functions entry point: the Durable Functions app and its blueprints. Thin on purpose;
the code lives in `retrain` (triggers, orchestrator, activities)."""

import azure.durable_functions as df
import azure.functions as func

from retrain import activities, batch_jobs, cycle_guard, fleet, rollout, traffic_control, triggers, workflow
from retrain.monitoring import fleet_monitor
from retrain.monitoring import http as monitoring_http
from retrain.monitoring import orchestration as monitoring

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(triggers.bp)
app.register_functions(activities.bp)
app.register_functions(batch_jobs.bp)
app.register_functions(cycle_guard.bp)
app.register_functions(traffic_control.bp)
app.register_functions(monitoring_http.bp)
app.register_functions(monitoring.bp)
app.register_functions(fleet_monitor.bp)
# Legacy, replay only: cycles started by older code finish; no trigger starts it (a ticker is a fleet of one).
app.orchestration_trigger(context_name="context", orchestration=workflow.ORCHESTRATOR_NAME)(
    workflow.retrain_orchestrator
)
app.orchestration_trigger(context_name="context", orchestration=rollout.ROLLOUT_ORCHESTRATOR)(
    rollout.rollout_orchestrator
)
app.orchestration_trigger(context_name="context", orchestration=fleet.FLEET_ORCHESTRATOR)(
    fleet.fleet_orchestrator
)
app.orchestration_trigger(context_name="context", orchestration=fleet.BATCH_ORCHESTRATOR)(
    fleet.fleet_batch_orchestrator
)
