package check

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/shoal-run/shoal/pkg/protocol"
)

const chartDir = "../shoal"

// render is one `helm template` of the chart: its values and what the manifests must hold.
type render struct {
	name  string
	set   []string
	check func(t *testing.T, m manifests)
}

func TestChart(t *testing.T) {
	names := protocol.Names{Prefix: "shoal"}
	renders := []render{
		{name: "defaults", check: func(t *testing.T, m manifests) {
			m.wantKinds(t, "Secret", "Service", "Deployment", "Deployment", "Deployment", "Deployment", "Deployment", "Job")
			checkUI(t, m.deployment(t, "shoal-ui"), "shoal-nats")
			for _, role := range []string{"planner", "archive", "evaluator", "generator"} {
				d := m.deployment(t, "shoal-"+role)
				checkService(t, d, role, "shoal-nats", "nats://shoal-nats.default.svc:4222")
			}
			g := m.deployment(t, "shoal-generator")
			wantGPUs(t, g, "1")
			if g.Spec.Replicas == nil || *g.Spec.Replicas != 1 {
				t.Errorf("generator replicas: got %v, want 1 without KEDA", g.Spec.Replicas)
			}
			if env := envOf(g.Spec.Template.Spec.Containers[0], "SHOAL_HOST"); env == nil || env.ValueFrom == nil || env.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
				t.Errorf("generator SHOAL_HOST: got %+v, want the node's name (spec.nodeName), so that replicas on a node share its leases", env)
			}
			s := m.secret(t, "shoal-nats")
			for _, role := range []string{"planner", "generator", "evaluator", "archive", "seeder", "admin"} {
				if len(s.Data[role]) < 32 {
					t.Errorf("secret key %s: got %d bytes, want a random password of 32", role, len(s.Data[role]))
				}
			}
			j := m.job(t, "shoal-provision")
			c := j.Spec.Template.Spec.Containers[0]
			if got := strings.Join(c.Args, " "); got != "provision --replicas 3" {
				t.Errorf("provision args: got %q, want %q", got, "provision --replicas 3")
			}
			if env := envOf(c, "SHOAL_NATS_USER"); env == nil || env.Value != "admin" {
				t.Errorf("provision user: got %+v, want admin", env)
			}
		}},
		{name: "keda", set: []string{"keda.enabled=true"}, check: func(t *testing.T, m manifests) {
			g := m.deployment(t, "shoal-generator")
			if g.Spec.Replicas != nil {
				t.Errorf("generator replicas: got %d, want none: KEDA sets them", *g.Spec.Replicas)
			}
			so := m.scaledObject(t, "shoal-generator")
			if so.Spec.ScaleTargetRef.Name != g.Name || so.Spec.ScaleTargetRef.Kind != "Deployment" {
				t.Errorf("scale target: got %+v, want Deployment %s", so.Spec.ScaleTargetRef, g.Name)
			}
			tr := so.trigger(t)
			want := map[string]string{
				"natsServerMonitoringEndpoint": "shoal-nats-headless.default.svc.cluster.local:8222",
				"account":                      "$G",
				"stream":                       names.TasksStream(),
				"consumer":                     names.GeneratorConsumer(""),
				"lagThreshold":                 "10",
				"activationLagThreshold":       "0",
				"useHttps":                     "false",
			}
			wantMetadata(t, tr.Metadata, want)
		}},
		{name: "keda for one model, external NATS", set: []string{
			"keda.enabled=true", "generator.model=qwen2.5-coder:7b", "nats.enabled=false",
			"externalNats.url=nats://a:4222\\,nats://b:4222", "externalNats.monitoringEndpoint=nats-mon.bus:8222",
		}, check: func(t *testing.T, m manifests) {
			tr := m.scaledObject(t, "shoal-generator").trigger(t)
			wantMetadata(t, tr.Metadata, map[string]string{
				"natsServerMonitoringEndpoint": "nats-mon.bus:8222",
				"consumer":                     names.GeneratorConsumer("qwen2.5-coder:7b"),
			})
			g := m.deployment(t, "shoal-generator")
			checkService(t, g, "generator", "shoal-nats", "nats://a:4222,nats://b:4222")
			if env := envOf(g.Spec.Template.Spec.Containers[0], "SHOAL_MODEL"); env == nil || env.Value != "qwen2.5-coder:7b" {
				t.Errorf("SHOAL_MODEL: got %+v, want qwen2.5-coder:7b", env)
			}
		}},
		{name: "declared GPUs, profiles, own secret, registry", set: []string{
			"generator.gpus=0", "generator.gpuInventory=4x11GiB", "generator.profiles=profiles: []",
			"credentials.existingSecret=my-nats", "image.registry=registry.example/team/", "image.tag=v1.2.3",
			"provision.enabled=false",
		}, check: func(t *testing.T, m manifests) {
			m.wantKinds(t, "ConfigMap", "Service", "Deployment", "Deployment", "Deployment", "Deployment", "Deployment")
			checkUI(t, m.deployment(t, "shoal-ui"), "my-nats")
			g := m.deployment(t, "shoal-generator")
			checkService(t, g, "generator", "my-nats", "nats://shoal-nats.default.svc:4222")
			wantGPUs(t, g, "")
			c := g.Spec.Template.Spec.Containers[0]
			if c.Image != "registry.example/team/shoal/generator:v1.2.3" {
				t.Errorf("image: got %q, want registry.example/team/shoal/generator:v1.2.3", c.Image)
			}
			if env := envOf(c, "SHOAL_GPUS"); env == nil || env.Value != "4x11GiB" {
				t.Errorf("SHOAL_GPUS: got %+v, want 4x11GiB", env)
			}
			if env := envOf(c, "SHOAL_PROFILES"); env == nil || env.Value != "/etc/shoal/profiles/profiles.yaml" {
				t.Errorf("SHOAL_PROFILES: got %+v, want the mounted profiles", env)
			}
			cm := m.configMap(t, "shoal-generator-profiles")
			if cm.Data["profiles.yaml"] != "profiles: []\n" {
				t.Errorf("profiles: got %q", cm.Data["profiles.yaml"])
			}
		}},
	}
	helm := helmBinary(t)
	chart := renderable(t)
	for _, r := range renders {
		t.Run(r.name, func(t *testing.T) {
			r.check(t, decodeAll(t, helmTemplate(t, helm, chart, r.set...)))
		})
	}
	t.Run("external NATS needs its URL", func(t *testing.T) {
		out, err := exec.Command(helm, "template", "shoal", chart, "--set", "nats.enabled=false").CombinedOutput()
		if err == nil || !bytes.Contains(out, []byte("externalNats.url is required")) {
			t.Errorf("helm template with nats.enabled=false and no externalNats.url: got err %v, output %s; want the required error", err, out)
		}
	})
}

