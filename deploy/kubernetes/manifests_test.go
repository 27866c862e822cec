// Package kubernetes holds the Kubernetes manifests of outrider; this test
// decodes them strictly into the Kubernetes API types, the only honest
// check without a cluster: a misspelt or misplaced field is an error, as
// `kubectl apply --validate=strict` would make it.
package kubernetes

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// kustomization is the part of kustomize's Kustomization we use (its Go
// type lives in sigs.k8s.io/kustomize, which we do not depend on).
type kustomization struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Resources  []string
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors"`
	} `json:"labels"`
	Patches []struct {
		Path string `json:"path"`
	} `json:"patches"`
	Images []kustomizeImage `json:"images"`
}

// kustomizeImage is one entry of a Kustomization's images.
type kustomizeImage struct {
	Name    string `json:"name"`
	NewName string `json:"newName"`
	NewTag  string `json:"newTag"`
	Digest  string `json:"digest"`
}

// objects holds every manifest of one directory, decoded.
type objects struct {
	deployments   []*appsv1.Deployment
	services      []*corev1.Service
	secrets       []*corev1.Secret
	pdbs          []*policyv1.PodDisruptionBudget
	policies      []*networkingv1.NetworkPolicy
	kustomization *kustomization
}

// load decodes every YAML document under dir strictly: unknown or
// duplicate fields, and kinds we do not expect, fail the test.
func load(t *testing.T, dir string) objects {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s (%v)", dir, err)
	}
	var o objects
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(b, []byte("\n---\n")) {
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			var head struct{ Kind string }
			if err := yaml.Unmarshal(doc, &head); err != nil {
				t.Fatalf("%s #%d: %v", f, i, err)
			}
			var v any
			switch head.Kind {
			case "Deployment":
				d := &appsv1.Deployment{}
				o.deployments, v = append(o.deployments, d), d
			case "Service":
				s := &corev1.Service{}
				o.services, v = append(o.services, s), s
			case "Secret":
				s := &corev1.Secret{}
				o.secrets, v = append(o.secrets, s), s
			case "PodDisruptionBudget":
				p := &policyv1.PodDisruptionBudget{}
				o.pdbs, v = append(o.pdbs, p), p
			case "NetworkPolicy":
				p := &networkingv1.NetworkPolicy{}
				o.policies, v = append(o.policies, p), p
			case "Kustomization":
				o.kustomization = &kustomization{}
				v = o.kustomization
			default:
				t.Fatalf("%s #%d: unexpected kind %q", f, i, head.Kind)
			}
			if err := yaml.UnmarshalStrict(doc, v); err != nil {
				t.Errorf("%s #%d (%s): %v", f, i, head.Kind, err)
			}
		}
	}
	if o.kustomization != nil {
		for _, r := range o.kustomization.Resources {
			if _, err := os.Stat(filepath.Join(dir, r)); err != nil {
				t.Errorf("%s: resource %s: %v", dir, r, err)
			}
		}
		for _, p := range o.kustomization.Patches {
			if _, err := os.Stat(filepath.Join(dir, p.Path)); err != nil {
				t.Errorf("%s: patch %s: %v", dir, p.Path, err)
			}
		}
	}
	return o
}

func container(t *testing.T, cs []corev1.Container, name string) corev1.Container {
	t.Helper()
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return corev1.Container{}
}

