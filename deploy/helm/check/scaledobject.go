package check

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ScaledObject mirrors KEDA's keda.sh/v1alpha1 ScaledObject (its CRD's fields, from
// github.com/kedacore/keda apis/keda/v1alpha1/scaledobject_types.go), so that the test decodes
// it strictly without importing KEDA's module and its controller-runtime dependencies.
type ScaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              ScaledObjectSpec `json:"spec"`
}

type ScaledObjectSpec struct {
	ScaleTargetRef        *ScaleTarget    `json:"scaleTargetRef"`
	PollingInterval       *int32          `json:"pollingInterval,omitempty"`
	InitialCooldownPeriod *int32          `json:"initialCooldownPeriod,omitempty"`
	CooldownPeriod        *int32          `json:"cooldownPeriod,omitempty"`
	IdleReplicaCount      *int32          `json:"idleReplicaCount,omitempty"`
	MinReplicaCount       *int32          `json:"minReplicaCount,omitempty"`
	MaxReplicaCount       *int32          `json:"maxReplicaCount,omitempty"`
	Advanced              map[string]any  `json:"advanced,omitempty"`
	Triggers              []ScaleTriggers `json:"triggers"`
	Fallback              map[string]any  `json:"fallback,omitempty"`
}

type ScaleTarget struct {
	Name                   string `json:"name"`
	APIVersion             string `json:"apiVersion,omitempty"`
	Kind                   string `json:"kind,omitempty"`
	EnvSourceContainerName string `json:"envSourceContainerName,omitempty"`
}

type ScaleTriggers struct {
	Type              string            `json:"type"`
	Name              string            `json:"name,omitempty"`
	UseCachedMetrics  bool              `json:"useCachedMetrics,omitempty"`
	Metadata          map[string]string `json:"metadata"`
	AuthenticationRef map[string]string `json:"authenticationRef,omitempty"`
	MetricType        string            `json:"metricType,omitempty"`
}

// trigger is the one nats-jetstream trigger.
func (s *ScaledObject) trigger(t *testing.T) ScaleTriggers {
	t.Helper()
	if len(s.Spec.Triggers) != 1 || s.Spec.Triggers[0].Type != "nats-jetstream" {
		t.Fatalf("triggers: got %+v, want one nats-jetstream", s.Spec.Triggers)
	}
	if s.Spec.ScaleTargetRef == nil {
		t.Fatal("no scaleTargetRef")
	}
	return s.Spec.Triggers[0]
}
