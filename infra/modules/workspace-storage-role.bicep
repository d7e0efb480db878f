// Storage Blob Data Reader (or Contributor) for one principal on one storage account: the Azure ML
// workspace's default account. A module, so it can be deployed into the account's resource group (which
// may not be the workspace's: bring-your-own storage, AI Foundry hubs) and take the account's name from a
// runtime value (the workspace's properties) in main.bicep.

@description('Name of a storage account in the resource group this module is deployed to.')
param storageAccountName string

@description('Object id of the principal that may read (or write) its blobs.')
param principalId string

@description('Storage Blob Data Contributor instead of Reader: identity-based datastores need it for the uploads of the Azure ML SDK (data assets, job code).')
param allowWrite bool = false

var storageBlobDataReader = '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var role = allowWrite ? storageBlobDataContributor : storageBlobDataReader

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobDataRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, principalId, role)
  scope: account
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
  }
}
