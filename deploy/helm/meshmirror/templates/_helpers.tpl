{{/* The chart's name: the `app.kubernetes.io/name` label. */}}
{{- define "meshmirror.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The resources' name: `meshmirror` for a release named meshmirror. */}}
{{- define "meshmirror.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The pods' selector. Without the release (`app.kubernetes.io/instance`), as
the kustomize install's, so that a Deployment installed by kubectl can be
taken over by Helm (a selector cannot change); one release per namespace.
*/}}
{{- define "meshmirror.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meshmirror.name" . }}
app.kubernetes.io/component: controller
{{- end }}

{{/* Every object's labels: the kustomize install's, then Helm's own. */}}
{{- define "meshmirror.labels" -}}
{{ include "meshmirror.selectorLabels" . }}
app.kubernetes.io/part-of: meshmirror
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "meshmirror.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "meshmirror.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: name the ServiceAccount to use when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "meshmirror.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The rules of the ClusterRole, and of each Role in the namespace-scoped
mode (pass a dict with `clusterWide` and `istioNamespace`). Every rule is
about namespaced resources but the one on istiod's Namespace, which a Role
cannot grant.
*/}}
{{- define "meshmirror.rules" -}}
- apiGroups: [meshmirror.io]
  resources: [scalinggroupmirrors]
  verbs: [get, list, watch]
- apiGroups: [meshmirror.io]
  resources: [scalinggroupmirrors/status]
  verbs: [patch]
# Entries carry an ownerReference with blockOwnerDeletion; clusters with the
# OwnerReferencesPermissionEnforcement admission plugin (OpenShift, for one)
# require this to set it.
- apiGroups: [meshmirror.io]
  resources: [scalinggroupmirrors/finalizers]
  verbs: [update]
- apiGroups: [networking.istio.io]
  resources: [workloadentries]
  verbs: [get, list, watch, create, patch, delete]
# Only for mirrors with `health: Cloud`: the Healthy condition.
- apiGroups: [networking.istio.io]
  resources: [workloadentries/status]
  verbs: [patch]
- apiGroups: [networking.istio.io]
  resources: [workloadgroups]
  verbs: [get, list, watch]
# Only for mirrors with mesh options (`workloads[].service`, `sidecar`): the
# Services, ServiceEntries and Sidecar a mirror owns.
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, create, patch, delete]
- apiGroups: [networking.istio.io]
  resources: [serviceentries, sidecars]
  verbs: [get, list, create, patch, delete]
{{- if .clusterWide }}
# Only for mirrors on a network: the cluster's own network is the
# topology.istio.io/network label of istiod's namespace.
- apiGroups: [""]
  resources: [namespaces]
  resourceNames: [{{ .istioNamespace | quote }}]
  verbs: [get]
{{- end }}
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}

{{/*
Checks across values that the schema cannot express; each failure names the
key. The namespace-scoped mode as deploy/check-namespaced.py checks the
overlay: the release's namespace is not listed, and every allow rule names a
listed namespace.
*/}}
{{- define "meshmirror.validate" -}}
{{- $listed := .Values.watchNamespaces }}
{{- if $listed }}
{{- if has .Release.Namespace $listed }}
{{- fail (printf "watchNamespaces: the release's own namespace %s may not be listed (its team would control the controller's pod and credentials)" .Release.Namespace) }}
{{- end }}
{{- if .Values.allowAllGroups }}
{{- fail "allowAllGroups: not with watchNamespaces; grant each listed namespace its groups in allowedGroups" }}
{{- end }}
{{- range .Values.allowedGroups }}
{{- $ns := splitList "=" . | first }}
{{- if not (has $ns $listed) }}
{{- fail (printf "allowedGroups: the rule %q names namespace %s, which watchNamespaces does not list" . $ns) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