// TestNATSUsers keeps the users the chart gives the NATS chart equal to the authorization block
// of deploy/nats/nats-server.conf, which `shoal nats-config` generates and pkg/natsauth tests.
func TestNATSUsers(t *testing.T) {
	conf, err := os.ReadFile("../../nats/nats-server.conf")
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(conf, []byte("\nauthorization {"))
	if i < 0 {
		t.Fatal("deploy/nats/nats-server.conf has no authorization block")
	}
	want := string(conf[i+1:])
	raw, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		NATS struct {
			ConfigMap struct {
				Merge struct {
					Data map[string]string `json:"data"`
				} `json:"merge"`
			} `json:"configMap"`
			Config struct {
				Merge map[string]any `json:"merge"`
			} `json:"config"`
			Container struct {
				// A value, or {valueFrom: ...}, by name.
				Env map[string]json.RawMessage `json:"env"`
			} `json:"container"`
		} `json:"nats"`
	}
	if err := yaml.Unmarshal(raw, &values); err != nil {
		t.Fatal(err)
	}
	if got := values.NATS.ConfigMap.Merge.Data["shoal-users.conf"]; got != want {
		t.Errorf("values.yaml nats.configMap.merge.data[shoal-users.conf] differs from the authorization block of deploy/nats/nats-server.conf; copy it again.\ngot:\n%s\nwant:\n%s", got, want)
	}
	if got := values.NATS.Config.Merge["00$include"]; got != "shoal-users.conf" {
		t.Errorf("nats.config.merge: got include %v, want shoal-users.conf", got)
	}
	// Every password the users read is set, quoted, from the Secret key of its role.
	vars := regexp.MustCompile(`\$(SHOAL_NATS_PASSWORD_[A-Z]+)`).FindAllStringSubmatch(want, -1)
	if len(vars) != 6 {
		t.Fatalf("users read %d password variables, want 6", len(vars))
	}
	for _, v := range vars {
		role := strings.TrimPrefix(v[1], "SHOAL_NATS_PASSWORD_")
		key := "SHOAL_NATS_KEY_" + role
		var from corev1.EnvVar
		if err := json.Unmarshal(values.NATS.Container.Env[key], &from); err != nil || from.ValueFrom == nil ||
			from.ValueFrom.SecretKeyRef == nil || from.ValueFrom.SecretKeyRef.Key != strings.ToLower(role) {
			t.Errorf("nats.container.env.%s: got %s (%v), want valueFrom the Secret's key %s", key, values.NATS.Container.Env[key], err, strings.ToLower(role))
		}
		var quoted corev1.EnvVar
		if err := json.Unmarshal(values.NATS.Container.Env[v[1]], &quoted); err != nil {
			t.Errorf("nats.container.env.%s: %v", v[1], err)
		}
		if got, want := quoted.Value, `"$(`+key+`)"`; got != want {
			t.Errorf("nats.container.env.%s: got %q, want %q (quoted, so that nats-server reads a string)", v[1], got, want)
		}
		// Kubernetes expands $(VAR) only from variables listed before; the NATS chart lists env by name.
		if key > v[1] {
			t.Errorf("env %s sorts after %s, which reads it", key, v[1])
		}
	}
}

