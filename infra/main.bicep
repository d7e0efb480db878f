// The Azure side of retrain: a Python 3.11 Function App on Flex Consumption (Linux) that runs the
// durable retraining orchestration against an EXISTING Azure ML workspace in this resource group (its
// storage account and an Event Grid system topic it already has may live in other resource groups).
//
//   az deployment group create -g <rg> -f infra/main.bicep -p infra/main.parameters.json
//
// Creates: storage account (host + Durable task hub + deployment package, identity-based access only),
// Log Analytics + Application Insights, a user-assigned managed identity, the Flex Consumption plan
// and Function App with every app setting from local.settings.sample.json, the training cluster
// (AmlCompute, min 0 nodes), role assignments (least privilege), and the Event Grid system topic on
// the workspace (or the one it already has: existingEventGridSystemTopicName, in any resource group of the
// subscription) with two subscriptions to the `job_events` function (second pass, see deployEventSubscription).
//
// Checkov (`make checkov`, run in CI) passes with 0 failed checks: what does not fit Flex Consumption or
// this app is skipped where it applies, each with its reason (`// checkov:skip=<id>:<reason>`).
//
// App settings follow Microsoft's Flex Consumption samples: a `config` child resource named
// `appsettings` whose properties are union(...) of two objects. (A `for` loop over items() of objects
// holding runtime values, such as the identity's clientId, does not compile: BCP178.)

targetScope = 'resourceGroup'

@description('Azure region of the Function App resources: one where Flex Consumption is offered (az functionapp list-flexconsumption-locations).')
param location string = resourceGroup().location

@description('Azure region of the Azure ML workspace: the training cluster and the Event Grid system topic go there. A resource\'s location must be known when the deployment starts, so it cannot be read from the existing workspace (BCP120).')
param workspaceLocation string = resourceGroup().location

@description('Short name used to derive resource names: 3 to 11 lower-case letters, digits or hyphens, starting with a letter. The storage account name drops the hyphens (it allows letters and digits only).')
@minLength(3)
@maxLength(11)
param baseName string = 'retrain'

@description('Name of the existing Azure ML workspace (in this resource group).')
param workspaceName string

@description('Comma-separated tickers the weekly timer retrains (RETRAIN_TICKERS).')
param tickers string = 'MSFT'

@description('Six-field NCRONTAB (UTC) of the retraining timer (RETRAIN_SCHEDULE).')
param schedule string = '0 0 1 * * Mon'

@description('Market data source (RETRAIN_SOURCE): yfinance, sample, csv:PATH or blob:CONTAINER/PATH (Yahoo often refuses cloud IPs: docs/data-sources.md).')
param source string = 'yfinance'

@description('Blob endpoint a blob:CONTAINER/PATH source reads (RETRAIN_BLOB_ACCOUNT_URL), e.g. https://ACCOUNT.blob.core.windows.net; the identity needs Storage Blob Data Reader there.')
param pricesBlobAccountUrl string = ''

@description('AmlCompute training cluster (AZUREML_COMPUTE_NAME); created here with min 0 nodes.')
param computeName string = 'cpu-cluster'

@description('VM size of the training cluster (AZUREML_COMPUTE_SIZE).')
param computeSize string = 'Standard_DS3_v2'

@description('Maximum nodes of the training cluster (AZUREML_COMPUTE_MAX_NODES).')
@minValue(1)
param computeMaxNodes int = 2

@description('VM size of the online deployments (AZUREML_ENDPOINT_INSTANCE_TYPE).')
param endpointInstanceType string = 'Standard_DS3_v2'

@description('Suffix of the online endpoint names (RETRAIN_ENDPOINT_SUFFIX; endpoint names are unique per region): 1 to 6 lower-case letters or digits. Empty: derived from the workspace (stable per workspace).')
@maxLength(6)
param endpointSuffix string = ''

@description('Azure ML model monitoring signals whose names do not follow <ticker>_<signal> (docs/azure.md): a JSON object from signal name to ticker (RETRAIN_MONITOR_SIGNAL_TICKERS), e.g. {"data-drift-signal": "MSFT"}. Empty: the naming convention alone.')
param monitorSignalTickers string = ''

