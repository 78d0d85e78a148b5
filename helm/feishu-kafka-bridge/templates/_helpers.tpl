{{- define "fkb.name" -}}feishu-kafka-bridge{{- end -}}

{{- define "fkb.fullname" -}}
{{- if contains "feishu-kafka-bridge" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-feishu-kafka-bridge" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fkb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fkb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fkb.labels" -}}
{{ include "fkb.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "fkb.secretName" -}}
{{- default (include "fkb.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{- /* Non-empty when the pods call out to Feishu over HTTPS: a long
connection (the single app's, or a listed app's own) or the OpenAPI of
snapshots (the single app's appId, or a listed app's app_secret). */ -}}
{{- define "fkb.dialsFeishu" -}}
{{- $dials := or (ne .Values.config.ingress "webhook") .Values.config.appId -}}
{{- range .Values.secrets.apps -}}
{{- if or .app_secret (eq (default "callback" .ingress) "long_connection") -}}
{{- $dials = true -}}
{{- end -}}
{{- end -}}
{{- if $dials -}}true{{- end -}}
{{- end -}}
