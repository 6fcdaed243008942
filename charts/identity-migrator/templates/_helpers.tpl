{{- define "identity-migrator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "identity-migrator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "identity-migrator.labels" -}}
{{ include "identity-migrator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "identity-migrator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "identity-migrator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* What the operator may do with IdentityMigrations and TableMigrations, Events,
     the Secrets they name and the scale of the workloads they quiesce. */}}
{{- define "identity-migrator.migrationRules" -}}
- apiGroups: [migrations.dsql.dev]
  resources: [identitymigrations, tablemigrations, schemamigrations]
  verbs: [get, list, watch, patch]
- apiGroups: [migrations.dsql.dev]
  resources: [identitymigrations/status, tablemigrations/status, schemamigrations/status]
  verbs: [get, patch]
- apiGroups: [migrations.dsql.dev]
  resources: [identitymigrations/finalizers, tablemigrations/finalizers]
  verbs: [update]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# A SchemaMigration's files (spec.source.configMapRef, configMapSelector).
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list]
- apiGroups: [apps]
  resources: [deployments/scale, statefulsets/scale, deployments, statefulsets]
  verbs: [get, patch]
{{- end -}}
