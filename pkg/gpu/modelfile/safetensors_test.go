package modelfile

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type stTensor struct {
	name  string
	dtype string
	shape []uint64
	bytes uint64 // the data's size; 0 means dtype × shape by the test's own table
}

// stTestBits are the dtypes' sizes in bits, written out here so a slip in safetensors.go shows.
var stTestBits = map[string]uint64{"F32": 32, "F16": 16, "BF16": 16, "I8": 8, "U8": 8, "F8_E4M3": 8, "I32": 32, "F4": 4, "F64": 64, "BOOL": 8}

// safetensorsBytes lays tensors out back to back after a JSON header, as the format does,
// with __metadata__ first the way transformers writes it.
func safetensorsBytes(t testing.TB, tensors []stTensor) []byte {
	t.Helper()
	header := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var offset uint64
	for _, ts := range tensors {
		size := ts.bytes
		if size == 0 {
			n := uint64(1)
			for _, d := range ts.shape {
				n *= d
			}
			size = n * stTestBits[ts.dtype] / 8
		}
		header[ts.name] = map[string]any{"dtype": ts.dtype, "shape": ts.shape, "data_offsets": []uint64{offset, offset + size}}
		offset += size
	}
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	for len(h)%8 != 0 {
		h = append(h, ' ') // the reference writer pads the header with spaces
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	out = append(out, h...)
	return append(out, make([]byte, offset)...)
}

func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// A Llama-3-8B config.json, shrunk in nothing but the tensors the test writes.
const llama3Config = `{
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
  "num_hidden_layers": 32, "num_key_value_heads": 8, "rope_theta": 500000.0,
  "torch_dtype": "bfloat16", "vocab_size": 128256
}`

func TestParseSafetensors(t *testing.T) {
	tensors := []stTensor{
		{name: "model.embed_tokens.weight", dtype: "BF16", shape: []uint64{300, 64}},              // 38400
		{name: "model.layers.0.self_attn.q_proj.weight", dtype: "F16", shape: []uint64{64, 64}},   // 8192
		{name: "model.layers.0.mlp.down_proj.weight", dtype: "F8_E4M3", shape: []uint64{64, 128}}, // 8192
		{name: "model.layers.0.mlp.down_proj.weight_scale", dtype: "F32", shape: []uint64{1}},     // 4
		{name: "model.layers.0.mlp.experts.blocks", dtype: "F4", shape: []uint64{64, 3}},          // 96
		{name: "model.norm.weight", dtype: "F32", shape: []uint64{64}},                            // 256
		{name: "lm_head.qweight", dtype: "I32", shape: []uint64{8, 64}},                           // 2048
		{name: "scalar", dtype: "F64", shape: []uint64{}},                                         // 8: a 0-d tensor holds one element
		{name: "future", dtype: "F3_E1M1", shape: []uint64{10}, bytes: 5},                         // unknown dtype: its range
	}
	data := safetensorsBytes(t, tensors)
	got, err := parseSafetensors(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatalf("parseSafetensors: %v", err)
	}
	want := safetensorsFile{tensors: 9, bytes: 38400 + 8192 + 8192 + 4 + 96 + 256 + 2048 + 8 + 5}
	if got != want {
		t.Errorf("parseSafetensors = %+v, want %+v", got, want)
	}
}

func TestEstimateNeedSafetensors(t *testing.T) {
	dir := t.TempDir()
	// One shard layout used throughout: 2 × 1 MiB of BF16.
	mib := []stTensor{{name: "a", dtype: "BF16", shape: []uint64{512, 1024}}}
	mib2 := []stTensor{{name: "b", dtype: "BF16", shape: []uint64{512, 1024}}}

	single := filepath.Join(dir, "single")
	writeFile(t, filepath.Join(single, "model.safetensors"), safetensorsBytes(t, append(mib, mib2[0])))
	writeFile(t, filepath.Join(single, "config.json"), []byte(llama3Config))

	sharded := filepath.Join(dir, "sharded")
	writeFile(t, filepath.Join(sharded, "model-00001-of-00002.safetensors"), safetensorsBytes(t, mib))
	writeFile(t, filepath.Join(sharded, "model-00002-of-00002.safetensors"), safetensorsBytes(t, mib2))
	writeFile(t, filepath.Join(sharded, "model.safetensors.index.json"), []byte(`{"weight_map": {"a": "model-00001-of-00002.safetensors"}}`))
	writeFile(t, filepath.Join(sharded, "config.json"), []byte(llama3Config))

	// Gemma 3 keeps its text model under text_config, with an explicit head_dim.
	gemma := filepath.Join(dir, "gemma")
	writeFile(t, filepath.Join(gemma, "model.safetensors"), safetensorsBytes(t, mib))
	writeFile(t, filepath.Join(gemma, "config.json"), []byte(`{"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
		"text_config": {"hidden_size": 2560, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "num_hidden_layers": 34},
		"vision_config": {"hidden_size": 1152, "num_hidden_layers": 27}}`))

	noConfig := filepath.Join(dir, "noconfig")
	writeFile(t, filepath.Join(noConfig, "model.safetensors"), safetensorsBytes(t, mib))

	tests := []struct {
		name string
		path string
		ctx  int
		want Need
	}{
		// Llama 3 8B: 2 × 32 layers × 8 kv heads × 128 × 8192 × 2 B = 1 GiB.
		{"file", filepath.Join(single, "model.safetensors"), 8192, Need{WeightsMiB: 2, KVCacheMiB: 1024, OverheadMiB: 512}},
		{"directory", single, 8192, Need{WeightsMiB: 2, KVCacheMiB: 1024, OverheadMiB: 512}},
		{"sharded directory", sharded, 8192, Need{WeightsMiB: 2, KVCacheMiB: 1024, OverheadMiB: 512}},
		{"any shard names the model", filepath.Join(sharded, "model-00002-of-00002.safetensors"), 8192, Need{WeightsMiB: 2, KVCacheMiB: 1024, OverheadMiB: 512}},
		// Gemma 3 4B: 2 × 34 × 4 × 256 × 32768 × 2 B = 4352 MiB.
		{"text_config", gemma, 32768, Need{WeightsMiB: 1, KVCacheMiB: 4352, OverheadMiB: 512}},
		{"no config, weights only", noConfig, 0, Need{WeightsMiB: 1, OverheadMiB: 512}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := EstimateNeed(tt.path, tt.ctx, NeedOptions{})
			if err != nil {
				t.Fatalf("EstimateNeed: %v", err)
			}
			if !strings.HasPrefix(got.Detail, "safetensors") {
				t.Errorf("detail %q", got.Detail)
			}
			got.Detail = ""
			if got != tt.want {
				t.Errorf("EstimateNeed = %+v, want %+v", got, tt.want)
			}
		})
	}

	t.Run("no config with a context", func(t *testing.T) {
		_, err := EstimateNeed(noConfig, 4096, NeedOptions{})
		if !errors.Is(err, ErrUnsupportedModel) || !strings.Contains(err.Error(), "config.json") {
			t.Errorf("error %v, want ErrUnsupportedModel naming config.json", err)
		}
	})
	t.Run("empty directory", func(t *testing.T) {
		_, err := EstimateNeed(t.TempDir(), 0, NeedOptions{})
		if !errors.Is(err, ErrUnsupportedModel) || !strings.Contains(err.Error(), "no *.safetensors") {
			t.Errorf("error %v, want ErrUnsupportedModel", err)
		}
	})
	t.Run("missing shard", func(t *testing.T) {
		os.Remove(filepath.Join(sharded, "model-00002-of-00002.safetensors"))
		_, err := EstimateNeed(filepath.Join(sharded, "model-00001-of-00002.safetensors"), 0, NeedOptions{})
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("error %v, want not-exist", err)
		}
	})
}

