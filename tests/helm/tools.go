//go:build tools

// Pins Helm's command so `go build helm.sh/helm/v4/cmd/helm` builds from the
// versions in go.mod/go.sum. Nothing here is product code.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