@description('Create the Event Grid subscription to the job_events function. Event Grid checks that the function exists, so deploy once with false, publish the code (func azure functionapp publish), then deploy again with true.')
param deployEventSubscription bool = false

@description('Name of an Event Grid system topic that already exists on the workspace (Azure allows one system topic per source). Empty: this template creates one.')
param existingEventGridSystemTopicName string = ''

@description('Resource group of that existing system topic (it may live in another resource group of this subscription than the workspace). Empty: this resource group.')
param existingEventGridSystemTopicResourceGroup string = ''

@description('ARM id of the workspace\'s default storage account (az ml workspace show --query storage_account -o tsv). Needed when it lives in another resource group (bring-your-own storage, AI Foundry hubs): a module\'s scope must be known when the deployment starts, so it cannot be read from the workspace. Empty: the workspace\'s account, in this resource group.')
param workspaceStorageAccountId string = ''

@description('Grant Storage Blob Data Contributor instead of Reader on the workspace\'s storage account. Needed when its datastores are identity-based (no account key): the SDK then uploads the training data and the trainer\'s code with the app\'s identity.')
param workspaceStorageWriter bool = false

@description('Maximum Flex Consumption instances (Flex Consumption allows 40 to 1000).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Always-ready instances of the `durable` scale group (orchestrator, activity and entity triggers): Microsoft\'s recommendation for Durable Functions on Flex Consumption, so a durable timer or a raised event is picked up without a cold start. 0 turns it off (cheaper, slower to react).')
@minValue(0)
param durableAlwaysReadyInstances int = 1

@description('Memory per Flex Consumption instance (MB).')
@allowed([2048, 4096])
param instanceMemoryMB int = 2048

