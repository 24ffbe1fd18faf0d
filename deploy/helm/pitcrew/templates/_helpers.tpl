{{- define "pitcrew.name" -}}{{ .Release.Name }}-pitcrew{{- end -}}
{{- define "pitcrew.labels" -}}
app.kubernetes.io/name: pitcrew
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}
{{- define "pitcrew.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag }}{{- end -}}
{{- define "pitcrew.secret" -}}{{ .Values.secrets.existingSecret | default (printf "%s-secrets" (include "pitcrew.name" .)) }}{{- end -}}
