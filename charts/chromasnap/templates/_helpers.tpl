{{/* Chart name, overridable. */}}
{{- define "chromasnap.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the operator's objects: the release name, plus the chart name unless it already has it. */}}
{{- define "chromasnap.fullname" -}}
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

{{- define "chromasnap.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of the operator pod (never change: Deployment selectors are immutable). */}}
{{- define "chromasnap.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chromasnap.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "chromasnap.labels" -}}
helm.sh/chart: {{ include "chromasnap.chart" . }}
{{ include "chromasnap.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: chromasnap
{{- end }}

{{- define "chromasnap.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "chromasnap.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "chromasnap.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The operator's permissions, shared by the ClusterRole (all namespaces) and the Role
(watchNamespace). Least privilege for what the handlers do, plus what RBAC's escalation
check requires: to create each collection's Role (get/update/patch on its Lease,
get/patch on its status) and bind it, the operator must hold those permissions itself.
*/}}
{{- define "chromasnap.rules" -}}
# Watch ChromaCollections and ChromaDatabases; patch adds kopf's finalizer and
# bookkeeping annotations.
- apiGroups: [chromasnap.dev]
  resources: [chromacollections, chromadatabases]
  verbs: [get, list, watch, patch]
# Report status (conditions, snapshot, readers/writers) through the status subresource.
- apiGroups: [chromasnap.dev]
  resources: [chromacollections/status, chromadatabases/status]
  verbs: [get, patch, update]
# Set blockOwnerDeletion on children's owner references, where the
# OwnerReferencesPermissionEnforcement admission plugin checks it.
- apiGroups: [chromasnap.dev]
  resources: [chromacollections/finalizers, chromadatabases/finalizers]
  verbs: [update]
# Each collection's children (see operator/chromasnap/operator/specs/children.py, CHILD_KINDS).
- apiGroups: [""]
  resources: [configmaps, services, serviceaccounts]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [batch]
  resources: [cronjobs, jobs]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, list, watch, create, update, patch, delete]
# A collection's NetworkPolicies (spec.networkPolicy); deleted again when it is turned off.
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, update, patch, delete]
# The compactor's Lease is created by the operator (the compactor's Role has no create,
# which RBAC cannot limit by name); get/update/patch are also what that Role grants.
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, list, watch, create, update, patch, delete]
# Pods (watched by label, like the children): why a writer, reader or compaction run is
# stuck (unschedulable, image pull errors, missing Secret keys), for the collection's
# conditions. Read-only: get, list, watch.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
# Events about each collection (kopf posts core/v1 Events).
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- if .Values.rbac.readSecrets }}
# Check that a referenced Secret (S3 credentials, spec.auth tokens) exists and has the named
# keys, to say so in a condition. get only (no list/watch): the operator can only read Secrets
# it is told the name of, and it never copies, logs or reports their values. This adds no
# real power: an identity that may create Deployments can already mount any Secret of the
# namespace.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}
{{- end }}
