{{/*
The objects are those of `bbrunner install` (a test renders this chart with `helm template`
and compares it with `install`'s output, object by object), with Helm's own labels added.
Names are fixed: one operator per cluster, as the CRD and the ClusterRole are cluster-wide.
*/}}

{{- define "bbrunner.selectorLabels" -}}
app.kubernetes.io/component: operator
app.kubernetes.io/name: bbrunner
{{- end }}

{{- define "bbrunner.labels" -}}
{{ include "bbrunner.selectorLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "bbrunner.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "bbrunner.subject" -}}
- kind: ServiceAccount
  name: bbrunner-operator
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/* What the operator calls in the namespaces it watches (install.rs: pool_rules). */}}
{{- define "bbrunner.poolRules" -}}
- apiGroups:
  - bbrunner.dev
  resources:
  - runnerpools
  verbs:
  - get
  - list
  - watch
  - patch
- apiGroups:
  - bbrunner.dev
  resources:
  - runnerpools/status
  verbs:
  - patch
- apiGroups:
  - ""
  resources:
  - pods
  verbs:
  - get
  - list
  - watch
  - create
  - delete
  - patch
- apiGroups:
  - ""
  resources:
  - secrets
  verbs:
  - get
  - list
  - watch
  - create
  - delete
  - patch
- apiGroups:
  - ""
  resources:
  - persistentvolumeclaims
  verbs:
  - list
  - create
  - patch
  - delete
- apiGroups:
  - events.k8s.io
  resources:
  - events
  verbs:
  - create
  - patch
{{- end }}

{{/* The operator's default images (bbrunner-core manifests.rs), judged when a pool sets none. */}}
{{- define "bbrunner.defaultRunnerImage" -}}
docker-public.packages.atlassian.com/sox/atlassian/bitbucket-pipelines-runner:1
{{- end }}

{{- define "bbrunner.defaultDindImage" -}}
docker:28.5-dind
{{- end }}
