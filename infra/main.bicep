// The Azure side of retrain: a Python 3.11 Function App on Flex Consumption (Linux) that runs the
// durable retraining orchestration against an EXISTING Azure ML workspace in this resource group.
//
//   az deployment group create -g <rg> -f infra/main.bicep -p infra/main.parameters.json
//
// Creates: storage account (host + Durable task hub + deployment package, identity-based access only),
// Log Analytics + Application Insights, a user-assigned managed identity, the Flex Consumption plan
// and Function App with every app setting from local.settings.sample.json, the training cluster
// (AmlCompute, min 0 nodes), role assignments (least privilege), and the Event Grid system topic on
// the workspace with a subscription to the `job_events` function (second pass, see deployEventSubscription).

targetScope = 'resourceGroup'

@description('Azure region of the Function App resources.')
param location string = resourceGroup().location

@description('Short name used to derive resource names (lowercase letters and digits).')
@minLength(3)
@maxLength(11)
param baseName string = 'retrain'

@description('Name of the existing Azure ML workspace (in this resource group).')
param workspaceName string

@description('Comma-separated tickers the weekly timer retrains (RETRAIN_TICKERS).')
param tickers string = 'MSFT'

@description('Six-field NCRONTAB (UTC) of the retraining timer (RETRAIN_SCHEDULE).')
param schedule string = '0 0 1 * * Mon'

@description('Market data source (RETRAIN_SOURCE): yfinance, sample or csv:PATH.')
param source string = 'yfinance'

@description('AmlCompute training cluster (AZUREML_COMPUTE_NAME); created here with min 0 nodes.')
param computeName string = 'cpu-cluster'

@description('VM size of the training cluster (AZUREML_COMPUTE_SIZE).')
param computeSize string = 'Standard_DS3_v2'

@description('Maximum nodes of the training cluster (AZUREML_COMPUTE_MAX_NODES).')
@minValue(1)
param computeMaxNodes int = 2

@description('VM size of the online deployments (AZUREML_ENDPOINT_INSTANCE_TYPE).')
param endpointInstanceType string = 'Standard_DS3_v2'

@description('Create the Event Grid subscription to the job_events function. Event Grid checks that the function exists, so deploy once with false, publish the code (func azure functionapp publish), then deploy again with true.')
param deployEventSubscription bool = false

@description('Maximum Flex Consumption instances.')
param maximumInstanceCount int = 40

@description('Memory per Flex Consumption instance (MB).')
@allowed([2048, 4096])
param instanceMemoryMB int = 2048

var suffix = uniqueString(resourceGroup().id, baseName)
var storageName = toLower('st${baseName}${take(suffix, 10)}')
var functionAppName = 'func-${baseName}-${take(suffix, 8)}'
var deploymentContainer = 'app-package-${take(suffix, 8)}'

// Built-in role definition ids.
var roles = {
  azureMLDataScientist: 'f6c7c914-8db3-469d-8ca1-694a8f32e121'
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' existing = {
  name: workspaceName
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${baseName}-${take(suffix, 8)}'
  location: location
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false // identity-based only: AzureWebJobsStorage__* settings below
    supportsHttpsTrafficOnly: true
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource packageContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainer
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${baseName}-${take(suffix, 8)}'
  location: location
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${baseName}-${take(suffix, 8)}'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true // telemetry is sent with the managed identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING)
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${baseName}-${take(suffix, 8)}'
  location: location
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true // Linux
  }
}