func env(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func TestBaseManifests(t *testing.T) {
	o := load(t, "base")
	if o.kustomization == nil || len(o.deployments) != 1 || len(o.services) != 1 || len(o.secrets) != 1 {
		t.Fatalf("base: want a kustomization, one Deployment, Service and Secret; got %d, %d, %d",
			len(o.deployments), len(o.services), len(o.secrets))
	}
	pod := o.deployments[0].Spec.Template.Spec
	if pod.ShareProcessNamespace != nil && *pod.ShareProcessNamespace {
		t.Error("base shares the process namespace; only the signal variant may")
	}
	if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("pod does not require runAsNonRoot")
	}

	// Both sidecars are native: init containers that keep running.
	for _, name := range []string{"configsync", "outrider"} {
		c := container(t, pod.InitContainers, name)
		if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Errorf("init container %s: restartPolicy %v, want Always (native sidecar)", name, c.RestartPolicy)
		}
		if c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
			t.Errorf("%s: root filesystem not read-only", name)
		}
	}
	px := container(t, pod.InitContainers, "outrider")
	probes := map[string]*corev1.Probe{"startup": px.StartupProbe, "liveness": px.LivenessProbe, "readiness": px.ReadinessProbe}
	want := map[string]string{"startup": "/healthz", "liveness": "/healthz", "readiness": "/readyz"}
	for kind, p := range probes {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != want[kind] || p.HTTPGet.Port.IntValue() != 9901 {
			t.Errorf("outrider %s probe = %+v, want GET %s on the admin port 9901", kind, p, want[kind])
		}
	}
	if !slices.Contains(px.Args, "--admin-listen=:9901") {
		t.Errorf("outrider args %q: the admin listener must be reachable by the kubelet on :9901", px.Args)
	}
	cs := container(t, pod.InitContainers, "configsync")
	// configsync's own flags have twins with the command in them
	// (OUTRIDER_CONFIGSYNC_SOURCE); the cmd/outrider tests check every
	// variable here against the flags.
	if !strings.HasPrefix(env(px, "OUTRIDER_STORAGE"), "etcd://") || !strings.HasPrefix(env(cs, "OUTRIDER_CONFIGSYNC_SOURCE"), "etcd://") {
		t.Error("storage and config source are not etcd:// locations")
	}
	for _, c := range []corev1.Container{px, cs} {
		if env(c, "OUTRIDER_ETCD_PASSWORD_FILE") == "" || env(c, "OUTRIDER_ETCD_CA_FILE") == "" {
			t.Errorf("%s: etcd credentials not configured", c.Name)
		}
		for _, a := range c.Args {
			if strings.HasPrefix(a, "--notify=signal:") {
				t.Errorf("%s: signal notification in the base, which has no shared PID namespace", c.Name)
			}
		}
	}

	// Volumes: every mount is declared; the config dir is one emptyDir,
	// written by configsync and read-only for the app; the etcd Secret exists.
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	all := append(append([]corev1.Container{}, pod.InitContainers...), pod.Containers...)
	for _, c := range all {
		for _, m := range c.VolumeMounts {
			if _, ok := vols[m.Name]; !ok {
				t.Errorf("%s mounts undeclared volume %s", c.Name, m.Name)
			}
		}
	}
	if v := vols["app-config"]; v.EmptyDir == nil {
		t.Error("app-config is not an emptyDir")
	}
	app := container(t, pod.Containers, "app")
	for _, m := range app.VolumeMounts {
		if m.Name == "app-config" && !m.ReadOnly {
			t.Error("the app mounts its config read-write; configsync owns it")
		}
	}
	if v := vols["etcd-credentials"]; v.Secret == nil || v.Secret.SecretName != o.secrets[0].Name {
		t.Errorf("etcd-credentials volume does not use the Secret %s", o.secrets[0].Name)
	}
	for _, k := range []string{"ca.crt", "password"} {
		if _, ok := o.secrets[0].StringData[k]; !ok {
			t.Errorf("Secret %s has no %s", o.secrets[0].Name, k)
		}
	}

	// The Service reaches the pods on 80 and 443 (and 443 over UDP for
	// HTTP/3), mapped to outrider's ports.
	svc := o.services[0]
	ports := map[string]int{}
	for _, p := range svc.Spec.Ports {
		ports[fmt.Sprintf("%d/%s", p.Port, p.Protocol)] = p.TargetPort.IntValue()
	}
	if ports["80/TCP"] != 8080 || ports["443/TCP"] != 8443 || ports["443/UDP"] != 8443 {
		t.Errorf("Service ports %v, want 80→8080, 443→8443 and 443/UDP→8443", ports)
	}
	for k, v := range svc.Spec.Selector {
		if o.deployments[0].Spec.Template.Labels[k] != v {
			t.Errorf("Service selector %s=%s does not match the pod labels", k, v)
		}
	}
}

