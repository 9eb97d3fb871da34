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

{{/*
The lake is an emptyDir of each analyzer pod (enabled, no s3:// location):
"true" or "".
*/}}
{{- define "glasshouse.lakeLocal" -}}
{{- if and .Values.analyzer.lake.enabled (not (hasPrefix "s3://" .Values.analyzer.lake.location)) }}true{{ end }}
{{- end }}

{{/*
How SQL is served: "deployment" (the Deployment glasshouse-query),
"sidecar" (a glasshouse-query container in each analyzer pod) or "" (off).
*/}}
{{- define "glasshouse.queryMode" -}}
{{- if .Values.query.enabled }}{{ ternary "deployment" "sidecar" (gt (int .Values.query.replicas) 0) }}{{ end }}
{{- end }}

{{/*
The TCP port of the REST catalog's URI (http(s)://HOST[:PORT][/PATH]; 443
or 80 by scheme when it names none); fails rendering on another form.
*/}}
{{- define "glasshouse.catalogPort" -}}
{{- $uri := . }}
{{- $re := "^(https?)://([A-Za-z0-9.-]+|\\[[0-9a-fA-F:.]+\\])(:([0-9]+))?(/[!-~]*)?$" }}
{{- if not (regexMatch $re $uri) }}
{{- fail (printf "analyzer.lake.catalog.uri %q must be http(s)://HOST[:PORT][/PATH], e.g. http://polaris.iceberg.svc:8181/api/catalog" $uri) }}
{{- end }}
{{- $port := regexReplaceAll $re $uri "${4}" }}
{{- if not $port }}{{ $port = ternary "443" "80" (hasPrefix "https://" $uri) }}{{ end }}
{{- if not (and (regexMatch "^[1-9][0-9]{0,4}$" $port) (le (atoi $port) 65535)) }}
{{- fail (printf "analyzer.lake.catalog.uri %q: port %s is not 1-65535" $uri $port) }}
{{- end }}
{{- $port }}
{{- end }}

{{/*
`[lake]` and its sub-tables, the same in the analyzer's analyzer.toml (the
writer) and glasshouse-query's query.toml (which ignores `enabled`), so the
two cannot disagree on where the tables are.
*/}}
{{- define "glasshouse.lakeToml" -}}
{{- with .Values.analyzer.lake -}}
[lake]
enabled = true
format = {{ .format | toJson }}
location = {{ default "/var/lib/glasshouse/lake" .location | toJson }}
flush_secs = {{ int64 .flushSecs }}
{{- if eq .format "parquet" }}
retention_hours = {{ int64 .retentionHours }}
{{- end }}
{{- if hasPrefix "s3://" .location }}

[lake.s3]
{{- with .s3.endpoint }}
endpoint = {{ . | toJson }}
{{- end }}
{{- with .s3.region }}
region = {{ . | toJson }}
{{- end }}
allow_http = {{ .s3.allowHttp }}
{{- end }}
{{- if eq .format "iceberg" }}

[lake.catalog]
kind = {{ .catalog.kind | toJson }}
{{- if eq .catalog.kind "rest" }}
uri = {{ .catalog.uri | toJson }}
{{- if .catalog.credentialSecret.name }}
credential_file = "/etc/glasshouse/catalog/credential"
token_refresh_secs = {{ int .catalog.tokenRefreshSecs }}
{{- else if .catalog.tokenSecret.name }}
token_file = "/etc/glasshouse/catalog/token"
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* `env` of a container that reads or writes an s3:// lake with keys from a Secret. */}}
{{- define "glasshouse.lakeEnv" -}}
{{- with .Values.analyzer.lake }}
{{- if and .enabled (hasPrefix "s3://" .location) .s3.credentialsSecret.name }}
# The lake's S3 keys, read as the standard AWS variables (`[lake.s3]` in
# the config has the rest).
env:
  - name: AWS_ACCESS_KEY_ID
    valueFrom:
      secretKeyRef:
        name: {{ .s3.credentialsSecret.name }}
        key: {{ .s3.credentialsSecret.accessKeyIdKey }}
  - name: AWS_SECRET_ACCESS_KEY
    valueFrom:
      secretKeyRef:
        name: {{ .s3.credentialsSecret.name }}
        key: {{ .s3.credentialsSecret.secretAccessKeyKey }}
{{- end }}
{{- end }}
{{- end }}

{{/* The REST catalog's credential or token is mounted: "true" or "". */}}
{{- define "glasshouse.catalogToken" -}}
{{- with .Values.analyzer.lake }}
{{- if and .enabled (eq .format "iceberg") (eq .catalog.kind "rest") (or .catalog.credentialSecret.name .catalog.tokenSecret.name) }}true{{ end }}
{{- end }}
{{- end }}

