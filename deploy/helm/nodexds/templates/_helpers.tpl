{{/* Labels on every object; the same as the kustomize base's. */}}
{{- define "nodexds.labels" -}}
app.kubernetes.io/name: nodexds
app.kubernetes.io/part-of: nodexds
{{- end }}

{{/* repository:tag, or repository:tag@digest when a digest pins it. */}}
{{- define "nodexds.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- .Values.image.repository }}:{{ $tag }}{{ with .Values.image.digest }}@{{ . }}{{ end }}
{{- end }}

{{/*
Agent flags that have a default in the agent: passed only when the value is
set (not null), so the default render passes none of them.
*/}}
{{- define "nodexds.optionalArgs" -}}
{{- $v := .Values -}}
{{- $flags := dict
  "default-topology" $v.topology.default
  "default-namespace" $v.names.defaultNamespace
  "cluster-domain" $v.names.clusterDomain
  "log-level" $v.logLevel
  "health-interval" $v.health.interval
  "health-liveness-interval" $v.health.livenessInterval
  "health-timeout" $v.health.timeout
  "health-unhealthy-threshold" $v.health.unhealthyThreshold
  "health-healthy-threshold" $v.health.healthyThreshold
  "health-jitter" $v.health.jitter
  "health-max-dials" $v.health.maxDials
  "health-max-endpoints" $v.health.maxEndpoints
  "health-linger" $v.health.linger
-}}
{{- range $flag, $value := $flags }}
{{- if not (kindIs "invalid" $value) }}
- --{{ $flag }}={{ $value }}
{{- end }}
{{- end }}
{{- if not $v.health.enabled }}
- --health-checks=false
{{- end }}
{{- if ne $v.admission "node-pods" }}
- --admit={{ $v.admission }}
{{- end }}
{{- if ne $v.visibility "cluster" }}
- --visibility={{ $v.visibility }}
{{- end }}
{{- if not $v.routeStatus.enabled }}
- --status-lease=
{{- else if ne $v.routeStatus.lease "nodexds-route-status" }}
- --status-lease={{ $v.routeStatus.lease }}
{{- end }}
{{- if $v.certs.enabled }}
- --certs=/var/run/secrets/spiffe.io
{{- end }}
{{- range $v.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
