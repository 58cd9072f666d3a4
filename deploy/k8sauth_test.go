package deploy_test

import (
	"path"
	"regexp"
	"strings"
	"testing"

	"github.com/acme/orders-service/auth"
	"github.com/acme/orders-service/internal/settings"
)

// podFiles is the part of deployment.yaml that decides which files the
// container sees.
type podFiles struct {
	Spec struct {
		Template struct {
			Spec struct {
				Containers []struct {
					VolumeMounts []struct {
						Name      string `yaml:"name"`
						MountPath string `yaml:"mountPath"`
					} `yaml:"volumeMounts"`
				} `yaml:"containers"`
				Volumes []struct {
					Name   string `yaml:"name"`
					Secret *struct {
						SecretName string `yaml:"secretName"`
						Items      []any  `yaml:"items"`
					} `yaml:"secret"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

// secretFile returns the Secret whose key file is, when the Deployment
// mounts file from a Secret volume holding every key of that Secret as a
// file (no items list), so the key need not be known to the manifest.
func (d podFiles) secretFile(file string) (secret, key string, ok bool) {
	pod := d.Spec.Template.Spec
	for _, m := range pod.Containers[0].VolumeMounts {
		if path.Dir(file) != path.Clean(m.MountPath) {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.Secret != nil && len(v.Secret.Items) == 0 {
				return v.Secret.SecretName, path.Base(file), true
			}
		}
	}
	return "", "", false
}

// TestKubernetesJWTKeySwitch: the ConfigMap's token key, and the public key
// docs/operations.md switches to, are files of the Secret the document tells
// you to create, under the name it gives them; the configuration loads both
// ways (one key source at a time).
func TestKubernetesJWTKeySwitch(t *testing.T) {
	var cm configMap
	decodeYAML(t, "deploy/k8s/configmap.yaml", &cm)
	var d podFiles
	decodeYAML(t, "deploy/k8s/deployment.yaml", &d)
	if len(d.Spec.Template.Spec.Containers) != 1 {
		t.Fatal("deployment.yaml: want one container")
	}
	doc := string(readFile(t, "docs/operations.md"))

	// The documented switch: AUTH_JWT_PUBLIC_KEY_FILE replaces the HS256 line.
	m := regexp.MustCompile("`" + auth.EnvPublicKeyFile + `: (\S+)` + "`").FindStringSubmatch(doc)
	if m == nil {
		t.Fatalf("docs/operations.md shows no `%s: <path>` line for the ConfigMap", auth.EnvPublicKeyFile)
	}
	publicKey := map[string]string{}
	for k, v := range cm.Data {
		if k != auth.EnvHS256SecretFile && k != auth.EnvHS256Secret {
			publicKey[k] = v
		}
	}
	publicKey[auth.EnvPublicKeyFile] = m[1]

	for name, env := range map[string]map[string]string{"configmap.yaml": cm.Data, "after the documented switch": publicKey} {
		// The Deployment takes the SASL password from a Secret, not the ConfigMap.
		withSecrets := func(k string) string {
			if k == "KAFKA_SASL_PASSWORD" {
				return "from-the-secret"
			}
			return env[k]
		}
		if _, err := settings.Load(withSecrets); err != nil {
			t.Errorf("%s: the configuration does not load: %v", name, err)
		}
		for _, v := range []string{auth.EnvHS256SecretFile, auth.EnvPublicKeyFile} {
			file, set := env[v]
			if !set {
				continue
			}
			secret, key, ok := d.secretFile(file)
			if !ok {
				t.Errorf("%s: %s=%s is in no Secret volume mounted whole at %s", name, v, file, path.Dir(file))
				continue
			}
			create := regexp.MustCompile(`kubectl create secret generic ` + regexp.QuoteMeta(secret) + `\s+(?:\\\s*)?--from-file=` + regexp.QuoteMeta(key) + `=`)
			if !create.MatchString(doc) {
				t.Errorf("%s: %s reads key %s of Secret %s, which docs/operations.md never creates (kubectl create secret generic %s --from-file=%s=...)", name, v, key, secret, secret, key)
			}
		}
	}
	if strings.Contains(cm.Data[auth.EnvHS256SecretFile], "..") {
		t.Error("configmap.yaml: the key file path climbs out of its mount")
	}
}
