#!/usr/bin/env bash
# Sets up Azure for meshmirror: a least-privilege role, a user-assigned
# identity federated with meshmirror's Kubernetes ServiceAccount (AKS workload
# identity), and, optionally, the Event Grid subscription feeding a Storage
# queue. Read it before running it; every name below is an example.
set -euo pipefail

SUB=${SUB:?subscription id}
RG=${RG:?resource group of the scale sets}
AKS_RG=${AKS_RG:?resource group of the AKS cluster}
AKS=${AKS:?AKS cluster name}
LOCATION=${LOCATION:-westeurope}
IDENTITY=${IDENTITY:-meshmirror}
STORAGE=${STORAGE:-meshmirrorevents$RANDOM}
QUEUE=${QUEUE:-vmss-events}
NAMESPACE=${NAMESPACE:-meshmirror-system}
SA=${SA:-meshmirror}
here=$(dirname "$0")

az account set --subscription "$SUB"

# 1. Workload identity on the cluster, and an identity trusted for the ServiceAccount.
az aks update -g "$AKS_RG" -n "$AKS" --enable-oidc-issuer --enable-workload-identity
issuer=$(az aks show -g "$AKS_RG" -n "$AKS" --query oidcIssuerProfile.issuerUrl -o tsv)
az identity create -g "$RG" -n "$IDENTITY" -l "$LOCATION"
client_id=$(az identity show -g "$RG" -n "$IDENTITY" --query clientId -o tsv)
principal_id=$(az identity show -g "$RG" -n "$IDENTITY" --query principalId -o tsv)
az identity federated-credential create -g "$RG" --identity-name "$IDENTITY" \
  --name "$AKS-$NAMESPACE-$SA" --issuer "$issuer" \
  --subject "system:serviceaccount:$NAMESPACE:$SA" --audiences api://AzureADTokenExchange

# 2. The least-privilege role, scoped to the scale sets' resource group.
role=$(sed "s#/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/api-rg#/subscriptions/$SUB/resourceGroups/$RG#" \
  "$here/custom-role.json")
az role definition create --role-definition "$role"
az role assignment create --assignee-object-id "$principal_id" --assignee-principal-type ServicePrincipal \
  --role "meshmirror scale set reader" --scope "/subscriptions/$SUB/resourceGroups/$RG"

# 3. Optional: Event Grid resource events → a Storage queue meshmirror polls.
az storage account create -g "$RG" -n "$STORAGE" -l "$LOCATION" --sku Standard_LRS \
  --min-tls-version TLS1_2 --allow-blob-public-access false
storage_id=$(az storage account show -g "$RG" -n "$STORAGE" --query id -o tsv)
az storage queue create --account-name "$STORAGE" -n "$QUEUE" --auth-mode login
az eventgrid event-subscription create --name meshmirror-vmss \
  --source-resource-id "/subscriptions/$SUB/resourceGroups/$RG" \
  --endpoint-type storagequeue \
  --endpoint "$storage_id/queueservices/default/queues/$QUEUE" \
  --subject-begins-with "/subscriptions/$SUB/resourceGroups/$RG/providers/Microsoft.Compute/" \
  --included-event-types Microsoft.Resources.ResourceWriteSuccess \
    Microsoft.Resources.ResourceDeleteSuccess Microsoft.Resources.ResourceActionSuccess \
  --storage-queue-msg-ttl 600
# Receive and delete only.
az role assignment create --assignee-object-id "$principal_id" --assignee-principal-type ServicePrincipal \
  --role "Storage Queue Data Message Processor" \
  --scope "$storage_id/queueServices/default/queues/$QUEUE"

echo "ServiceAccount annotation: azure.workload.identity/client-id: $client_id"
echo "meshmirror flag:           --azure-event-queue https://$STORAGE.queue.core.windows.net/$QUEUE"
