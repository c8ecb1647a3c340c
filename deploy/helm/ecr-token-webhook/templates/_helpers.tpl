{{/* The chart's short name. */}}
{{- define "ecr-token-webhook.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of every object: the release name when it already contains the chart's name
(`helm install ecr-token-webhook ...` gives plain `ecr-token-webhook`), else release-chart.
The Lease, the TLS Secret and the webhook configuration that RBAC names by resourceNames are
all derived from it, so the grants and the binary's settings cannot drift apart.
*/}}
{{- define "ecr-token-webhook.fullname" -}}
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

{{- define "ecr-token-webhook.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: immutable on a Deployment, so only these three, never the version. */}}
{{- define "ecr-token-webhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ecr-token-webhook.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end }}

{{- define "ecr-token-webhook.labels" -}}
helm.sh/chart: {{ include "ecr-token-webhook.chart" . }}
app.kubernetes.io/name: {{ include "ecr-token-webhook.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | replace ":" "_" | replace "@" "_" | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ecr-token-webhook
{{- end }}

{{- define "ecr-token-webhook.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ecr-token-webhook.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Names the binary is told about and RBAC grants by name. */}}
{{- define "ecr-token-webhook.leaseName" -}}
{{- include "ecr-token-webhook.fullname" . }}
{{- end }}

{{- define "ecr-token-webhook.webhookConfigName" -}}
{{- include "ecr-token-webhook.fullname" . }}
{{- end }}

{{- define "ecr-token-webhook.selfManagedSecretName" -}}
{{- default (printf "%s-self-managed-tls" (include "ecr-token-webhook.fullname" .)) .Values.tls.selfManaged.secretName }}
{{- end }}

{{- define "ecr-token-webhook.certManagerSecretName" -}}
{{- printf "%s-tls" (include "ecr-token-webhook.fullname" .) }}
{{- end }}

{{- define "ecr-token-webhook.servingCertificateName" -}}
{{- printf "%s-serving" (include "ecr-token-webhook.fullname" .) }}
{{- end }}

{{/* repository@digest when a digest pins it, else repository:tag (default: appVersion). */}}
{{- define "ecr-token-webhook.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* An alert's labels: its severity, then prometheusRule.alertLabels (which may override it). */}}
{{- define "ecr-token-webhook.alertLabels" -}}
{{- toYaml (merge (dict) (.extra | default dict) (dict "severity" .severity)) }}
{{- end }}

{{/* Whole seconds as 1h30m, 10m, 45s. */}}
{{- define "ecr-token-webhook.humanSeconds" -}}
{{- $s := int . }}
{{- $h := div $s 3600 }}{{ $m := div (mod $s 3600) 60 }}{{ $sec := mod $s 60 }}
{{- if $h }}{{ $h }}h{{ end }}{{ if $m }}{{ $m }}m{{ end }}{{ if or $sec (eq $s 0) }}{{ $sec }}s{{ end }}
{{- end }}

{{/* The Secret whose ca.crt is the client CA (callerAuth). */}}
{{- define "ecr-token-webhook.clientCaSecret" -}}
{{- default (printf "%s-client-ca" (include "ecr-token-webhook.fullname" .)) .Values.callerAuth.caSecret }}
{{- end }}