// checkUI checks the web UI's Deployment: `shoal ui` logged in as the seeder with the
// seeder's key of the Secret, probed on its port, bounded, not root.
func checkUI(t *testing.T, d *appsv1.Deployment, secret string) {
	t.Helper()
	ps := d.Spec.Template.Spec
	if len(ps.Containers) != 1 {
		t.Fatalf("%s: got %d containers, want 1", d.Name, len(ps.Containers))
	}
	c := ps.Containers[0]
	if len(c.Args) == 0 || c.Args[0] != "ui" || c.ReadinessProbe == nil || c.LivenessProbe == nil {
		t.Errorf("%s: want `shoal ui` with readiness and liveness probes; got args %q", d.Name, c.Args)
	}
	if env := envOf(c, "SHOAL_NATS_USER"); env == nil || env.Value != "seeder" {
		t.Errorf("%s: NATS user %+v, want seeder", d.Name, env)
	}
	if c.Resources.Limits.Memory().IsZero() {
		t.Errorf("%s: want a memory limit, got %+v", d.Name, c.Resources)
	}
	var found bool
	for _, v := range ps.Volumes {
		if v.Secret != nil && v.Secret.SecretName == secret && len(v.Secret.Items) == 1 && v.Secret.Items[0].Key == "seeder" {
			found = true
		}
	}
	if !found {
		t.Errorf("%s: want the seeder's key of Secret %s mounted, and no other; volumes %+v", d.Name, secret, ps.Volumes)
	}
	if ps.SecurityContext == nil || ps.SecurityContext.RunAsNonRoot == nil || !*ps.SecurityContext.RunAsNonRoot {
		t.Errorf("%s: want runAsNonRoot", d.Name)
	}
}