func TestParseHFConfig(t *testing.T) {
	tests := []struct {
		name, config string
		wantArch     string
		wantElems    int64 // K and V elements per token, all layers
	}{
		// 32 layers × 8 × (128+128)
		{"llama 3 8b", llama3Config, "llama", 32 * 8 * 256},
		// Qwen3 4B: head_dim 128 although hidden/heads = 80.
		{"qwen3 explicit head_dim", `{"model_type": "qwen3", "hidden_size": 2560, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "num_hidden_layers": 36}`, "qwen3", 36 * 8 * 256},
		// Llama 2 7B has no num_key_value_heads: every head caches.
		{"llama 2 without GQA", `{"model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32, "num_hidden_layers": 32}`, "llama", 32 * 32 * 256},
		{"floats for ints", `{"hidden_size": 4096.0, "num_attention_heads": 32, "num_hidden_layers": 32.0, "num_key_value_heads": 8}`, "", 32 * 8 * 256},
		{"gpt-2 names", `{"model_type": "gpt2", "n_embd": 768, "n_head": 12, "n_layer": 12}`, "gpt2", 12 * 12 * 128},
		// DeepSeek V3: 61 × (2×512 + 64).
		{"deepseek v3 MLA", `{"model_type": "deepseek_v3", "hidden_size": 7168, "num_attention_heads": 128, "num_key_value_heads": 128,
			"num_hidden_layers": 61, "kv_lora_rank": 512, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128}`, "deepseek_v3", 61 * 1088},
		{"llm_config", `{"model_type": "internvl_chat", "llm_config": {"hidden_size": 2048, "num_attention_heads": 16, "num_key_value_heads": 2, "num_hidden_layers": 24}}`, "internvl_chat", 24 * 2 * 256},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			arch, a, err := parseHFConfig([]byte(tt.config))
			if err != nil {
				t.Fatalf("parseHFConfig: %v", err)
			}
			if arch != tt.wantArch || a.elementsPerToken() != tt.wantElems {
				t.Errorf("arch %q, %d elements per token; want %q, %d", arch, a.elementsPerToken(), tt.wantArch, tt.wantElems)
			}
		})
	}

	errs := []struct{ name, config, want string }{
		{"not json", `{`, "config.json"},
		{"no layers", `{"hidden_size": 4096, "num_attention_heads": 32}`, "no num_hidden_layers"},
		{"no heads", `{"num_hidden_layers": 32, "hidden_size": 4096}`, "neither num_key_value_heads"},
		{"no head dim", `{"num_hidden_layers": 32, "num_key_value_heads": 8}`, "no head_dim"},
		{"absurd layers", `{"num_hidden_layers": 1000000000, "num_attention_heads": 8, "head_dim": 64}`, "layers is outside"},
		{"negative ignored", `{"num_hidden_layers": -3, "num_attention_heads": 8, "head_dim": 64}`, "no num_hidden_layers"},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := parseHFConfig([]byte(tt.config))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestParseSafetensorsErrors(t *testing.T) {
	withHeader := func(h string) []byte {
		return append(binary.LittleEndian.AppendUint64(nil, uint64(len(h))), h...)
	}
	entry := func(dtype, shape, offsets string) []byte {
		return append(withHeader(fmt.Sprintf(`{"w": {"dtype": %q, "shape": %s, "data_offsets": %s}}`, dtype, shape, offsets)), make([]byte, 16)...)
	}
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "truncated"},
		{"short length", []byte{1, 2, 3}, "truncated"},
		{"header claims 2^63 bytes", binary.LittleEndian.AppendUint64(nil, 1<<63), "over 64 MiB"},
		{"header claims past the file", binary.LittleEndian.AppendUint64(nil, 1000), "longer than the file"},
		{"not json", withHeader("{oops"), "not a JSON object"},
		{"json array", withHeader("[1, 2]"), "not a JSON object"},
		{"entry not an object", withHeader(`{"w": 5}`), `tensor "w"`},
		{"offsets past the data", entry("F32", "[4]", "[0, 17]"), "outside the 16 bytes"},
		{"offsets backwards", entry("F32", "[0]", "[8, 4]"), "outside"},
		{"one offset", entry("F32", "[4]", "[0]"), "outside"},
		{"shape disagrees with bytes", entry("F32", "[3]", "[0, 16]"), "needs 96 bits, data_offsets give 16 bytes"},
		{"shape overflows", entry("F32", "[4294967296, 4294967296]", "[0, 16]"), "overflows"},
		{"bits overflow", entry("F64", "[4294967296, 536870912]", "[0, 16]"), "needs"},
		{"entry too long", withHeader(`{"w": {"dtype": "F32", "shape": [` + strings.Repeat("1,", 3000) + `1], "data_offsets": [0, 4]}}`), "entry of"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseSafetensors(bytes.NewReader(tt.data), int64(len(tt.data)))
			if !errors.Is(err, ErrModelFile) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want ErrModelFile containing %q", err, tt.want)
			}
		})
	}
}

// Every prefix of a valid file is an error, never a panic or a success.
func TestParseSafetensorsTruncated(t *testing.T) {
	data := safetensorsBytes(t, []stTensor{{name: "a", dtype: "F16", shape: []uint64{4, 4}}, {name: "b", dtype: "F32", shape: []uint64{2}}})
	for n := range len(data) {
		if _, err := parseSafetensors(bytes.NewReader(data[:n]), int64(n)); !errors.Is(err, ErrModelFile) {
			t.Fatalf("prefix of %d of %d bytes: error %v, want ErrModelFile", n, len(data), err)
		}
	}
}

func FuzzSafetensors(f *testing.F) {
	f.Add(safetensorsBytes(f, []stTensor{{name: "a", dtype: "BF16", shape: []uint64{4, 4}}}))
	f.Add([]byte("\x02\x00\x00\x00\x00\x00\x00\x00{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := parseSafetensors(bytes.NewReader(data), int64(len(data))); err != nil && !errors.Is(err, ErrModelFile) {
			t.Fatalf("error %v is not ErrModelFile", err)
		}
	})
}
