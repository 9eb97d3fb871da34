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
glasshouse.inventory: telemetry
glasshouse.containers: compacted
glasshouse.alerts: alerts
glasshouse.baselines: compacted
glasshouse.control: telemetry
glasshouse.advisories: compacted
glasshouse.vulnerabilities: compacted
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

{{/*
An IP literal as the analyzer's SocketAddr takes it (Rust's Ipv4Addr /
Ipv6Addr grammar: dotted quad without leading zeros; IPv6 groups of 1-4 hex
digits, at most one "::", an optional dotted-quad tail): its ipBlock CIDR
(/32 or /128), or "" when it is not one.
*/}}
{{- define "glasshouse.ipCidr" -}}
{{- $octet := "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])" }}
{{- $v4 := printf "^(%s\\.){3}%s$" $octet $octet }}
{{- if regexMatch $v4 . }}
{{- printf "%s/32" . }}
{{- else if regexMatch "^[0-9a-fA-F:.]+$" . }}
{{- $ok := true }}
{{- $groups := 0 }}
{{- $halves := splitList "::" . }}
{{- if gt (len $halves) 2 }}{{ $ok = false }}{{ end }}
{{- range $h, $half := $halves }}
{{- if $half }}
{{- $parts := splitList ":" $half }}
{{- range $i, $part := $parts }}
{{- if and (eq $h (sub (len $halves) 1)) (eq $i (sub (len $parts) 1)) (regexMatch $v4 $part) }}
{{- $groups = add $groups 2 }}
{{- else if regexMatch "^[0-9a-fA-F]{1,4}$" $part }}
{{- $groups = add $groups 1 }}
{{- else }}
{{- $ok = false }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq (len $halves) 2 }}
{{- if gt $groups 7 }}{{ $ok = false }}{{ end }}
{{- else if ne $groups 8 }}
{{- $ok = false }}
{{- end }}
{{- if $ok }}{{ printf "%s/128" . }}{{ end }}
{{- end }}
{{- end }}

{{/*
"IP:PORT" or "[IPv6]:PORT" -> JSON {"cidr": ipBlock CIDR, "port": N}, or {}
when it is not a socket address the analyzer would parse.
*/}}
{{- define "glasshouse.socketAddr" -}}
{{- $ip := "" }}
{{- $port := "" }}
{{- if regexMatch "^\\[[^\\]]+\\]:[0-9]+$" . }}
{{- $ip = regexReplaceAll "^\\[([^\\]]+)\\]:([0-9]+)$" . "${1}" }}
{{- $port = regexReplaceAll "^\\[([^\\]]+)\\]:([0-9]+)$" . "${2}" }}
{{- else if regexMatch "^[^:\\[\\]]+:[0-9]+$" . }}
{{- $ip = regexReplaceAll "^([^:]+):([0-9]+)$" . "${1}" }}
{{- $port = regexReplaceAll "^([^:]+):([0-9]+)$" . "${2}" }}
{{- end }}
{{- $cidr := "" }}
{{- if $ip }}{{ $cidr = include "glasshouse.ipCidr" $ip }}{{ end }}
{{- if and $cidr (regexMatch "^[1-9][0-9]{0,4}$" $port) (le (atoi $port) 65535) }}
{{- dict "cidr" $cidr "port" (atoi $port) | toJson }}
{{- else }}
{{- dict | toJson }}
{{- end }}
{{- end }}

