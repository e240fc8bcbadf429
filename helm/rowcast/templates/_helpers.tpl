{{/* Names, labels, image, secrets and the rowcast.toml renderer. */}}

{{- define "rowcast.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rowcast.fullname" -}}
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

{{- define "rowcast.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rowcast.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rowcast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rowcast.labels" -}}
helm.sh/chart: {{ include "rowcast.chart" . }}
{{ include "rowcast.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rowcast
{{- end }}

{{- define "rowcast.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rowcast.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "rowcast.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding DATABASE_URL and the JWT key. */}}
{{- define "rowcast.secretName" -}}
{{- default (include "rowcast.fullname" .) .Values.existingSecret }}
{{- end }}

{{/* Secret key of the PEM public key, or "" when HS256 is used. */}}
{{- define "rowcast.publicKeyKey" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecretKeys.jwtPublicKey }}
{{- else if .Values.jwt.publicKey }}
{{- print "jwt-public-key.pem" }}
{{- end }}
{{- end }}

{{/* Refuses values that cannot work, with a message saying what to set. */}}
{{- define "rowcast.validate" -}}
{{- if not .Values.existingSecret }}
{{- if not .Values.database.url }}
{{- fail "rowcast: set database.url (PostgreSQL connection string) or existingSecret (a Secret with DATABASE_URL)" }}
{{- end }}
{{- if and .Values.jwt.secret .Values.jwt.publicKey }}
{{- fail "rowcast: set either jwt.secret (HS256) or jwt.publicKey (RS256/ES256), not both" }}
{{- end }}
{{- if not (or .Values.jwt.secret .Values.jwt.publicKey) }}
{{- fail "rowcast: set jwt.secret (HS256, at least 16 bytes) or jwt.publicKey (RS256/ES256 PEM)" }}
{{- end }}
{{- end }}
{{- $minGrace := add (int .Values.shutdownTimeoutSeconds) (int .Values.preStopSleepSeconds) }}
{{- if and (ne (toString .Values.terminationGracePeriodSeconds) "") (le (int .Values.terminationGracePeriodSeconds) $minGrace) }}
{{- fail (printf "rowcast: terminationGracePeriodSeconds (%v) must exceed shutdownTimeoutSeconds + preStopSleepSeconds (%d), or pods are killed mid-shutdown" .Values.terminationGracePeriodSeconds $minGrace) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "rowcast: autoscaling.minReplicas is above autoscaling.maxReplicas" }}
{{- end }}
{{- end }}

{{- define "rowcast.terminationGracePeriodSeconds" -}}
{{- if ne (toString .Values.terminationGracePeriodSeconds) "" }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- else }}
{{- add (int .Values.shutdownTimeoutSeconds) (int .Values.preStopSleepSeconds) 10 }}
{{- end }}
{{- end }}

{{/*
rowcast.toml. Helm's toToml writes every number as a float (values pass through JSON), which
rowcast's integer keys refuse, so the file is written here: whole numbers as integers,
strings JSON-quoted (valid TOML basic strings), maps as [sections] / inline tables, lists of
maps as [[arrays of tables]].
*/}}
{{- define "rowcast.config" -}}
{{- $cfg := deepCopy (default dict .Values.config) }}
{{- $_ := set $cfg "listen" (printf "0.0.0.0:%d" (int .Values.containerPort)) }}
{{- $_ := set $cfg "shutdown_timeout" (printf "%ds" (int .Values.shutdownTimeoutSeconds)) }}
{{- $scalars := list }}{{- $sections := list }}{{- $arrays := list }}
{{- range $k := keys $cfg | sortAlpha }}
{{- $v := get $cfg $k }}
{{- if kindIs "map" $v }}{{- $sections = append $sections $k }}
{{- else if and (kindIs "slice" $v) (gt (len $v) 0) (kindIs "map" (first $v)) }}{{- $arrays = append $arrays $k }}
{{- else if not (kindIs "invalid" $v) }}{{- $scalars = append $scalars $k }}
{{- end }}
{{- end }}
{{- range $k := $scalars }}
{{ include "rowcast.toml.key" $k }} = {{ include "rowcast.toml.value" (get $cfg $k) }}
{{- end }}
{{- range $k := $sections }}
{{- $m := get $cfg $k }}
{{- if $m }}

[{{ include "rowcast.toml.key" $k }}]
{{- range $sk := keys $m | sortAlpha }}
{{- if not (kindIs "invalid" (get $m $sk)) }}
{{ include "rowcast.toml.key" $sk }} = {{ include "rowcast.toml.value" (get $m $sk) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- range $k := $arrays }}
{{- range $item := get $cfg $k }}

[[{{ include "rowcast.toml.key" $k }}]]
{{- range $ik := keys $item | sortAlpha }}
{{- if not (kindIs "invalid" (get $item $ik)) }}
{{ include "rowcast.toml.key" $ik }} = {{ include "rowcast.toml.value" (get $item $ik) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "rowcast.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{- define "rowcast.toml.value" -}}
{{- if kindIs "map" . -}}
{ {{- $first := true }}{{ range $k := keys . | sortAlpha }}{{ if not $first }},{{ end }}{{ $first = false }} {{ include "rowcast.toml.key" $k }} = {{ include "rowcast.toml.value" (get $ $k) }}{{ end }} }
{{- else if kindIs "slice" . -}}
[{{ range $i, $v := . }}{{ if $i }}, {{ end }}{{ include "rowcast.toml.value" $v }}{{ end }}]
{{- else if kindIs "bool" . -}}
{{ . }}
{{- else if or (kindIs "float64" .) (kindIs "float32" .) -}}
{{- if eq (float64 (int64 .)) (float64 .) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else if or (kindIs "int" .) (kindIs "int64" .) (kindIs "int32" .) (kindIs "uint64" .) -}}
{{ . }}
{{- else -}}
{{ toJson (toString .) }}
{{- end }}
{{- end }}