// Issue #12: what an operator needs from the manifests beyond decoding.
func TestBaseLifecycle(t *testing.T) {
	o := load(t, "base")
	d := o.deployments[0]
	pod := d.Spec.Template.Spec
	all := append(append([]corev1.Container{}, pod.InitContainers...), pod.Containers...)

	// A reproducible image: a fixed tag or a digest, never latest, and the
	// kustomization pins the same one.
	for _, c := range all {
		if !strings.Contains(c.Image, "outrider") {
			continue
		}
		name, tag, ok := strings.Cut(c.Image, ":")
		if !ok || tag == "" || tag == "latest" {
			t.Errorf("%s: image %q has no fixed tag", c.Name, c.Image)
		}
		if c.ImagePullPolicy != corev1.PullIfNotPresent {
			t.Errorf("%s: imagePullPolicy %q, want IfNotPresent for a fixed image", c.Name, c.ImagePullPolicy)
		}
		if !slices.ContainsFunc(o.kustomization.Images, func(i kustomizeImage) bool {
			return i.Name == name && (i.NewTag == tag || i.Digest != "")
		}) {
			t.Errorf("kustomization images do not pin %s", c.Image)
		}
	}

	// Shutdown: the app's preStop drains the proxy before the app is
	// signalled, within the grace period (5s delay + 30s --shutdown-timeout).
	app := container(t, pod.Containers, "app")
	if app.Lifecycle == nil || app.Lifecycle.PreStop == nil || app.Lifecycle.PreStop.Exec == nil ||
		!strings.Contains(strings.Join(app.Lifecycle.PreStop.Exec.Command, " "), "http://127.0.0.1:9901/drain?delay=5s") {
		t.Errorf("app preStop = %+v, want an exec calling the proxy's loopback /drain", app.Lifecycle)
	}
	if g := pod.TerminationGracePeriodSeconds; g == nil || *g < 5+30+5 {
		t.Errorf("terminationGracePeriodSeconds = %v, want at least 40 (drain delay, shutdown timeout, the app's exit)", g)
	}

	// Replicas: spread over nodes and zones, a budget for disruptions.
	keys := map[string]bool{}
	for _, c := range pod.TopologySpreadConstraints {
		if c.LabelSelector == nil || c.LabelSelector.MatchLabels["app.kubernetes.io/name"] != d.Spec.Template.Labels["app.kubernetes.io/name"] {
			t.Errorf("topology spread on %s does not select the pods", c.TopologyKey)
		}
		keys[c.TopologyKey] = true
	}
	if !keys["kubernetes.io/hostname"] || !keys["topology.kubernetes.io/zone"] {
		t.Errorf("topology spread keys %v, want hostname and zone", keys)
	}
	if len(o.pdbs) != 1 {
		t.Fatalf("%d PodDisruptionBudgets, want 1", len(o.pdbs))
	}
	pdb := o.pdbs[0].Spec
	if pdb.MaxUnavailable == nil || pdb.MaxUnavailable.IntValue() != 1 || pdb.Selector == nil {
		t.Errorf("PodDisruptionBudget = %+v, want maxUnavailable 1", pdb)
	} else {
		for k, v := range pdb.Selector.MatchLabels {
			if d.Spec.Template.Labels[k] != v {
				t.Errorf("PodDisruptionBudget selector %s=%s does not match the pods", k, v)
			}
		}
	}

	// Client addresses are kept; not-ready pods get no traffic (the first
	// certificate is obtained by a pod that is ready already).
	svc := o.services[0].Spec
	if svc.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		t.Errorf("externalTrafficPolicy %q, want Local (client addresses kept)", svc.ExternalTrafficPolicy)
	}
	if svc.PublishNotReadyAddresses {
		t.Error("publishNotReadyAddresses routes clients to pods that are not ready")
	}
}