func checkService(t *testing.T, d *appsv1.Deployment, role, secret, url string) {
	t.Helper()
	ps := d.Spec.Template.Spec
	if len(ps.Containers) != 1 {
		t.Fatalf("%s: got %d containers, want 1", d.Name, len(ps.Containers))
	}
	c := ps.Containers[0]
	if c.Image == "" || c.StartupProbe == nil || c.ReadinessProbe == nil || c.LivenessProbe == nil {
		t.Errorf("%s: want an image and startup, readiness and liveness probes; got %+v", d.Name, c)
	}
	if ps.TerminationGracePeriodSeconds == nil || *ps.TerminationGracePeriodSeconds < 30 {
		t.Errorf("%s: terminationGracePeriodSeconds %v, want ≥ 30 for a graceful stop", d.Name, ps.TerminationGracePeriodSeconds)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("%s: want CPU and memory requests and a memory limit, got %+v", d.Name, c.Resources)
	}
	for name, want := range map[string]string{"SHOAL_NATS_URL": url, "SHOAL_NATS_USER": role, "SHOAL_NATS_PASSWORD_FILE": "/etc/shoal/nats/password"} {
		if env := envOf(c, name); env == nil || env.Value != want {
			t.Errorf("%s: env %s: got %+v, want %q", d.Name, name, env, want)
		}
	}
	var found bool
	for _, v := range ps.Volumes {
		if v.Secret != nil && v.Secret.SecretName == secret && len(v.Secret.Items) == 1 && v.Secret.Items[0].Key == role && v.Secret.Items[0].Path == "password" {
			found = true
		}
	}
	if !found {
		t.Errorf("%s: want its role's key %s of Secret %s mounted as password; volumes %+v", d.Name, role, secret, ps.Volumes)
	}
	if ps.SecurityContext == nil || ps.SecurityContext.RunAsNonRoot == nil || !*ps.SecurityContext.RunAsNonRoot {
		t.Errorf("%s: want runAsNonRoot", d.Name)
	}
}

func wantGPUs(t *testing.T, d *appsv1.Deployment, want string) {
	t.Helper()
	q, ok := d.Spec.Template.Spec.Containers[0].Resources.Limits["nvidia.com/gpu"]
	switch {
	case want == "" && ok:
		t.Errorf("%s: nvidia.com/gpu %s, want none", d.Name, q.String())
	case want != "" && (!ok || q.String() != want):
		t.Errorf("%s: nvidia.com/gpu %s (set %v), want %s", d.Name, q.String(), ok, want)
	}
}

func wantMetadata(t *testing.T, got, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("trigger metadata %s: got %q, want %q", k, got[k], v)
		}
	}
}

