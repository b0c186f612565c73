package runconfig

import (
	"os"
	"strings"
	"testing"
)

// TestEveryKeyIsDocumented keeps docs/config.md in step with what Parse accepts.
func TestEveryKeyIsDocumented(t *testing.T) {
	data, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatalf("read docs/config.md: %v", err)
	}
	doc := string(data)
	if !strings.Contains(doc, "`llm.evaluator_models[]` (same fields as `models`)") {
		t.Error("docs/config.md does not document llm.evaluator_models[]")
	}
	for _, key := range KnownKeys() {
		// evaluator_models take the same fields as models, documented once.
		key = strings.Replace(key, "llm.evaluator_models[].", "llm.models[].", 1)
		section, field := "", key
		if i := strings.LastIndex(key, "."); i >= 0 {
			section, field = key[:i], key[i+1:]
		}
		// A key is documented in full (`llm.models[].name`) or as a field listed in the
		// row of its section (`llm.models[].api_base`, `api_key`, …).
		if !strings.Contains(doc, "`"+key+"`") && !(strings.Contains(doc, "`"+section+".") && strings.Contains(doc, "`"+field+"`")) {
			t.Errorf("docs/config.md does not document %s", key)
		}
	}
	for _, key := range IgnoredKeys() {
		field := key[strings.LastIndex(key, ".")+1:]
		if !strings.Contains(doc, "`"+field+"`") {
			t.Errorf("docs/config.md does not list ignored key %s", key)
		}
	}
}