var suffix = uniqueString(resourceGroup().id, baseName)
// Storage account names allow 3-24 lower-case letters and digits: 'st' + baseName without hyphens (at most
// 11) + 10 characters of uniqueString (lower-case letters and digits): 12 to 23 characters. The same name
// as before for every baseName that could be deployed (one without hyphens), so an upgrade keeps its account.
var storageName = 'st${replace(toLower(baseName), '-', '')}${take(suffix, 10)}'
var functionAppName = 'func-${baseName}-${take(suffix, 8)}'
var deploymentContainer = 'app-package-${take(suffix, 8)}'
var createEventGridSystemTopic = empty(existingEventGridSystemTopicName)
var eventGridSystemTopicName = createEventGridSystemTopic ? 'egst-${baseName}-${take(suffix, 8)}' : existingEventGridSystemTopicName
var eventGridSystemTopicResourceGroup = (createEventGridSystemTopic || empty(existingEventGridSystemTopicResourceGroup)) ? resourceGroup().name : existingEventGridSystemTopicResourceGroup
// '/subscriptions/<sub>/resourceGroups/<rg>[/providers/Microsoft.Storage/storageAccounts/<name>]': [2] is
// the subscription, [4] the resource group, whichever id it is (no index out of range when the id is empty).
var workspaceStorageIdParts = split(empty(workspaceStorageAccountId) ? resourceGroup().id : workspaceStorageAccountId, '/')
// Job statuses after which a job never changes again (retrain.ports.JOB_TERMINAL_STATUSES; Event Grid
// string filters ignore case). RunStatusChanged fires for every transition; only these wake the app.
var terminalRunStatuses = [
  'Completed'
  'Failed'
  'Canceled'
  'NotResponding'
  'Paused'
]

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
  // checkov:skip=CKV_AZURE_35:default action Deny needs VNet integration and a private endpoint or service endpoint for the Function App, which this template does not create; access is identity-only (no shared keys)
  // checkov:skip=CKV_AZURE_206:Standard_LRS as in Microsoft's Flex Consumption samples; ZRS is not offered in every Flex Consumption region and the account holds the host's state only (the models live in Azure ML)
  // checkov:skip=CKV_AZURE_43:the name is an expression checkov cannot evaluate: storageName is 'st' + baseName without hyphens + 10 characters of uniqueString, 12 to 23 lower-case letters and digits (tests/unit/test_bicep_structure.py)
  name: storageName
  location: location
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false // identity-based only: AzureWebJobsStorage__* settings below
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
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
  // checkov:skip=CKV_AZURE_225:zone redundancy on Flex Consumption needs ZRS storage and a region that offers it; a retraining job tolerates a zone outage (durable state survives, the orchestration resumes)
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
  RETRAIN_DATA_DIR: '' // no CSV named by a request in Azure: the Function App has no data directory
  RETRAIN_BLOB_ACCOUNT_URL: pricesBlobAccountUrl
  RETRAIN_YFINANCE_ATTEMPTS: '4'
  RETRAIN_YFINANCE_BACKOFF_SECONDS: '2'
  RETRAIN_LOOKBACK_DAYS: '1825'
  RETRAIN_PLATFORM: 'azureml'
  RETRAIN_STATE_DIR: '/tmp/retrain'
  RETRAIN_TRAINER: 'lstm'
  RETRAIN_MAX_EPOCHS: '30'
  RETRAIN_JOB_POLL_MINUTES: '10'
  RETRAIN_JOB_TIMEOUT_HOURS: '24'
  RETRAIN_LOCAL_BATCH_JOBS: '0' // read by the local platform only (Azure ML batches run on the cluster's nodes)
  RETRAIN_GATE_BASELINE_MARGIN: '0.05'
  RETRAIN_GATE_ALPHA: '0.05'
  RETRAIN_GATE_POLICY: 'superiority'
  RETRAIN_GATE_NONINFERIORITY_MARGIN: '0.01'
  RETRAIN_MONITOR_SCHEDULE: '0 30 21 * * 1-5'
  RETRAIN_MONITOR_DRIFT_THRESHOLD: '0.487'
  RETRAIN_MONITOR_CUSUM_THRESHOLD: '10.593'
  RETRAIN_MONITOR_COOLDOWN_DAYS: '20'
  RETRAIN_MONITOR_SCORE_WAIT_S: '120'
  RETRAIN_MONITOR_SIGNAL_TICKERS: monitorSignalTickers
  RETRAIN_GATE_METRIC: 'mae'
  RETRAIN_GATE_BASELINE_METRIC: 'naive_mae'
  RETRAIN_GATE_CHAMPION_METRIC: 'champion_mae'
  RETRAIN_GATE_DIRECTION: 'lower'
  RETRAIN_CANARY_PERCENT: '10'
  RETRAIN_SMOKE_MAX_LATENCY_MS: '2000'
  RETRAIN_KEEP_OLD_SLOT: 'false'
  RETRAIN_DEPLOY_TIMEOUT_MINUTES: '60'
  RETRAIN_ENDPOINTS: 'shared'
  RETRAIN_ROLLOUT_POLL_MINUTES: '2'
  AZURE_SUBSCRIPTION_ID: subscription().subscriptionId
  AZURE_RESOURCE_GROUP: resourceGroup().name
  AZUREML_WORKSPACE_NAME: workspaceName
  AZUREML_COMPUTE_NAME: computeName
  AZUREML_COMPUTE_SIZE: computeSize
  AZUREML_COMPUTE_MAX_NODES: string(computeMaxNodes)
  AZUREML_ENDPOINT_INSTANCE_TYPE: endpointInstanceType
  RETRAIN_ENDPOINT_SUFFIX: endpointSuffix
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
  // checkov:skip=CKV_AZURE_222:Event Grid delivers job events and operators call the HTTP API (function keys) over the public endpoint; disabling it needs private endpoints this template does not create
  // checkov:skip=CKV_AZURE_17:callers authenticate with function keys; client certificates would also be demanded of Event Grid's deliveries
  // checkov:skip=CKV_AZURE_212:Flex Consumption scales per function group (functionAppConfig.scaleAndConcurrency, alwaysReady), not by siteConfig.numberOfWorkers
  // checkov:skip=CKV_AZURE_213:no health check path: instances of a scale-to-zero Flex Consumption app come and go with the load, and the app has no health route
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
        alwaysReady: durableAlwaysReadyInstances > 0 ? [
          {
            name: 'durable'
            instanceCount: durableAlwaysReadyInstances
          }
        ] : []
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
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled' // the code is published to the deployment container, never over FTP
      http20Enabled: true
    }
  }
  // The host starts with identity-based AzureWebJobsStorage: without its roles the first start fails and
  // the deployment reports a healthy app that cannot run.
  dependsOn: [
    packageContainer
    storageRoles
  ]

  // The app settings as in Microsoft's Flex Consumption samples: runtime values are fine in properties.
  // Checkov reads this `appsettings` config as if it were the site's `web` config (the checks below look
  // for web-config properties that an app settings resource never has).
  resource appSettings 'config' = {
    // checkov:skip=CKV_AZURE_66:an app settings resource, not the web config (failed request tracing is a web-config property; Flex Consumption logs to Application Insights)
    // checkov:skip=CKV_AZURE_63:an app settings resource, not the web config (HTTP logging: Application Insights has every request)
    // checkov:skip=CKV_AZURE_65:an app settings resource, not the web config (detailed error pages are off by default)
    // checkov:skip=CKV_AZURE_80:an app settings resource; the app runs Python 3.11 (functionAppConfig.runtime), not .NET Framework
    // checkov:skip=CKV_AZURE_13:an app settings resource; the HTTP API is protected by function keys (authLevel FUNCTION), App Service Authentication would also stop Event Grid's deliveries
    // checkov:skip=CKV_AZURE_88:an app settings resource; Flex Consumption has no Azure Files content share (the package is in a blob container)
    // checkov:skip=CKV_AZURE_222:an app settings resource; public network access is the site's (see the skip on functionApp)
    name: 'appsettings'
    properties: union(retrainSettings, hostSettings)
  }
}

