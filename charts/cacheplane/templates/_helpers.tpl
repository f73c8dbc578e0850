{{/* The name prefix of every object: the chart name, or nameOverride. */}}
{{- define "cacheplane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "cacheplane.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "cacheplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cacheplane
{{- end }}

{{/* Labels selecting the manager pods: the same as dist/install.yaml's. */}}
{{- define "cacheplane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cacheplane.name" . }}
control-plane: controller-manager
{{- end }}

{{/* The manager's ServiceAccount. */}}
{{- define "cacheplane.serviceAccountName" -}}
{{ include "cacheplane.name" . }}-controller-manager
{{- end }}

{{/* The metrics Service's port name: https when secured, else http. */}}
{{- define "cacheplane.metricsPortName" -}}
{{ ternary "https" "http" .Values.metrics.secure }}
{{- end }}

{{/* A file of files/ parsed as YAML; fails the render if it does not parse. */}}
{{- define "cacheplane.yamlFile" -}}
{{- $content := .root.Files.Get .path }}
{{- if not $content }}
{{- fail (printf "%s is missing from the chart (make helm-sync copies it)" .path) }}
{{- end }}
{{- $obj := fromYaml $content }}
{{- if hasKey $obj "Error" }}
{{- fail (printf "%s: %s" .path $obj.Error) }}
{{- end }}
{{- toYaml $obj }}
{{- end }}