{{/*
The webhook URL as the analyzer takes it (http://HOST:PORT/PATH) -> JSON
{"port": N, "cidr": ipBlock CIDR of HOST or "" for a DNS name}; fails
rendering, saying why, on what the analyzer would refuse.
*/}}
{{- define "glasshouse.webhookTarget" -}}
{{- $url := . }}
{{- if hasPrefix "https://" $url }}
{{- fail (printf "siem.webhook.url %q: https is not supported by the analyzer yet; use http:// (behind a TLS-terminating proxy)" $url) }}
{{- end }}
{{- if not (hasPrefix "http://" $url) }}
{{- fail (printf "siem.webhook.url %q must start with http://" $url) }}
{{- end }}
{{- $rest := trimPrefix "http://" $url }}
{{- $authority := regexReplaceAll "^([^/]*)(/.*)?$" $rest "${1}" }}
{{- $path := trimPrefix $authority $rest }}
{{- if not (regexMatch "^[!-~]*$" $path) }}
{{- fail (printf "siem.webhook.url %q: the path must be printable ASCII without spaces" $url) }}
{{- end }}
{{- $host := "" }}
{{- $port := "" }}
{{- if regexMatch "^\\[[^\\]]+\\]:[0-9]+$" $authority }}
{{- $host = regexReplaceAll "^\\[([^\\]]+)\\]:([0-9]+)$" $authority "${1}" }}
{{- $port = regexReplaceAll "^\\[([^\\]]+)\\]:([0-9]+)$" $authority "${2}" }}
{{- else if regexMatch "^[A-Za-z0-9.-]+:[0-9]+$" $authority }}
{{- $host = regexReplaceAll "^([^:]+):([0-9]+)$" $authority "${1}" }}
{{- $port = regexReplaceAll "^([^:]+):([0-9]+)$" $authority "${2}" }}
{{- end }}
{{- if not (and $host (regexMatch "^[1-9][0-9]{0,4}$" $port) (le (atoi (default "0" $port)) 65535)) }}
{{- fail (printf "siem.webhook.url %q must name HOST:PORT (a DNS name or IP literal and a port 1-65535), e.g. http://siem.example:8088/services/collector/event" $url) }}
{{- end }}
{{- dict "cidr" (include "glasshouse.ipCidr" $host) "port" (atoi $port) | toJson }}
{{- end }}

{{/* Checks of values that no template could render truthfully. */}}
{{- define "glasshouse.checks" -}}
{{- if not (kindIs "slice" .Values.siem.syslog) }}
{{- fail "siem.syslog is a list of outputs ([{address: IP:PORT, protocol: udp|tcp, ...}]), see values.yaml" }}
{{- end }}
{{- range $i, $s := .Values.siem.syslog }}
{{- $where := printf "siem.syslog[%d]" $i }}
{{- if not (kindIs "string" $s.address) }}
{{- fail (printf "%s.address must be set to IP:PORT" $where) }}
{{- end }}
{{- if eq (include "glasshouse.socketAddr" $s.address) "{}" }}
{{- fail (printf "%s.address %q is not IP:PORT: the analyzer takes an IP literal (\"[IPv6]:PORT\" for IPv6) and a port 1-65535, not a host name" $where $s.address) }}
{{- end }}
{{- if not (has (default "udp" $s.protocol) (list "udp" "tcp")) }}
{{- fail (printf "%s.protocol %q is not udp or tcp" $where $s.protocol) }}
{{- end }}
{{- if and (hasKey $s "facility") (not (regexMatch "^(1?[0-9]|2[0-3])$" (toString $s.facility))) }}
{{- fail (printf "%s.facility %v is not a syslog facility (0 to 23)" $where $s.facility) }}
{{- end }}
{{- if and (hasKey $s "appName") (not (regexMatch "^[!-~]{1,48}$" (toString $s.appName))) }}
{{- fail (printf "%s.appName %q must be 1 to 48 printable ASCII characters without spaces" $where (toString $s.appName)) }}
{{- end }}
{{- end }}
{{- if .Values.siem.webhook.enabled }}
{{- if not .Values.siem.webhook.url }}
{{- fail "siem.webhook.url must be set (http://HOST:PORT/PATH) when siem.webhook.enabled" }}
{{- end }}
{{- $_ := include "glasshouse.webhookTarget" .Values.siem.webhook.url }}
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