// The training cluster: created here because AzureML Data Scientist (the identity's role) may not create
// compute. min 0 nodes, so it costs nothing between runs. The adapter only creates it when it is missing.
resource cluster 'Microsoft.MachineLearningServices/workspaces/computes@2024-10-01' = {
  parent: workspace
  name: computeName
  location: workspaceLocation
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

// The gate reads each training job's test_errors.json from the workspace's artifact store (its default
// storage account): Storage Blob Data Reader there, nothing more; Contributor with workspaceStorageWriter
// (identity-based datastores: the SDK uploads data and code with the app's identity). A module, deployed to
// the account's resource group (workspaceStorageAccountId; by default this one), because the account may
// live elsewhere and its name may be a runtime property of the workspace. Its deployment name is unique per
// baseName: two deployments of this template must not overwrite each other's nested deployment there.
module workspaceStorageRole 'modules/workspace-storage-role.bicep' = {
  name: 'retrain-${baseName}-workspace-storage-role-${take(suffix, 8)}'
  scope: resourceGroup(workspaceStorageIdParts[2], workspaceStorageIdParts[4])
  params: {
    storageAccountName: empty(workspaceStorageAccountId) ? last(split(workspace.properties.storageAccount, '/')) : last(workspaceStorageIdParts)
    principalId: identity.properties.principalId
    allowWrite: workspaceStorageWriter
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

// Azure ML job events -> the Function App's Event Grid trigger `job_events`. One system topic per source:
// reuse the workspace's when it has one (existingEventGridSystemTopicName, in
// existingEventGridSystemTopicResourceGroup).
resource newJobEventsTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' = if (createEventGridSystemTopic) {
  name: eventGridSystemTopicName
  location: workspaceLocation
  properties: {
    source: workspace.id
    topicType: 'Microsoft.MachineLearningServices.Workspaces'
  }
}

// The subscriptions go where the topic is: a module scoped to the topic's resource group.
module jobEventSubscriptions 'modules/job-event-subscriptions.bicep' = if (deployEventSubscription) {
  name: 'retrain-${baseName}-job-event-subscriptions-${take(suffix, 8)}'
  scope: resourceGroup(eventGridSystemTopicResourceGroup)
  params: {
    topicName: eventGridSystemTopicName
    functionAppId: functionApp.id
    terminalRunStatuses: terminalRunStatuses
    instanceTag: 'orchestration_instance_id' // retrain.vocabulary.TAG_INSTANCE_ID
  }
  dependsOn: [
    newJobEventsTopic
  ]
}

output functionAppName string = functionApp.name
output functionAppUrl string = 'https://${functionApp.properties.defaultHostName}'
output identityClientId string = identity.properties.clientId
output identityPrincipalId string = identity.properties.principalId
output applicationInsightsName string = appInsights.name
output eventGridSystemTopic string = eventGridSystemTopicName
output eventGridSystemTopicResourceGroup string = eventGridSystemTopicResourceGroup
