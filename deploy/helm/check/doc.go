// Package check holds the test of the Helm chart in deploy/helm/shoal (make helm-check): it
// renders the chart with bin/helm under several sets of values and decodes every manifest
// strictly into the Kubernetes API types, so that a misspelt or misplaced field fails here
// instead of in a cluster. It is its own module, outside go.work, so that make test builds
// neither Helm nor the Kubernetes API types.
package check
