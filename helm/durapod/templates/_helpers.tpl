{{/*
Names. "durapod.fullname" is <release>-<chart> (or the release name when it contains the
chart's), truncated to 63 characters; each component adds a suffix.
*/}}
{{- define "durapod.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "durapod.fullname" -}}
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

{{- define "durapod.operator.fullname" -}}
{{- printf "%s-operator" (include "durapod.fullname" . | trunc 54 | trimSuffix "-") -}}
{{- end -}}

{{- define "durapod.api.fullname" -}}
{{- printf "%s-api" (include "durapod.fullname" . | trunc 59 | trimSuffix "-") -}}
{{- end -}}

{{- define "durapod.postgres.fullname" -}}
{{- printf "%s-postgres" (include "durapod.fullname" . | trunc 54 | trimSuffix "-") -}}
{{- end -}}

{{/* Labels of every resource. */}}
{{- define "durapod.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "durapod.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: durapod
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "operator"). */}}
{{- define "durapod.selectorLabels" -}}
app.kubernetes.io/name: {{ include "durapod.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of one component's resources. */}}
{{- define "durapod.componentLabels" -}}
{{ include "durapod.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The durapod image: by digest when one is given, else by tag (appVersion by default). */}}
{{- define "durapod.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if eq $tag "latest" -}}
{{- fail "image.tag: `latest` is refused; pin a version (the default is the chart's appVersion)" -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The API's in-cluster URL, as task pods reach it. */}}
{{- define "durapod.api.url" -}}
{{- if .Values.operator.apiURL -}}
{{- .Values.operator.apiURL -}}
{{- else -}}
{{- printf "http://%s.%s.svc:%d" (include "durapod.api.fullname" .) .Release.Namespace (int .Values.api.service.port) -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the API's static tokens, or nothing when there are none. */}}
{{- define "durapod.api.tokensSecret" -}}
{{- if .Values.api.tokens.existingSecret -}}
{{- .Values.api.tokens.existingSecret -}}
{{- else if .Values.api.tokens.generate -}}
{{- printf "%s-tokens" (include "durapod.api.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/*
The database's environment. libpq (under psycopg) reads PGHOST, PGPORT, PGDATABASE,
PGSSLMODE, PGUSER and PGPASSWORD for whatever the URL leaves out, so DATABASE_URL is the
bare "postgresql://" and the credentials come from the Secret by secretKeyRef: no password
is in a ConfigMap or in the rendered manifests. With postgres.urlKey the whole URL comes from
the Secret instead.
*/}}
{{- define "durapod.databaseEnv" -}}
{{- $pg := .Values.postgres -}}
{{- if $pg.bundled.enabled }}
- name: DATABASE_URL
  value: "postgresql://"
- name: PGHOST
  value: {{ printf "%s.%s.svc" (include "durapod.postgres.fullname" .) .Release.Namespace | quote }}
- name: PGPORT
  value: "5432"
- name: PGDATABASE
  value: {{ $pg.database | quote }}
- name: PGSSLMODE
  value: disable
- name: PGUSER
  valueFrom:
    secretKeyRef:
      name: {{ include "durapod.postgres.fullname" . }}
      key: username
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "durapod.postgres.fullname" . }}
      key: password
{{- else if not $pg.existingSecret }}
{{- fail "postgres: durapod needs PostgreSQL. Set postgres.existingSecret (a Secret with the user name and password, or a full URL under postgres.urlKey) and postgres.host, or postgres.bundled.enabled=true for a trial" }}
{{- else if $pg.urlKey }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $pg.existingSecret }}
      key: {{ $pg.urlKey }}
{{- else }}
{{- if not $pg.host }}
{{- fail "postgres.host: the PostgreSQL server's host name is required with postgres.existingSecret (or give a full URL under postgres.urlKey)" }}
{{- end }}
- name: DATABASE_URL
  value: "postgresql://"
- name: PGHOST
  value: {{ $pg.host | quote }}
- name: PGPORT
  value: {{ $pg.port | quote }}
- name: PGDATABASE
  value: {{ $pg.database | quote }}
- name: PGSSLMODE
  value: {{ $pg.sslmode | quote }}
- name: PGUSER
  valueFrom:
    secretKeyRef:
      name: {{ $pg.existingSecret }}
      key: {{ $pg.userKey }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $pg.existingSecret }}
      key: {{ $pg.passwordKey }}
{{- end }}
{{- end -}}

{{/* The pod-level security context of durapod's pods. */}}
{{- define "durapod.podSecurityContext" -}}
runAsNonRoot: true
{{- with .Values.securityContext }}
{{- if not (kindIs "invalid" .runAsUser) }}
runAsUser: {{ .runAsUser }}
{{- end }}
{{- if not (kindIs "invalid" .runAsGroup) }}
runAsGroup: {{ .runAsGroup }}
{{- end }}
{{- if not (kindIs "invalid" .fsGroup) }}
fsGroup: {{ .fsGroup }}
{{- end }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The container-level security context of every container the chart runs. */}}
{{- define "durapod.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
{{- end -}}

{{/*
A component's topology spread constraints, each given the component's selector unless it
has its own: (dict "root" $ "component" "api" "constraints" .Values.api.topologySpreadConstraints).
*/}}
{{- define "durapod.topologySpread" -}}
{{- $selector := include "durapod.selectorLabels" (dict "root" .root "component" .component) | fromYaml -}}
{{- $out := list -}}
{{- range .constraints -}}
{{- $c := deepCopy . -}}
{{- if not (hasKey $c "labelSelector") -}}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $selector) -}}
{{- end -}}
{{- $out = append $out $c -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* Namespaces that get Roles (empty: cluster-wide ClusterRoles). */}}
{{- define "durapod.watchNamespaces" -}}
{{- join "," .Values.watchNamespaces -}}
{{- end -}}

{{/*
One component's RBAC from files/rbac.yaml (generated from durapod/permissions.py):
(dict "root" $ "component" "operator"). Without watchNamespaces: a ClusterRole with every
rule. With them: a ClusterRole with the cluster-scoped rules (and what watching a list of
namespaces needs), and a Role with the namespaced rules in each namespace.
*/}}
{{- define "durapod.rbac" -}}
{{- $root := .root -}}
{{- $component := .component -}}
{{- $rules := index ($root.Files.Get "files/rbac.yaml" | fromYaml) $component -}}
{{- $name := include (printf "durapod.%s.fullname" $component) $root -}}
{{- $clusterRules := $rules.cluster -}}
{{- if $root.Values.watchNamespaces -}}
{{- $clusterRules = concat $rules.cluster $rules.watching -}}
{{- else -}}
{{- $clusterRules = concat $rules.namespaced $rules.cluster -}}
{{- end }}
{{- if $clusterRules }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{ $name }}
  labels:
    {{- include "durapod.componentLabels" (dict "root" $root "component" $component) | nindent 4 }}
rules:
  {{- toYaml $clusterRules | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{ $name }}
  labels:
    {{- include "durapod.componentLabels" (dict "root" $root "component" $component) | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{ $name }}
subjects:
  - kind: ServiceAccount
    name: {{ $name }}
    namespace: {{ $root.Release.Namespace }}
{{- end }}
{{- range $namespace := $root.Values.watchNamespaces }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ $name }}
  namespace: {{ $namespace }}
  labels:
    {{- include "durapod.componentLabels" (dict "root" $root "component" $component) | nindent 4 }}
rules:
  {{- toYaml $rules.namespaced | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ $name }}
  namespace: {{ $namespace }}
  labels:
    {{- include "durapod.componentLabels" (dict "root" $root "component" $component) | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ $name }}
subjects:
  - kind: ServiceAccount
    name: {{ $name }}
    namespace: {{ $root.Release.Namespace }}
{{- end }}
{{- end -}}

{{/* A component's PodDisruptionBudget: (dict "root" $ "component" "api" "values" .Values.api). */}}
{{- define "durapod.pdb" -}}
{{- if and .values.podDisruptionBudget.enabled (gt (int .values.replicas) 1) }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include (printf "durapod.%s.fullname" .component) .root }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "durapod.componentLabels" . | nindent 4 }}
spec:
  minAvailable: {{ .values.podDisruptionBudget.minAvailable }}
  selector:
    matchLabels:
      {{- include "durapod.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/*
Egress of the operator and the API when networkPolicy.egress.enabled: DNS, the Kubernetes
API server and PostgreSQL (the bundled one by its pods, an external one by CIDR).
*/}}
{{- define "durapod.egressRules" -}}
{{- $egress := .Values.networkPolicy.egress -}}
{{- if not $egress.kubeAPIServerCIDRs -}}
{{- fail "networkPolicy.egress.kubeAPIServerCIDRs: the Kubernetes API server's addresses are required with networkPolicy.egress.enabled (kubectl get endpoints kubernetes -n default)" -}}
{{- end -}}
{{- if and (not .Values.postgres.bundled.enabled) (not $egress.postgresCIDRs) -}}
{{- fail "networkPolicy.egress.postgresCIDRs: the external PostgreSQL server's addresses are required with networkPolicy.egress.enabled" -}}
{{- end -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
- to:
    {{- range $egress.kubeAPIServerCIDRs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    {{- range $egress.kubeAPIServerPorts }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- if .Values.postgres.bundled.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "durapod.selectorLabels" (dict "root" $ "component" "postgres") | nindent 10 }}
  ports:
    - port: 5432
      protocol: TCP
{{- else }}
- to:
    {{- range $egress.postgresCIDRs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    - port: {{ .Values.postgres.port }}
      protocol: TCP
{{- end }}
{{- with $egress.extraTo }}
{{ toYaml . }}
{{- end }}
{{- end -}}
