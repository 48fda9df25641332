{{/*
The arguments of `meshmirror run`, in the kustomize install's order: the
base's, then what values add (each flag only when set), then extraArgs.
*/}}
{{- define "meshmirror.args" -}}
{{- $v := .Values -}}
- run
- --metrics-addr=0.0.0.0:{{ $v.metrics.port }}
- --log-format={{ $v.logFormat }}
{{- with $v.leaderElection }}
{{- if .enabled }}
- --leader-elect
- --lease-duration={{ .leaseDuration }}
- --renew-deadline={{ .renewDeadline }}
- --retry-period={{ .retryPeriod }}
{{- if ne .leaseName "meshmirror" }}
- --lease-name={{ .leaseName }}
{{- end }}
{{- end }}
{{- end }}
{{- if $v.allowedGroups }}
# Which groups each namespace may mirror (deny by default), rules separated by ';'.
- {{ printf "--allowed-groups=%s" (join ";" $v.allowedGroups) | quote }}
{{- end }}
{{- if $v.allowAllGroups }}
- --allow-all-groups
{{- end }}
{{- if ne $v.istioNamespace "istio-system" }}
- --istio-namespace={{ $v.istioNamespace }}
{{- end }}
{{- if ne $v.workloadEntryVersion "v1" }}
- --workloadentry-version={{ $v.workloadEntryVersion }}
{{- end }}
{{- with $v.groupGoneGrace }}
- --group-gone-grace={{ . }}
{{- end }}
{{- if not (kindIs "invalid" $v.kubeClient.qps) }}
- --kube-qps={{ $v.kubeClient.qps }}
{{- end }}
{{- if not (kindIs "invalid" $v.kubeClient.burst) }}
- --kube-burst={{ $v.kubeClient.burst }}
{{- end }}
{{- if not (kindIs "invalid" $v.maxConcurrentPasses) }}
- --max-concurrent-passes={{ $v.maxConcurrentPasses }}
{{- end }}
{{- with $v.aws }}
{{- with .region }}
- --aws-region={{ . }}
{{- end }}
{{- with .eventQueueUrl }}
- --aws-event-queue-url={{ . }}
{{- end }}
{{- with .accounts }}
- --aws-accounts={{ join "," . }}
{{- end }}
{{- with .endpointUrl }}
- --aws-endpoint-url={{ . }}
{{- end }}
{{- end }}
{{- with $v.gcp }}
{{- with .pubsubSubscription }}
- --gcp-pubsub-subscription={{ . }}
{{- end }}
{{- with .endpoint }}
- --gcp-endpoint={{ . }}
{{- end }}
{{- with .pubsubEndpoint }}
- --gcp-pubsub-endpoint={{ . }}
{{- end }}
{{- end }}
{{- with $v.azure }}
{{- with .eventQueue }}
- --azure-event-queue={{ . }}
{{- end }}
{{- if not (kindIs "invalid" .eventPollSeconds) }}
- --azure-event-poll-seconds={{ .eventPollSeconds }}
{{- end }}
{{- if not (kindIs "invalid" .armReadsPerSecond) }}
- --azure-arm-reads-per-second={{ .armReadsPerSecond }}
{{- end }}
{{- with .credential }}
- --azure-credential={{ . }}
{{- end }}
{{- with .endpoint }}
- --azure-endpoint={{ . }}
{{- end }}
{{- with .authorityHost }}
- --azure-authority-host={{ . }}
{{- end }}
{{- end }}
{{- with $v.watchNamespaces }}
- --namespace={{ join "," . }}
{{- end }}
{{- with $v.extraArgs }}
{{ toYaml . }}
{{- end }}
{{- end }}