{{/* The catalog credential's or token's volume (see glasshouse.catalogToken). */}}
{{- define "glasshouse.catalogTokenVolume" -}}
{{- with .Values.analyzer.lake.catalog }}
{{- if .credentialSecret.name }}
# The REST catalog's OAuth2 client credentials as
# /etc/glasshouse/catalog/credential (`lake.catalog.credential_file`): a
# new token is fetched every `token_refresh_secs`.
- name: catalog-token
  secret:
    secretName: {{ .credentialSecret.name }}
    items:
      - key: {{ .credentialSecret.key }}
        path: credential
    defaultMode: 0440
{{- else }}
# The REST catalog's bearer token as /etc/glasshouse/catalog/token
# (`lake.catalog.token_file`), read at start.
- name: catalog-token
  secret:
    secretName: {{ .tokenSecret.name }}
    items:
      - key: {{ .tokenSecret.key }}
        path: token
    defaultMode: 0440
{{- end }}
{{- end }}
{{- end }}

{{/*
NetworkPolicy egress rules to the lake's object store and REST catalog, of
the pods that write (analyzer) or read (query) it.
*/}}
{{- define "glasshouse.lakeEgress" -}}
{{- with .Values.analyzer.lake }}
{{- if and .enabled (hasPrefix "s3://" .location) }}
# The lake's object store.
- ports:
    - port: {{ int .s3.port }}
      protocol: TCP
  {{- with .s3.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- if and .enabled (eq .format "iceberg") (eq .catalog.kind "rest") }}
