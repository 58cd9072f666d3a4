// Package deploy holds no code. Its tests check the deployment files (the
// Dockerfile, deploy/compose.yaml, deploy/k8s, dashboards, docs/operations.md)
// against each other and against the service's configuration, so they cannot
// drift apart unnoticed.
package deploy