// Every setting retrain/settings.py declares, as in local.settings.sample.json, EXCEPT:
//   RETRAIN_FUNCTION_KEY, RETRAIN_SYSTEM_KEY  local-host secrets; in Azure the Functions host manages its keys
// and the Functions host's own settings (AzureWebJobsStorage__*, APPLICATIONINSIGHTS_*). On Flex Consumption
// FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION are NOT app settings: functionAppConfig.runtime sets them.
// tests/unit/test_settings_consistency.py parses this block and checks it against retrain.settings.SETTINGS.
var retrainSettings = {
  RETRAIN_TICKERS: tickers
  RETRAIN_SCHEDULE: schedule
  RETRAIN_SOURCE: source
  RETRAIN_LOOKBACK_DAYS: '1825'
  RETRAIN_PLATFORM: 'azureml'
  RETRAIN_STATE_DIR: '/tmp/retrain'
  RETRAIN_TRAINER: 'lstm'
  RETRAIN_MAX_EPOCHS: '30'
  RETRAIN_JOB_POLL_MINUTES: '10'
  RETRAIN_JOB_TIMEOUT_HOURS: '24'
  RETRAIN_GATE_BASELINE_MARGIN: '0.05'
  RETRAIN_GATE_METRIC: 'mae'
  RETRAIN_GATE_BASELINE_METRIC: 'naive_mae'
  RETRAIN_GATE_CHAMPION_METRIC: 'champion_mae'
  RETRAIN_GATE_DIRECTION: 'lower'
  RETRAIN_CANARY_PERCENT: '10'
  RETRAIN_SMOKE_MAX_LATENCY_MS: '2000'
  RETRAIN_KEEP_OLD_SLOT: 'false'
  RETRAIN_DEPLOY_TIMEOUT_MINUTES: '60'
  AZURE_SUBSCRIPTION_ID: subscription().subscriptionId
  AZURE_RESOURCE_GROUP: resourceGroup().name
  AZUREML_WORKSPACE_NAME: workspaceName
  AZUREML_COMPUTE_NAME: computeName
  AZUREML_COMPUTE_SIZE: computeSize
  AZUREML_COMPUTE_MAX_NODES: string(computeMaxNodes)
  AZUREML_ENDPOINT_INSTANCE_TYPE: endpointInstanceType
  AZURE_CLIENT_ID: identity.properties.clientId
}

var hostSettings = {
  AzureWebJobsStorage__accountName: storage.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.properties.clientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: functionAppName
  location: location
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      appSettings: [for item in items(union(retrainSettings, hostSettings)): {
        name: item.key
        value: item.value
      }]
    }
  }
  dependsOn: [
    packageContainer
  ]
}

// The training cluster: created here because AzureML Data Scientist (the identity's role) may not create
// compute. min 0 nodes, so it costs nothing between runs. The adapter only creates it when it is missing.
resource cluster 'Microsoft.MachineLearningServices/workspaces/computes@2024-10-01' = {
  parent: workspace
  name: computeName
  location: workspace.location
  properties: {
    computeType: 'AmlCompute'
    properties: {
      vmSize: computeSize
      vmPriority: 'Dedicated'
      scaleSettings: {
        minNodeCount: 0
        maxNodeCount: computeMaxNodes
        nodeIdleTimeBeforeScaleDown: 'PT15M'
      }
    }
  }
}

// Least privilege: submit jobs, register assets and models, manage online endpoints in this workspace only.
resource mlRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, identity.id, roles.azureMLDataScientist)
  scope: workspace
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.azureMLDataScientist)
  }
}

// Identity-based AzureWebJobsStorage: blobs (leases, deployment package), queues and tables (Durable task hub).
resource storageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in [roles.storageBlobDataOwner, roles.storageQueueDataContributor, roles.storageTableDataContributor]: {
    name: guid(storage.id, identity.id, role)
    scope: storage
    properties: {
      principalId: identity.properties.principalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    }
  }
]

resource telemetryRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identity.id, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

// Azure ML job events -> the Function App's Event Grid trigger `job_events`.
resource jobEventsTopic 'Microsoft.EventGrid/systemTopics@2023-12-15-preview' = {
  name: 'egst-${baseName}-${take(suffix, 8)}'
  location: workspace.location
  properties: {
    source: workspace.id
    topicType: 'Microsoft.MachineLearningServices.Workspaces'
  }
}

resource jobEventsSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2023-12-15-preview' = if (deployEventSubscription) {
  parent: jobEventsTopic
  name: 'job-events-to-function'
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionApp.id}/functions/job_events'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.MachineLearningServices.RunCompleted'
        'Microsoft.MachineLearningServices.RunStatusChanged'
      ]
    }
    eventDeliverySchema: 'EventGridSchema'
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
}

output functionAppName string = functionApp.name
output functionAppUrl string = 'https://${functionApp.properties.defaultHostName}'
output identityClientId string = identity.properties.clientId
output identityPrincipalId string = identity.properties.principalId
output applicationInsightsName string = appInsights.name
output eventGridSystemTopic string = jobEventsTopic.name