func envOf(c corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

// helmBinary is bin/helm (make helm), or $HELM.
func helmBinary(t *testing.T) string {
	t.Helper()
	helm := os.Getenv("HELM")
	if helm == "" {
		helm, _ = filepath.Abs("../../../bin/helm")
	}
	if _, err := os.Stat(helm); err != nil {
		t.Fatalf("no helm binary (%v): run make helm, or set HELM", err)
	}
	return helm
}

// renderable is the chart as `helm template` can render it here. With the NATS chart fetched
// (helm dependency build: charts/nats-*.tgz) it is the chart itself. Without it, helm refuses
// any chart that declares a dependency it lacks, whatever its condition, so the test renders
// a copy without the dependencies line: what nats.enabled=false renders, and the chart's own
// templates with nats.enabled=true.
func renderable(t *testing.T) string {
	t.Helper()
	if m, _ := filepath.Glob(filepath.Join(chartDir, "charts", "nats-*.tgz")); len(m) > 0 {
		abs, _ := filepath.Abs(chartDir)
		return abs
	}
	dir := filepath.Join(t.TempDir(), "shoal")
	if err := os.CopyFS(dir, os.DirFS(chartDir)); err != nil {
		t.Fatal(err)
	}
	meta := filepath.Join(dir, "Chart.yaml")
	raw, err := os.ReadFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	var chart map[string]any
	if err := yaml.Unmarshal(raw, &chart); err != nil {
		t.Fatal(err)
	}
	if _, ok := chart["dependencies"]; !ok {
		t.Fatal("Chart.yaml declares no dependencies: the NATS chart should be one")
	}
	delete(chart, "dependencies")
	out, err := yaml.Marshal(chart)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(meta, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func helmTemplate(t *testing.T, helm, chart string, set ...string) []byte {
	t.Helper()
	args := []string{"template", "shoal", chart, "--namespace", "default"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	cmd := exec.Command(helm, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

// manifests are the rendered objects by kind and name.
type manifests struct {
	kinds   []string
	objects map[string]any // "Kind/name"
}

// decodeAll decodes every document of a rendering strictly: a field its type lacks, or one
// given twice, is an error.
func decodeAll(t *testing.T, out []byte) manifests {
	t.Helper()
	m := manifests{objects: map[string]any{}}
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(out), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatalf("%v in\n%s", err, doc)
		}
		obj, err := newObject(head.APIVersion, head.Kind)
		if err != nil {
			t.Fatalf("%s %s: %v", head.Kind, head.Metadata.Name, err)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("%s %s does not decode strictly: %v\n%s", head.Kind, head.Metadata.Name, err, doc)
		}
		key := head.Kind + "/" + head.Metadata.Name
		if _, dup := m.objects[key]; dup {
			t.Fatalf("%s rendered twice", key)
		}
		m.kinds = append(m.kinds, head.Kind)
		m.objects[key] = obj
	}
	return m
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// newObject is the API type of a rendered kind: shoal's own, and the NATS chart's.
func newObject(apiVersion, kind string) (any, error) {
	types := map[string]func() any{
		"v1/Secret":                     func() any { return &corev1.Secret{} },
		"v1/ConfigMap":                  func() any { return &corev1.ConfigMap{} },
		"v1/Service":                    func() any { return &corev1.Service{} },
		"v1/ServiceAccount":             func() any { return &corev1.ServiceAccount{} },
		"v1/Pod":                        func() any { return &corev1.Pod{} },
		"apps/v1/Deployment":            func() any { return &appsv1.Deployment{} },
		"apps/v1/StatefulSet":           func() any { return &appsv1.StatefulSet{} },
		"batch/v1/Job":                  func() any { return &batchv1.Job{} },
		"policy/v1/PodDisruptionBudget": func() any { return &policyv1.PodDisruptionBudget{} },
		"keda.sh/v1alpha1/ScaledObject": func() any { return &ScaledObject{} },
	}
	f, ok := types[apiVersion+"/"+kind]
	if !ok {
		return nil, fmt.Errorf("no API type for %s %s: add it to newObject", apiVersion, kind)
	}
	return f(), nil
}

func (m manifests) wantKinds(t *testing.T, want ...string) {
	t.Helper()
	if got := strings.Join(m.kinds, " "); got != strings.Join(want, " ") {
		t.Errorf("rendered kinds: got %s, want %s", got, strings.Join(want, " "))
	}
}

func get[T any](t *testing.T, m manifests, kind, name string) T {
	t.Helper()
	o, ok := m.objects[kind+"/"+name].(T)
	if !ok {
		t.Fatalf("no %s %s rendered; have %v", kind, name, m.kinds)
	}
	return o
}

func (m manifests) deployment(t *testing.T, name string) *appsv1.Deployment {
	return get[*appsv1.Deployment](t, m, "Deployment", name)
}
func (m manifests) secret(t *testing.T, name string) *corev1.Secret {
	return get[*corev1.Secret](t, m, "Secret", name)
}
func (m manifests) configMap(t *testing.T, name string) *corev1.ConfigMap {
	return get[*corev1.ConfigMap](t, m, "ConfigMap", name)
}
func (m manifests) job(t *testing.T, name string) *batchv1.Job {
	return get[*batchv1.Job](t, m, "Job", name)
}
func (m manifests) scaledObject(t *testing.T, name string) *ScaledObject {
	return get[*ScaledObject](t, m, "ScaledObject", name)
}
