{{/*
Names, labels and shared pieces of the spillway chart.
*/}}

{{- define "spillway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "spillway.fullname" -}}
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

{{- define "spillway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "spillway.labels" -}}
helm.sh/chart: {{ include "spillway.chart" . }}
app.kubernetes.io/name: {{ include "spillway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: spillway
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one role; call with (dict "ctx" $ "component" "coordinator"). */}}
{{- define "spillway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "spillway.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one role's objects. */}}
{{- define "spillway.componentLabels" -}}
{{ include "spillway.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "spillway.coordinator.fullname" -}}
{{- printf "%s-coordinator" (include "spillway.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "spillway.worker.fullname" -}}
{{- printf "%s-worker" (include "spillway.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "spillway.coordinator.serviceAccountName" -}}
{{- if .Values.coordinator.serviceAccount.create }}
{{- default (include "spillway.coordinator.fullname" .) .Values.coordinator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.coordinator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "spillway.worker.serviceAccountName" -}}
{{- if .Values.worker.serviceAccount.create }}
{{- default (include "spillway.worker.fullname" .) .Values.worker.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.worker.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "spillway.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Global flags, placed before the subcommand. */}}
{{- define "spillway.globalArgs" -}}
- --log
- {{ .Values.logging.level | quote }}
{{- if .Values.logging.json }}
- --log-json
{{- end }}
{{- end }}

{{/* The shard queue KEDA watches. */}}
{{- define "spillway.shardQueue" -}}
{{- if .Values.rabbitmq.queueNamespace }}
{{- printf "spillway.%s.shards" .Values.rabbitmq.queueNamespace }}
{{- else }}
{{- print "spillway.shards" }}
{{- end }}
{{- end }}

{{/* Environment both roles share; call with (dict "ctx" $ "component" "worker"). */}}
{{- define "spillway.commonEnv" -}}
- name: SPILLWAY_BROKER
  valueFrom:
    secretKeyRef:
      name: {{ required "rabbitmq.existingSecret must name the Secret holding the AMQP URL" .ctx.Values.rabbitmq.existingSecret }}
      key: {{ .ctx.Values.rabbitmq.secretKey }}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- with .ctx.Values.opentelemetry.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "spillway-%s" $.component | quote }}
{{- end }}
{{- end }}

{{/* Volumes both roles mount. */}}
{{- define "spillway.volumes" -}}
- name: tmp
  emptyDir: {}
{{- if .Values.sharedVolume.enabled }}
- name: exports
  persistentVolumeClaim:
    claimName: {{ required "sharedVolume.claimName must name a ReadWriteMany PersistentVolumeClaim" .Values.sharedVolume.claimName }}
{{- end }}
{{- end }}

{{- define "spillway.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.sharedVolume.enabled }}
- name: exports
  mountPath: {{ .Values.sharedVolume.mountPath }}
{{- end }}
{{- end }}

{{- define "spillway.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 3
{{- end }}
