{{/* Labels every object carries (components add glasshouse.selector). */}}
{{- define "glasshouse.labels" -}}
app.kubernetes.io/part-of: glasshouse
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "agent"). */}}
{{- define "glasshouse.selector" -}}
app.kubernetes.io/name: glasshouse-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{/* Image of one component: (dict "root" $ "component" "agent"). */}}
{{- define "glasshouse.image" -}}
{{ printf "%s/glasshouse-%s:%s" .root.Values.image.registry .component (default .root.Chart.AppVersion .root.Values.image.tag) }}
{{- end }}

{{/* The aggregator Service's in-cluster address. */}}
{{- define "glasshouse.aggregatorHost" -}}
{{ printf "%s.%s.svc" .Values.aggregator.name .Values.namespaces.central }}
{{- end }}

{{/*
The topics of the design (proto/src/record.rs, proto/src/kafka.rs
all_topics): name -> "telemetry" | "alerts" | "compacted".
*/}}
{{- define "glasshouse.topics" -}}
glasshouse.process: telemetry
glasshouse.network: telemetry
glasshouse.file: telemetry
glasshouse.syscalls: telemetry
glasshouse.resources: telemetry
glasshouse.gaps: telemetry
glasshouse.containers: compacted
glasshouse.alerts: alerts
glasshouse.baselines: compacted
glasshouse.control: telemetry
{{- end }}

{{/* imagePullSecrets of a pod spec. */}}
{{- define "glasshouse.pullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* Checks of values that no template could render truthfully. */}}
{{- define "glasshouse.checks" -}}
{{- if .Values.siem.syslog.enabled }}
{{- fail "siem.syslog: the analyzer has no syslog sink yet (design: RFC 5424 output); read alerts from the glasshouse.alerts topic" }}
{{- end }}
{{- if .Values.siem.webhook.enabled }}
{{- fail "siem.webhook: the analyzer has no webhook sink yet; read alerts from the glasshouse.alerts topic" }}
{{- end }}
{{- if not (has .Values.agent.sensor (list "bpf" "auto" "netlink")) }}
{{- fail (printf "agent.sensor: %q is not one of bpf, auto, netlink" .Values.agent.sensor) }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.requireClientCert) (not .Values.tokens.enabled) }}
{{- fail "tls.requireClientCert=false lets agents without a certificate in: enable tokens too" }}
{{- end }}
{{- if gt (int .Values.analyzer.replicas) (int .Values.kafka.partitions) }}
{{- fail (printf "analyzer.replicas (%d) > kafka.partitions (%d): the extra replicas would get no partition" (int .Values.analyzer.replicas) (int .Values.kafka.partitions)) }}
{{- end }}
{{- end }}
