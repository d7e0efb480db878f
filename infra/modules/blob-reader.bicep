// Storage Blob Data Reader for one principal on one storage account of this resource group. A module, so
// the account's name may come from a runtime value (the workspace's properties) in main.bicep.

@description('Name of a storage account in this resource group.')
param storageAccountName string

@description('Object id of the principal that may read its blobs.')
param principalId string

var storageBlobDataReader = '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource reader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, principalId, storageBlobDataReader)
  scope: account
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataReader)
  }
}
