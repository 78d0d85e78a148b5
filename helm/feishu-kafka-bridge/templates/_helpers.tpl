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