func TestSignalOverlay(t *testing.T) {
	o := load(t, filepath.Join("overlays", "signal"))
	if o.kustomization == nil || len(o.deployments) != 1 {
		t.Fatal("signal overlay: want a kustomization and one Deployment patch")
	}
	pod := o.deployments[0].Spec.Template.Spec
	if pod.ShareProcessNamespace == nil || !*pod.ShareProcessNamespace {
		t.Error("the signal variant must share the process namespace")
	}
	cs := container(t, pod.InitContainers, "configsync")
	if !slices.ContainsFunc(cs.Args, func(a string) bool { return strings.HasPrefix(a, "--notify=signal:HUP:process=") }) {
		t.Errorf("configsync args %q: want signal notification by process name", cs.Args)
	}
	base := load(t, "base")
	if o.deployments[0].Name != base.deployments[0].Name {
		t.Errorf("patch targets %q, base Deployment is %q", o.deployments[0].Name, base.deployments[0].Name)
	}
}

// Issue #16: the admin listeners were on the pod network for anyone. The
// NetworkPolicy admits the Service's ports from anywhere and every other
// port the pod opens (the admin ones) only from the monitoring namespace.
func TestNetworkPolicyAdmitsOnlyServicePortsFromAnywhere(t *testing.T) {
	o := load(t, "base")
	if len(o.policies) != 1 {
		t.Fatalf("base: %d NetworkPolicies, want 1", len(o.policies))
	}
	np := o.policies[0]
	pod := o.deployments[0].Spec.Template
	if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
		t.Errorf("policyTypes %v: without Ingress nothing is isolated", np.Spec.PolicyTypes)
	}
	for k, v := range np.Spec.PodSelector.MatchLabels {
		if pod.Labels[k] != v {
			t.Errorf("podSelector %s=%s does not select the pods", k, v)
		}
	}
	if len(np.Spec.PodSelector.MatchExpressions) != 0 || len(np.Spec.PodSelector.MatchLabels) == 0 {
		t.Errorf("podSelector %+v: want the pods' labels only", np.Spec.PodSelector)
	}
	public := map[int]bool{}
	for _, p := range o.services[0].Spec.Ports {
		public[p.TargetPort.IntValue()] = true
	}
	fromAnywhere, fromMonitoring := map[int]bool{}, map[int]bool{}
	for i, r := range np.Spec.Ingress {
		if len(r.Ports) == 0 {
			t.Errorf("ingress rule %d admits every port", i)
		}
		anywhere := len(r.From) == 0
		for _, f := range r.From {
			ns := f.NamespaceSelector
			if f.IPBlock != nil || f.PodSelector != nil || ns == nil || len(ns.MatchExpressions) != 0 ||
				!cmp.Equal(ns.MatchLabels, map[string]string{"kubernetes.io/metadata.name": "monitoring"}) {
				t.Errorf("ingress rule %d admits %+v; want only the monitoring namespace", i, f)
			}
		}
		for _, p := range r.Ports {
			if p.Port == nil || p.EndPort != nil || p.Protocol == nil || *p.Protocol != corev1.ProtocolTCP {
				t.Errorf("ingress rule %d: port %+v, want one TCP port", i, p)
				continue
			}
			if anywhere {
				fromAnywhere[p.Port.IntValue()] = true
			} else {
				fromMonitoring[p.Port.IntValue()] = true
			}
		}
	}
	if !cmp.Equal(fromAnywhere, public) {
		t.Errorf("ports open to anyone %v, want exactly the Service's target ports %v", fromAnywhere, public)
	}
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		for _, p := range c.Ports {
			if port := int(p.ContainerPort); !public[port] && !fromMonitoring[port] {
				t.Errorf("%s port %d (%s) is not admitted from the monitoring namespace", c.Name, port, p.Name)
			}
		}
	}
	for _, port := range []int{9901, 9902} {
		if fromAnywhere[port] || !fromMonitoring[port] {
			t.Errorf("admin port %d: want it admitted from the monitoring namespace only", port)
		}
	}
}
