// The two Event Grid subscriptions that deliver Azure ML job events to the Function App's `job_events`
// function. A module, so they can be created on an existing system topic in another resource group than
// the deployment's (Azure allows one system topic per source; the workspace may already have one).

@description('Name of the Event Grid system topic of the Azure ML workspace, in the resource group this module is deployed to.')
param topicName string

@description('ARM id of the Function App whose `job_events` function receives the events.')
param functionAppId string

@description('Job statuses after which a job never changes again: the only RunStatusChanged events delivered.')
param terminalRunStatuses array

@description('The run tag every job the orchestrator submits carries (retrain.vocabulary.TAG_INSTANCE_ID): the only jobs whose events are delivered.')
param instanceTag string

resource topic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = {
  name: topicName
}

var destination = {
  endpointType: 'AzureFunction'
  properties: {
    resourceId: '${functionAppId}/functions/job_events'
    maxEventsPerBatch: 1
    preferredBatchSizeInKilobytes: 64
  }
}
var retryPolicy = {
  maxDeliveryAttempts: 30
  eventTimeToLiveInMinutes: 1440
}
// Jobs of other users of the workspace wake nothing: only runs tagged by an orchestration are delivered.
var submittedByAnOrchestration = {
  operatorType: 'IsNotNull'
  key: 'data.runTags.${instanceTag}'
}

// Two subscriptions because advanced filters apply to every event type of a subscription, and
// RunCompleted events carry no data.runStatus (a filter on it would drop them all).
resource runCompletedSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: topic
  name: 'job-completed-to-function'
  properties: {
    destination: destination
    filter: {
      includedEventTypes: [
        'Microsoft.MachineLearningServices.RunCompleted'
      ]
      advancedFilters: [
        submittedByAnOrchestration
      ]
    }
    eventDeliverySchema: 'EventGridSchema'
    retryPolicy: retryPolicy
  }
}

resource runStatusSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: topic
  name: 'job-terminal-status-to-function'
  properties: {
    destination: destination
    filter: {
      includedEventTypes: [
        'Microsoft.MachineLearningServices.RunStatusChanged'
      ]
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.runStatus'
          values: terminalRunStatuses
        }
        submittedByAnOrchestration
      ]
    }
    eventDeliverySchema: 'EventGridSchema'
    retryPolicy: retryPolicy
  }
}

// Azure ML model monitoring: a breached signal's threshold-evaluation run is tagged
// azureml_modelmonitor_threshold_breached ("The signal '<name>' has failed due to ..."); it carries no
// orchestration tag, so it needs a subscription of its own. job_events starts a cycle for the ticker the
// signal is named after (docs/azure.md, "Azure ML model monitoring starts a cycle").
resource monitorBreachSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: topic
  name: 'model-monitor-breach-to-function'
  properties: {
    destination: destination
    filter: {
      includedEventTypes: [
        'Microsoft.MachineLearningServices.RunStatusChanged'
      ]
      advancedFilters: [
        {
          operatorType: 'StringContains'
          key: 'data.runTags.azureml_modelmonitor_threshold_breached'
          values: [
            'has failed due to'
          ]
        }
      ]
    }
    eventDeliverySchema: 'EventGridSchema'
    retryPolicy: retryPolicy
  }
}
