{{- define "pitcrew.name" -}}{{ .Release.Name }}-pitcrew{{- end -}}
{{- define "pitcrew.labels" -}}
app.kubernetes.io/name: pitcrew
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}
{{- define "pitcrew.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag }}{{- end -}}
{{- define "pitcrew.secret" -}}{{ .Values.secrets.existingSecret | default (printf "%s-secrets" (include "pitcrew.name" .)) }}{{- end -}}
{{- /*
Kafka TLS and SASL for every pitcrew container (the topics hook Job too,
which runs before the ConfigMap exists): the [kafka.security] settings as
PITCREW__KAFKA__SECURITY__* overrides, certificates mounted from Secrets,
the SASL password from a Secret into an environment variable the config
names (never a value in the manifest or on a command line).
*/ -}}
{{- define "pitcrew.kafkaProtocol" -}}
{{- $tls := .Values.kafka.tls.enabled -}}
{{- $sasl := .Values.kafka.sasl.mechanism -}}
{{- if and $tls $sasl }}sasl_ssl{{ else if $tls }}ssl{{ else if $sasl }}sasl_plaintext{{ end -}}
{{- end -}}
{{- define "pitcrew.kafkaEnv" -}}
{{- $protocol := include "pitcrew.kafkaProtocol" . -}}
{{- if $protocol }}
- {name: PITCREW__KAFKA__SECURITY__PROTOCOL, value: {{ $protocol | quote }}}
{{- end }}
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.caSecret }}
- {name: PITCREW__KAFKA__SECURITY__CA_FILE, value: "/etc/pitcrew-kafka/ca/{{ .Values.kafka.tls.caKey }}"}
{{- end }}
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.clientSecret }}
- {name: PITCREW__KAFKA__SECURITY__CERT_FILE, value: /etc/pitcrew-kafka/client/tls.crt}
- {name: PITCREW__KAFKA__SECURITY__KEY_FILE, value: /etc/pitcrew-kafka/client/tls.key}
{{- end }}
{{- if .Values.kafka.sasl.mechanism }}
- {name: PITCREW__KAFKA__SECURITY__SASL_MECHANISM, value: {{ .Values.kafka.sasl.mechanism | quote }}}
- {name: PITCREW__KAFKA__SECURITY__SASL_USERNAME, value: {{ .Values.kafka.sasl.username | quote }}}
- {name: PITCREW__KAFKA__SECURITY__SASL_PASSWORD_ENV, value: PITCREW_KAFKA_SASL_PASSWORD}
- name: PITCREW_KAFKA_SASL_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ required "kafka.sasl.passwordSecret: the Secret holding the SASL password" .Values.kafka.sasl.passwordSecret | quote }}, key: {{ .Values.kafka.sasl.passwordKey | quote }}}}
{{- end }}
{{- end -}}
{{- define "pitcrew.kafkaVolumeMounts" -}}
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.caSecret }}
- {name: kafka-ca, mountPath: /etc/pitcrew-kafka/ca, readOnly: true}
{{- end }}
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.clientSecret }}
- {name: kafka-client, mountPath: /etc/pitcrew-kafka/client, readOnly: true}
{{- end }}
{{- end -}}
{{- define "pitcrew.kafkaVolumes" -}}
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.caSecret }}
- {name: kafka-ca, secret: {secretName: {{ .Values.kafka.tls.caSecret | quote }}}}
{{- end }}
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.clientSecret }}
- {name: kafka-client, secret: {secretName: {{ .Values.kafka.tls.clientSecret | quote }}}}
{{- end }}
{{- end -}}
