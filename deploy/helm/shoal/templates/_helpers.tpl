{{/* The release's name for shoal's objects: the release name when it holds "shoal". */}}
{{- define "shoal.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The NATS chart's fullname for this release (its own rule: release-nats, or the release name when it holds "nats"). */}}
{{- define "shoal.natsFullname" -}}
{{- if .Values.nats.fullnameOverride -}}
{{- .Values.nats.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains "nats" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-nats" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Client URLs of NATS: the NATS chart's Service, or externalNats.url. */}}
{{- define "shoal.natsURL" -}}
{{- if .Values.nats.enabled -}}
{{- printf "nats://%s.%s.svc:4222" (include "shoal.natsFullname" .) .Release.Namespace -}}
{{- else -}}
{{- required "externalNats.url is required when nats.enabled is false" .Values.externalNats.url -}}
{{- end -}}
{{- end -}}

{{/* NATS's monitoring endpoint for KEDA: the headless Service, so that KEDA can reach the consumer's leader as <pod>.<endpoint>. */}}
{{- define "shoal.natsMonitoring" -}}
{{- if .Values.nats.enabled -}}
{{- printf "%s-headless.%s.svc.cluster.local:8222" (include "shoal.natsFullname" .) .Release.Namespace -}}
{{- else -}}
{{- required "externalNats.monitoringEndpoint is required for KEDA when nats.enabled is false" .Values.externalNats.monitoringEndpoint -}}
{{- end -}}
{{- end -}}

{{- define "shoal.secretName" -}}
{{- default (printf "%s-nats" (include "shoal.fullname" .)) .Values.credentials.existingSecret -}}
{{- end -}}

{{- define "shoal.image" -}}
{{- $repo := printf "%s/%s" .root.Values.image.prefix .name -}}
{{- with .root.Values.image.registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" .) $repo }}{{ end -}}
{{- printf "%s:%s" $repo (default .root.Chart.AppVersion .root.Values.image.tag) -}}
{{- end -}}

{{- define "shoal.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/part-of: shoal
{{- end -}}

{{- define "shoal.labels" -}}
{{ include "shoal.selectorLabels" . }}
app.kubernetes.io/version: {{ default .root.Chart.AppVersion .root.Values.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* The generators' durable consumer of SHOAL_TASKS, as services/generator names it (protocol.Names.GeneratorConsumer). */}}
{{- define "shoal.generatorConsumer" -}}
{{- if .Values.generator.model -}}
generator-{{ regexReplaceAll "[^a-zA-Z0-9_-]" .Values.generator.model "_" }}
{{- else -}}
generator
{{- end -}}
{{- end -}}

{{/* SHOAL_TASKS as services name it: the prefix upper-cased, dots to underscores. */}}
{{- define "shoal.tasksStream" -}}
{{- printf "%s_TASKS" (.Values.prefix | replace "." "_" | upper) -}}
{{- end -}}
