{{- define "kubewrit.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubewrit.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kubewrit.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "kubewrit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubewrit
{{- end -}}

{{- define "kubewrit.selector" -}}
app.kubernetes.io/name: {{ include "kubewrit.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "kubewrit.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "kubewrit.webhook" -}}{{ include "kubewrit.fullname" . }}-webhook{{- end -}}
{{- define "kubewrit.operator" -}}{{ include "kubewrit.fullname" . }}-operator{{- end -}}
{{- define "kubewrit.operatorTLS" -}}
{{- .Values.operator.tlsSecret | default (printf "%s-tls" (include "kubewrit.operator" .)) -}}
{{- end -}}

{{- define "kubewrit.signingKeySecret" -}}
{{- .Values.webhook.signingKey.existingSecret | default (printf "%s-signing-key" (include "kubewrit.webhook" .)) -}}
{{- end -}}
