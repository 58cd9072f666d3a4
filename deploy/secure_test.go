package deploy_test

import (
	"path"
	"slices"
	"strings"
	"testing"
)

type networkPolicy struct {
	Kind string `yaml:"kind"`
	Spec struct {
		PodSelector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"podSelector"`
		PolicyTypes []string `yaml:"policyTypes"`
		Ingress     []struct {
			From  []map[string]any `yaml:"from"`
			Ports []struct {
				Port any `yaml:"port"`
			} `yaml:"ports"`
		} `yaml:"ingress"`
		Egress []struct {
			To []map[string]any `yaml:"to"`
		} `yaml:"egress"`
	} `yaml:"spec"`
}

// podSpec is the part of deployment.yaml that says where secrets come from.
type podSpec struct {
	Spec struct {
		Template struct {
			Spec struct {
				Containers []struct {
					Env []struct {
						Name      string `yaml:"name"`
						ValueFrom *struct {
							SecretKeyRef *struct {
								Name     string `yaml:"name"`
								Optional bool   `yaml:"optional"`
							} `yaml:"secretKeyRef"`
						} `yaml:"valueFrom"`
					} `yaml:"env"`
					VolumeMounts []struct {
						Name      string `yaml:"name"`
						MountPath string `yaml:"mountPath"`
					} `yaml:"volumeMounts"`
				} `yaml:"containers"`
				Volumes []struct {
					Name   string `yaml:"name"`
					Secret *struct {
						SecretName string `yaml:"secretName"`
					} `yaml:"secret"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

// TestKubernetesManifestsAreSecure: the shipped Kubernetes manifests are an
// example to copy, so they are a secure one: a NetworkPolicy admits only
// named clients, Kafka is reached over SASL_SSL with credentials from a
// Secret, gRPC is served over TLS from a Secret, reflection is off and the
// inbox applies payment results of the payments service only.
func TestKubernetesManifestsAreSecure(t *testing.T) {
	var k struct {
		Resources []string `yaml:"resources"`
	}
	decodeYAML(t, "deploy/k8s/kustomization.yaml", &k)
	if !slices.Contains(k.Resources, "networkpolicy.yaml") {
		t.Errorf("kustomization.yaml resources %v lack networkpolicy.yaml", k.Resources)
	} else {
		var np networkPolicy
		decodeYAML(t, "deploy/k8s/networkpolicy.yaml", &np)
		if np.Kind != "NetworkPolicy" || np.Spec.PodSelector.MatchLabels["app.kubernetes.io/name"] != "orders-service" {
			t.Errorf("networkpolicy.yaml: kind %q selecting %v, want a NetworkPolicy of the orders-service pods", np.Kind, np.Spec.PodSelector.MatchLabels)
		}
		if !slices.Contains(np.Spec.PolicyTypes, "Ingress") || !slices.Contains(np.Spec.PolicyTypes, "Egress") {
			t.Errorf("networkpolicy.yaml: policyTypes %v, want Ingress and Egress", np.Spec.PolicyTypes)
		}
		if len(np.Spec.Ingress) == 0 || len(np.Spec.Egress) == 0 {
			t.Errorf("networkpolicy.yaml: %d ingress and %d egress rules, want some of each", len(np.Spec.Ingress), len(np.Spec.Egress))
		}
		for i, r := range np.Spec.Ingress {
			if len(r.From) == 0 || len(r.Ports) == 0 {
				t.Errorf("networkpolicy.yaml: ingress rule %d admits every source or every port", i)
			}
		}
	}

	var cm configMap
	decodeYAML(t, "deploy/k8s/configmap.yaml", &cm)
	for name, want := range map[string]string{"GRPC_REFLECTION": "false", "KAFKA_TLS": "true"} {
		if cm.Data[name] != want {
			t.Errorf("configmap.yaml: %s = %q, want %q", name, cm.Data[name], want)
		}
	}
	if m := cm.Data["KAFKA_SASL_MECHANISM"]; !strings.HasPrefix(m, "SCRAM-SHA-") || cm.Data["KAFKA_SASL_USER"] == "" {
		t.Errorf("configmap.yaml: KAFKA_SASL_MECHANISM %q with user %q, want SCRAM with a user", m, cm.Data["KAFKA_SASL_USER"])
	}
	if v := cm.Data["KAFKA_SASL_ALLOW_PLAINTEXT"]; v != "" && v != "false" {
		t.Errorf("configmap.yaml: KAFKA_SASL_ALLOW_PLAINTEXT = %q", v)
	}
	if cm.Data["KAFKA_INBOX_ALLOWED_SOURCES"] == "" {
		t.Error("configmap.yaml: KAFKA_INBOX_ALLOWED_SOURCES is empty: any producer on the payments topic is trusted")
	}

	var d podSpec
	decodeYAML(t, "deploy/k8s/deployment.yaml", &d)
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("deployment.yaml: %d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	fromSecret := false
	for _, e := range c.Env {
		if e.Name == "KAFKA_SASL_PASSWORD" {
			fromSecret = e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && !e.ValueFrom.SecretKeyRef.Optional
		}
	}
	if !fromSecret {
		t.Error("deployment.yaml: KAFKA_SASL_PASSWORD is not taken from a Secret (required, not optional)")
	}
	secretVolumes := map[string]bool{}
	for _, v := range pod.Volumes {
		secretVolumes[v.Name] = v.Secret != nil && v.Secret.SecretName != ""
	}
	for _, name := range []string{"GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE", "KAFKA_TLS_CA_FILE"} {
		file := cm.Data[name]
		mounted := false
		for _, m := range c.VolumeMounts {
			if file != "" && path.Dir(file) == path.Clean(m.MountPath) && secretVolumes[m.Name] {
				mounted = true
			}
		}
		if !mounted {
			t.Errorf("configmap.yaml: %s = %q is not a file of a mounted Secret", name, file)
		}
	}
}

// TestComposePublishesOnLoopback: the compose stack runs with AUTH_MODE=none
// and a plaintext broker, so its ports are published on 127.0.0.1 only.
func TestComposePublishesOnLoopback(t *testing.T) {
	var f struct {
		Services map[string]struct {
			Ports []string `yaml:"ports"`
		} `yaml:"services"`
	}
	decodeYAML(t, "deploy/compose.yaml", &f)
	n := 0
	for name, s := range f.Services {
		for _, p := range s.Ports {
			n++
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("compose.yaml: %s publishes %q on every interface, want 127.0.0.1:...", name, p)
			}
		}
	}
	if n == 0 {
		t.Error("compose.yaml publishes no ports")
	}
}
