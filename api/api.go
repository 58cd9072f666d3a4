// Package api holds the service's machine-readable Kafka contracts: the
// AsyncAPI 3.0 document of its topics (asyncapi.yaml) and the JSON Schema
// (draft 2020-12) of each event type's data (schemas/<ce_type>.json), whose
// $id is the event's ce_dataschema. They are embedded so that tests hold
// events to the very files that ship; no binary of the service imports this
// package.
package api

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Files is asyncapi.yaml and schemas/*.json.
//
//go:embed asyncapi.yaml schemas/*.json
var Files embed.FS

// Schemas compiles every schema in schemas/, asserting formats (uuid,
// date-time, ...), and returns them by event type: the file name without
// .json. A schema's $id must be given; references resolve among the files.
func Schemas() (map[string]*jsonschema.Schema, error) {
	names, err := fs.Glob(Files, "schemas/*.json")
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	ids := map[string]string{}
	for _, name := range names {
		b, err := Files.ReadFile(name)
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		m, _ := doc.(map[string]any)
		id, _ := m["$id"].(string)
		if id == "" {
			return nil, fmt.Errorf("%s: no $id", name)
		}
		if err := c.AddResource(id, doc); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		ids[strings.TrimSuffix(path.Base(name), ".json")] = id
	}
	out := map[string]*jsonschema.Schema{}
	for typ, id := range ids {
		s, err := c.Compile(id)
		if err != nil {
			return nil, fmt.Errorf("schemas/%s.json: %w", typ, err)
		}
		out[typ] = s
	}
	return out, nil
}

// Validate checks the JSON data of an event against the schema s.
func Validate(s *jsonschema.Schema, data []byte) error {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return err
	}
	return s.Validate(v)
}
