{{/*
The release's base name: the release name, or release-chart when the release
name does not contain the chart's name. 63 characters at most (a DNS label).
*/}}
{{- define "hermes.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
The operator's name: Deployment, ServiceAccount, roles and bindings
(`hermes-operator` for a release named hermes).
*/}}
{{- define "hermes.operatorName" -}}
{{- printf "%s-operator" (include "hermes.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hermes.serviceAccountName" -}}
{{- default (include "hermes.operatorName" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/*
The selector of the operator's pods. One label, the operator's name, which is
unique per release and is what the plain manifests (before the chart) used,
so an install can adopt a Deployment they made.
*/}}
{{- define "hermes.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hermes.operatorName" . }}
{{- end -}}

{{- define "hermes.labels" -}}
{{ include "hermes.selectorLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: hermes
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "hermes.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
What the operator may do with the objects of the namespaces it acts in. The
same rules go into the ClusterRole (every namespace) or into a Role in each
watched namespace. Secrets: never read; with the gateway, created only
(each phase's gateway credential, whose content is deterministic, so an
existing one is never changed): the operator cannot read or alter anyone's.
*/}}
{{- define "hermes.operatorRules" -}}
# Tasks: watched, their status written; the spec is never changed.
- apiGroups: [hermes.dev]
  resources: [hermestasks]
  verbs: [get, list, watch]
- apiGroups: [hermes.dev]
  resources: [hermestasks/status]
  verbs: [get, patch]
- apiGroups: [hermes.dev]
  resources: [hermesprofiles]
  verbs: [get, list, watch]
# The children of a task.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [persistentvolumeclaims, configmaps]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, patch, delete]
# Pods: read only, for termination messages and infrastructure failures.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- if .Values.gateway.enabled }}
- apiGroups: [""]
  resources: [secrets]
  verbs: [create]
{{- end }}
{{- end -}}

{{/*
The namespaces the default profile goes into: its own list, else the watched
namespaces. Fails when both are empty.
*/}}
{{- define "hermes.defaultProfileNamespaces" -}}
{{- $ns := .Values.defaultProfile.namespaces | default .Values.watchNamespaces -}}
{{- if not $ns -}}
{{- fail "defaultProfile.enabled needs defaultProfile.namespaces (or watchNamespaces): the operator watches every namespace, and the chart does not guess where tasks run" -}}
{{- end -}}
{{- toJson $ns -}}
{{- end -}}

{{/* The gateway's name: Deployment, Service, ServiceAccount, roles. */}}
{{- define "hermes.gatewayName" -}}
{{- printf "%s-gateway" (include "hermes.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hermes.gatewayKeySecret" -}}
{{- default (printf "%s-key" (include "hermes.gatewayName" .)) .Values.gateway.signingKey.existingSecret -}}
{{- end -}}

{{- define "hermes.gatewaySelectorLabels" -}}
app.kubernetes.io/name: {{ include "hermes.gatewayName" . }}
{{- end -}}

{{- define "hermes.gatewayLabels" -}}
{{ include "hermes.gatewaySelectorLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
app.kubernetes.io/part-of: hermes
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The gateway reads tasks and profiles; it writes nothing and reads no Secret through the API. */}}
{{- define "hermes.gatewayRules" -}}
- apiGroups: [hermes.dev]
  resources: [hermestasks, hermesprofiles]
  verbs: [get, list, watch]
{{- end -}}
