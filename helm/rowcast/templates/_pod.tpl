{{/*
Environment and volumes shared by the Deployment and the migration Job.
Called with (dict "root" $ "secretName" <Secret> "configMap" <ConfigMap>).
*/}}

{{- define "rowcast.env" -}}
{{- $v := .root.Values }}
{{- $existing := ne $v.existingSecret "" }}
- name: ROWCAST_CONFIG
  value: /etc/rowcast/rowcast.toml
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ ternary $v.existingSecretKeys.databaseUrl "DATABASE_URL" $existing }}
{{- if include "rowcast.publicKeyKey" .root }}
- name: ROWCAST_JWT_PUBLIC_KEY_FILE
  value: /etc/rowcast/jwt/public.pem
{{- else }}
- name: ROWCAST_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ ternary $v.existingSecretKeys.jwtSecret "ROWCAST_JWT_SECRET" $existing }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "rowcast.volumeMounts" -}}
- name: config
  mountPath: /etc/rowcast/rowcast.toml
  subPath: rowcast.toml
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if include "rowcast.publicKeyKey" .root }}
- name: jwt
  mountPath: /etc/rowcast/jwt
  readOnly: true
{{- end }}
{{- end }}

{{- define "rowcast.volumes" -}}
- name: config
  configMap:
    name: {{ .configMap }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- with include "rowcast.publicKeyKey" .root }}
- name: jwt
  secret:
    secretName: {{ $.secretName }}
    defaultMode: 0440
    items:
      - key: {{ . }}
        path: public.pem
{{- end }}
{{- end }}