# The lake's REST catalog ({{ .catalog.uri }}).
- ports:
    - port: {{ include "glasshouse.catalogPort" .catalog.uri | atoi }}
      protocol: TCP
  {{- with .catalog.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The glasshouse-query container: in the Deployment glasshouse-query, or in
each analyzer pod (glasshouse.queryMode "sidecar"). Same image as the
analyzer, which ships the binary.
*/}}
{{- define "glasshouse.queryContainer" -}}
- name: query
  image: {{ include "glasshouse.image" (dict "root" . "component" "analyzer") }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["/usr/bin/glasshouse-query"]
  args: ["--config", "/etc/glasshouse/query.toml"]
  ports:
    - name: postgres
      containerPort: {{ int .Values.query.pgPort }}
      protocol: TCP
    - name: flight-sql
      containerPort: {{ int .Values.query.flightPort }}
      protocol: TCP
  {{- with include "glasshouse.lakeEnv" . | trim }}
  {{- . | nindent 2 }}
  {{- end }}
  # It has no HTTP endpoint: a port that accepts is alive and ready (it
  # listens once the catalog has answered).
  livenessProbe:
    tcpSocket:
      port: postgres
    initialDelaySeconds: 10
    periodSeconds: 20
  readinessProbe:
    tcpSocket:
      port: postgres
    periodSeconds: 10
  resources:
    {{- toYaml .Values.query.resources | nindent 4 }}
  securityContext:
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities:
      drop: ["ALL"]
  volumeMounts:
    - name: query-config
      mountPath: /etc/glasshouse/query.toml
      subPath: query.toml
      readOnly: true
    - name: sql-password
      mountPath: /etc/glasshouse/sql
      readOnly: true
    {{- if include "glasshouse.catalogToken" . }}
    - name: catalog-token
      mountPath: /etc/glasshouse/catalog
      readOnly: true
    {{- end }}
    {{- if include "glasshouse.lakeLocal" . }}
    # The analyzer's lake and its sqlite catalog, written by the query
    # service only to create a missing table.
    - name: lake
      mountPath: /var/lib/glasshouse/lake
    {{- end }}
{{- end }}

{{/* The volumes only the query container uses. */}}
{{- define "glasshouse.queryVolumes" -}}
- name: query-config
  configMap:
    name: glasshouse-query
# The SQL password / Flight SQL token as /etc/glasshouse/sql/password
# (`password_file`), read at start.
- name: sql-password
  secret:
    secretName: {{ .Values.query.passwordSecret.name }}
    items:
      - key: {{ .Values.query.passwordSecret.key }}
        path: password
    defaultMode: 0440
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
{{- if hasKey .Values.analyzer "sql" }}
{{- fail "analyzer.sql: the analyzer no longer serves SQL; the query service glasshouse-query does: set query.enabled, query.passwordSecret.name and the ports under query (values.yaml)" }}
{{- end }}
{{- with .Values.analyzer.lake }}
{{- if .enabled }}
{{- if and .location (not (hasPrefix "s3://" .location)) }}
{{- fail (printf "analyzer.lake.location %q: an s3://bucket/prefix URL, or empty for a volume of the pod" .location) }}
{{- end }}
{{- if not (has .format (list "iceberg" "parquet")) }}
{{- fail (printf "analyzer.lake.format %q is not iceberg or parquet" .format) }}
{{- end }}
{{- if eq .format "iceberg" }}
{{- if not (has .catalog.kind (list "sql" "rest")) }}
{{- fail (printf "analyzer.lake.catalog.kind %q is not sql or rest" .catalog.kind) }}
{{- end }}
{{- if and (hasPrefix "s3://" .location) (eq .catalog.kind "sql") }}
{{- fail (printf "analyzer.lake.location %q with analyzer.lake.catalog.kind=sql: a sqlite catalog is a file of one pod and cannot be shared between pods; set analyzer.lake.catalog.kind=rest and analyzer.lake.catalog.uri" .location) }}
{{- end }}
{{- if eq .catalog.kind "rest" }}
{{- if not (hasPrefix "s3://" .location) }}
{{- fail "analyzer.lake.catalog.kind=rest needs an s3:// analyzer.lake.location: every pod shares the catalog, so they must share the files too (an emptyDir is each pod's own)" }}
{{- end }}
{{- if not .catalog.uri }}
{{- fail "analyzer.lake.catalog.kind=rest needs analyzer.lake.catalog.uri" }}
{{- end }}
{{- if and .catalog.credentialSecret.name .catalog.tokenSecret.name }}
{{- fail "analyzer.lake.catalog: set credentialSecret (renewed tokens) or tokenSecret (one token, used until it expires), not both" }}
{{- end }}
{{- if lt (int .catalog.tokenRefreshSecs) 1 }}
{{- fail (printf "analyzer.lake.catalog.tokenRefreshSecs %v must be at least 1" .catalog.tokenRefreshSecs) }}
{{- end }}
{{- $_ := include "glasshouse.catalogPort" .catalog.uri }}
{{- end }}
{{- else if and (hasPrefix "s3://" .location) (gt (int $.Values.analyzer.replicas) 1) }}
{{- fail (printf "analyzer.lake.format=parquet takes one writer per location (docs/lake.md), and %d analyzer replicas would write %q; use format iceberg with a rest catalog" (int $.Values.analyzer.replicas) .location) }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.query }}
{{- if .enabled }}
{{- if not $.Values.analyzer.lake.enabled }}
{{- fail "query.enabled needs analyzer.lake.enabled: glasshouse-query serves the lake the analyzers write" }}
{{- end }}
{{- if not .passwordSecret.name }}
{{- fail "query.enabled needs query.passwordSecret.name: the Secret with the SQL password (password_file)" }}
{{- end }}
{{- if ne $.Values.analyzer.lake.format "iceberg" }}
{{- fail "query.enabled needs analyzer.lake.format=iceberg: glasshouse-query reads Iceberg tables" }}
{{- end }}
{{- if lt (int .replicas) 0 }}
{{- fail (printf "query.replicas %d: 0 (a container in each analyzer pod) or more (a Deployment)" (int .replicas)) }}
{{- end }}
{{- if eq (int .pgPort) (int .flightPort) }}
{{- fail (printf "query.pgPort and query.flightPort are both %d" (int .pgPort)) }}
{{- end }}
{{- if include "glasshouse.lakeLocal" $ }}
{{- if gt (int .replicas) 0 }}
{{- fail (printf "query.replicas=%d: a glasshouse-query Deployment cannot read the analyzer pods' emptyDir lake; set query.replicas=0 (a query container in the analyzer pod, sharing the volume) or a fleet lake (analyzer.lake.location=s3://..., analyzer.lake.catalog.kind=rest)" (int .replicas)) }}
{{- end }}
{{- if gt (int $.Values.analyzer.replicas) 1 }}
{{- fail (printf "query.replicas=0 over an emptyDir lake with analyzer.replicas=%d: each pod's lake holds only its own partitions' rows, and glasshouse-sql would answer each connection from one of them; set analyzer.replicas=1, or use a fleet lake (analyzer.lake.location=s3://..., analyzer.lake.catalog.kind=rest)" (int $.Values.analyzer.replicas)) }}
{{- end }}
{{- end }}
{{- if and (eq (int .replicas) 0) (has (int $.Values.analyzer.metricsPort) (list (int .pgPort) (int .flightPort))) }}
{{- fail (printf "query.replicas=0 puts glasshouse-query in the analyzer pod, whose metrics port is %d: choose other query.pgPort/flightPort" (int $.Values.analyzer.metricsPort)) }}
{{- end }}
{{- end }}
{{- end }}
{{- if gt (int .Values.analyzer.replicas) (int .Values.kafka.partitions) }}
{{- fail (printf "analyzer.replicas (%d) > kafka.partitions (%d): the extra replicas would get no partition" (int .Values.analyzer.replicas) (int .Values.kafka.partitions)) }}
{{- end }}
{{- end }}
