{{/* Name of the release's objects: the release name, or release-chart. */}}
{{- define "headroom.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "headroom.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "headroom.labels" -}}
{{ include "headroom.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The dashboard's address: set, or the chart's Service in the cluster. */}}
{{- define "headroom.dashboardUrl" -}}
{{- if .Values.dashboardUrl -}}
{{- .Values.dashboardUrl -}}
{{- else -}}
{{- printf "http://%s.%s.svc:%v" (include "headroom.fullname" .) .Release.Namespace .Values.service.port -}}
{{- end -}}
{{- end -}}

{{/* Refuse values that would install an operator that cannot work. */}}
{{- define "headroom.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) -}}
{{- fail "replicaCount above 1 needs leaderElection.enabled: two instances without a Lease would both inject" -}}
{{- end -}}
{{- if not .Values.prometheus.url -}}
{{- fail "prometheus.url is required: the Prometheus that scrapes the services your SLOs are about" -}}
{{- end -}}
{{- $a := .Values.prometheus.auth -}}
{{- if and (or $a.bearerTokenKey $a.basicAuth $a.caKey $a.certKey $a.keyKey) (not $a.existingSecret) -}}
{{- fail "prometheus.auth: name the Secret that holds the keys in prometheus.auth.existingSecret" -}}
{{- end -}}
{{- if and $a.bearerTokenKey $a.basicAuth -}}
{{- fail "prometheus.auth: set bearerTokenKey or basicAuth, not both" -}}
{{- end -}}
{{- if ne (empty $a.certKey) (empty $a.keyKey) -}}
{{- fail "prometheus.auth: a client certificate needs both certKey and keyKey" -}}
{{- end -}}
{{- if not (has .Values.podAntiAffinity (list "soft" "hard" "none")) -}}
{{- fail (printf "podAntiAffinity %q: use soft, hard or none" .Values.podAntiAffinity) -}}
{{- end -}}
{{- end -}}
