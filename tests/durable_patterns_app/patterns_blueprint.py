"""A durable blueprint registered on the app, as the samples-v2 `blueprint` app does."""

import azure.durable_functions as df
import azure.functions as func

bp = df.Blueprint()


@bp.route(route="startChaining")
@bp.durable_client_input(client_name="client")
async def start_chaining(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    instance_id = await client.start_new("chaining")
    return client.create_check_status_response(req, instance_id)


@bp.orchestration_trigger(context_name="context")
def chaining(context: df.DurableOrchestrationContext):
    result1 = yield context.call_activity("say_hello", "Tokyo")
    result2 = yield context.call_activity("say_hello", "Seattle")
    result3 = yield context.call_activity("say_hello", "London")
    return [result1, result2, result3]


@bp.activity_trigger(input_name="city")
def say_hello(city: str) -> str:
    return f"Hello {city}!"
