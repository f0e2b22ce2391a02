{{/*
Names. Objects are named after the release ("fluxgate" in the README's
command), so the operator's and webhook's flags, the Lease, the webhook
configuration and the RBAC all agree.
*/}}
{{- define "fluxgate.name" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "fluxgate.operator" -}}{{ include "fluxgate.name" . }}-operator{{- end -}}
{{- define "fluxgate.webhook" -}}{{ include "fluxgate.name" . }}-webhook{{- end -}}
{{- define "fluxgate.platformSync" -}}{{ include "fluxgate.name" . }}-platform-sync{{- end -}}

{{/* Labels of every object but the release's instance label. */}}
{{- define "fluxgate.baseLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: fluxgate
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of every object: the recommended app.kubernetes.io set. */}}
{{- define "fluxgate.labels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "fluxgate.baseLabels" . }}
{{- end -}}

{{/* Labels of a component: name + component + instance + the common ones. */}}
{{- define "fluxgate.componentLabels" -}}
{{ include "fluxgate.selectorLabels" . }}
{{ include "fluxgate.baseLabels" .root }}
{{- end -}}

{{/* Selector labels of a component (immutable in Deployments). */}}
{{- define "fluxgate.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* metadata.annotations of every object (commonAnnotations), or nothing. */}}
{{- define "fluxgate.annotations" -}}
{{- with .Values.commonAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* An image reference: registry/repository:tag (tag defaults to appVersion). */}}
{{- define "fluxgate.image" -}}
{{- $tag := .image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- printf "%s/%s:%s" .root.Values.image.registry .image.repository $tag -}}
{{- end -}}

{{/* The restricted Pod Security Standard, pod level. */}}
{{- define "fluxgate.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The restricted Pod Security Standard, container level. */}}
{{- define "fluxgate.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Placement and scheduling of a component (.values = its values). */}}
{{- define "fluxgate.placement" -}}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .values.affinity }}
affinity:
  {{- toYaml .values.affinity | nindent 2 }}
{{- else if gt (int (.values.replicas | default 1)) 1 }}
# Replicas on different nodes where possible, so one node going away does
# not take every replica with it.
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "fluxgate.selectorLabels" . | nindent 14 }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The platform ClusterRoles the operator may bind. */}}
{{- define "fluxgate.bindableClusterRoles" -}}
{{- $roles := list .Values.teamReconciler.clusterRoleName -}}
{{- range .Values.operator.bindableClusterRoles }}{{ $roles = append $roles . }}{{ end -}}
{{- toJson ($roles | uniq) -}}
{{- end -}}

{{/* Egress every fluxgate pod needs: DNS and the API server. */}}
{{- define "fluxgate.baseEgress" -}}
# DNS, to the cluster DNS in kube-system.
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: kube-system
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
# The API server. Its endpoints are outside any pod network in most
# clusters, so they are addressed by CIDR (networkPolicy.apiServerCIDRs).
- ports:
    - port: {{ .Values.networkPolicy.apiServerPort }}
      protocol: TCP
    {{- if ne (int .Values.networkPolicy.apiServerPort) 6443 }}
    - port: 6443
      protocol: TCP
    {{- end }}
  {{- with .Values.networkPolicy.apiServerCIDRs }}
  to:
    {{- range . }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  {{- end }}
{{- end -}}

{{/* Who may scrape an admin port. */}}
{{- define "fluxgate.metricsIngress" -}}
- ports:
    - port: admin
      protocol: TCP
  {{- with .Values.networkPolicy.metricsFrom }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
