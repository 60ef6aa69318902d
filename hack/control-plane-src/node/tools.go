//go:build tools

// Package tools records the node programs hack/control-plane builds for
// `up --node` (from the same pinned k8s.io/kubernetes as the control plane),
// so that `go mod tidy` keeps their dependencies in go.mod and go.sum.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
