{{/* Names, labels and images shared by every template. */}}

{{- define "corral.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "corral.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "corral.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "corral.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: corral
{{- end -}}

{{/* Selector labels of one component: include with (dict "ctx" . "component" "operator"). */}}
{{- define "corral.selectorLabels" -}}
app.kubernetes.io/name: {{ include "corral.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "corral.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "corral.rayImage" -}}
{{- printf "%s:%s" .Values.ray.image.repository (default .Chart.AppVersion .Values.ray.image.tag) -}}
{{- end -}}

{{- define "corral.operatorServiceAccount" -}}{{ include "corral.fullname" . }}-operator{{- end -}}
{{- define "corral.apiServiceAccount" -}}{{ include "corral.fullname" . }}-api{{- end -}}
{{- define "corral.rayServiceAccount" -}}{{ default (printf "%s-ray" (include "corral.fullname" .)) .Values.ray.serviceAccount.name }}{{- end -}}

{{/* Namespaces whose Ray ServiceAccount is bound to system:auth-delegator (chat endpoints check Kubernetes tokens). */}}
{{- define "corral.chatAuthNamespaces" -}}
{{- $ns := .Values.ray.chatKubernetesAuth.namespaces -}}
{{- if not $ns }}{{- $ns = concat (list .Release.Namespace) .Values.operator.watchNamespaces -}}{{- end -}}
{{- $ns | uniq | toJson -}}
{{- end -}}

{{/* Environment for S3 access: plain endpoint/region, credentials only as secretKeyRef. */}}
{{- define "corral.s3Env" -}}
{{- with .Values.artifacts.s3.endpointUrl }}
- name: AWS_ENDPOINT_URL_S3
  value: {{ . | quote }}
{{- end }}
{{- with .Values.artifacts.s3.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.artifacts.s3.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.artifacts.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.artifacts.s3.secretAccessKeyKey }}
{{- end }}
{{- end -}}

{{/* The operator's KubeRaySettings as JSON (CORRAL_OPERATOR_KUBERAY). */}}
{{- define "corral.kuberaySettings" -}}
{{- $s := dict
  "image" (include "corral.rayImage" .)
  "image_pull_policy" .Values.ray.pullPolicy
  "ray_version" .Values.ray.version
  "service_account" (include "corral.rayServiceAccount" .)
  "head_cpus" .Values.ray.headCpus
  "head_memory" .Values.ray.headMemory
  "default_worker_memory" .Values.ray.defaultWorkerMemory
  "submission_mode" .Values.ray.submissionMode
  "backoff_limit" .Values.ray.backoffLimit
  "ttl_seconds_after_finished" .Values.ray.ttlSecondsAfterFinished
  "upgrade_strategy" .Values.ray.upgradeStrategy
  "chat_tokens_secret" (.Values.ray.chatTokensSecret | default "")
  "chat_kubernetes_auth" .Values.ray.chatKubernetesAuth.enabled
  "ray_auth" .Values.ray.auth
  "network_policy" .Values.ray.networkPolicy.enabled
  "control_plane_namespaces" (concat (list .Release.Namespace) .Values.ray.networkPolicy.kuberayNamespaces) -}}
{{- with .Values.ray.gpuImage }}{{- $_ := set $s "gpu_image" . -}}{{- end }}
{{- with .Values.artifacts.s3.existingSecret }}
{{- $_ := set $s "s3_secret_name" . -}}
{{- $_ := set $s "s3_access_key_id_key" $.Values.artifacts.s3.accessKeyIdKey -}}
{{- $_ := set $s "s3_secret_access_key_key" $.Values.artifacts.s3.secretAccessKeyKey -}}
{{- end }}
{{- with .Values.artifacts.s3.endpointUrl }}{{- $_ := set $s "s3_endpoint_url" . -}}{{- end }}
{{- $s | toJson -}}
{{- end -}}
