package modelfile

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Real models' shapes and file sizes (the weights as the files on Hugging Face store them),
// sized for the contexts users run them at.
func TestNeedOf(t *testing.T) {
	gqa := func(layers, kv, dim int64) attention {
		return attention{layers: layers, kvHeads: []int64{kv}, keyLen: dim, valueLen: dim}
	}
	tests := []struct {
		name  string
		shape modelShape
		ctx   int
		opts  NeedOptions
		want  Need
	}{
		{
			// 4.92 GB file; 2 × 32 × 8 × 128 × 8192 × 2 B = 1 GiB: fits a 1080 Ti with room.
			name:  "Llama 3.1 8B Q4_K_M, 8k context",
			shape: modelShape{format: "gguf", weightBytes: 4_920_733_696, attention: gqa(32, 8, 128)},
			ctx:   8192,
			want:  Need{WeightsMiB: 4693, KVCacheMiB: 1024, OverheadMiB: 512},
		},
		{
			// 8.54 GB Q8_0: weights + KV = 9169 MiB, + 512 overhead = 9681 MiB: one 11 GiB card.
			name:  "Llama 3.1 8B Q8_0, 8k context",
			shape: modelShape{format: "gguf", weightBytes: 8_540_770_304, attention: gqa(32, 8, 128)},
			ctx:   8192,
			want:  Need{WeightsMiB: 8146, KVCacheMiB: 1024, OverheadMiB: 512},
		},
		{
			// 2 × 28 × 4 × 128 × 32768 × 2 B = 1792 MiB.
			name:  "Qwen2.5 7B, 32k context",
			shape: modelShape{format: "safetensors", weightBytes: 15_231_233_024, attention: gqa(28, 4, 128)},
			ctx:   32768,
			want:  Need{WeightsMiB: 14526, KVCacheMiB: 1792, OverheadMiB: 512},
		},
		{
			// No grouped-query attention: 2 × 32 × 32 × 128 × 4096 × 2 B = 2 GiB.
			name:  "Llama 2 7B, 4k context",
			shape: modelShape{format: "gguf", weightBytes: 13_476_839_424, attention: gqa(32, 32, 128)},
			ctx:   4096,
			want:  Need{WeightsMiB: 12853, KVCacheMiB: 2048, OverheadMiB: 512},
		},
		{
			// Llama 3.3 70B Q4_K_M over two 3090s: 2 × 80 × 8 × 128 × 16384 × 1 B (q8 cache).
			name:  "Llama 3.3 70B Q4_K_M, 16k context, 8-bit cache",
			shape: modelShape{format: "gguf", weightBytes: 42_520_393_728, attention: gqa(80, 8, 128)},
			ctx:   16384,
			opts:  NeedOptions{KVBytes: 1},
			want:  Need{WeightsMiB: 40551, KVCacheMiB: 2560, OverheadMiB: 512},
		},
		{
			// 61 × (2×512 + 64) × 8192 × 2 B = 1037 MiB, where full K and V would be 40 GiB.
			name: "DeepSeek V3 MLA, 8k context",
			shape: modelShape{format: "safetensors", weightBytes: 688_586_727_753,
				attention: attention{layers: 61, kvHeads: []int64{128}, keyLen: 192, valueLen: 128, latentRank: 512, ropeDims: 64}},
			ctx:  8192,
			opts: NeedOptions{OverheadMiB: 2048},
			want: Need{WeightsMiB: 656688, KVCacheMiB: 1037, OverheadMiB: 2048},
		},
		{
			// A hybrid whose Mamba layers (0 kv heads) cache nothing: 2 of 4 layers × 8 × 256.
			name: "per-layer kv heads",
			shape: modelShape{format: "gguf", weightBytes: 1 << 20,
				attention: attention{layers: 4, kvHeads: []int64{8, 0, 8, 0}, keyLen: 128, valueLen: 128}},
			ctx:  1024,
			want: Need{WeightsMiB: 1, KVCacheMiB: 8, OverheadMiB: 512},
		},
		{
			name:  "no context asked: weights and overhead",
			shape: modelShape{format: "gguf", weightBytes: 1, attentionErr: errors.New("no metadata")},
			want:  Need{WeightsMiB: 1, OverheadMiB: 512},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, err := tt.opts.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			got, err := needOf(tt.shape, tt.ctx, opts)
			if err != nil {
				t.Fatalf("needOf: %v", err)
			}
			got.Detail = ""
			if got != tt.want {
				t.Errorf("needOf = %+v, want %+v", got, tt.want)
			}
		})
	}
	t.Run("context without a shape", func(t *testing.T) {
		_, err := needOf(modelShape{attentionErr: ErrUnsupportedModel}, 4096, NeedOptions{KVBytes: 2})
		if !errors.Is(err, ErrUnsupportedModel) || !strings.Contains(err.Error(), "kv cache for 4096 tokens") {
			t.Errorf("error %v", err)
		}
	})
}

func TestNeedVariant(t *testing.T) {
	n := Need{WeightsMiB: 8146, KVCacheMiB: 1024, OverheadMiB: 512, Detail: "q8"}
	got := n.Variant("q8-8k")
	if got.Name != "q8-8k" || got.NeedMiB != 9170 || got.PerGPUOverheadMiB != 512 || got.GroupSizes != nil {
		t.Errorf("Variant = %+v, want q8-8k, 9170 MiB, 512 MiB per gpu", got)
	}
}

func TestNeedOptions(t *testing.T) {
	tests := []struct {
		name    string
		opts    NeedOptions
		want    NeedOptions
		wantErr string
	}{
		{"defaults", NeedOptions{}, NeedOptions{KVBytes: 2, OverheadMiB: 512}, ""},
		{"kept", NeedOptions{KVBytes: 0.5625, OverheadMiB: 2048}, NeedOptions{KVBytes: 0.5625, OverheadMiB: 2048}, ""},
		{"negative kv", NeedOptions{KVBytes: -1}, NeedOptions{}, "outside 0..8"},
		{"NaN kv", NeedOptions{KVBytes: math.NaN()}, NeedOptions{}, "outside 0..8"},
		{"huge kv", NeedOptions{KVBytes: 16}, NeedOptions{}, "outside 0..8"},
		{"negative overhead", NeedOptions{OverheadMiB: -1}, NeedOptions{}, "negative overhead"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.opts.withDefaults()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("withDefaults = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestAttentionCheck(t *testing.T) {
	ok := attention{layers: 32, kvHeads: []int64{8}, keyLen: 128, valueLen: 128}
	tests := []struct {
		name string
		edit func(a *attention)
		want string
	}{
		{"no layers", func(a *attention) { a.layers = 0 }, "0 layers"},
		{"per-layer count mismatch", func(a *attention) { a.kvHeads = []int64{8, 8} }, "2 per-layer kv head counts for 32 layers"},
		{"negative heads", func(a *attention) { a.kvHeads = []int64{-1} }, "-1 kv heads"},
		{"zero head dim", func(a *attention) { a.valueLen = 0 }, "head dims"},
		{"huge latent", func(a *attention) { a.latentRank = 1 << 20 }, "latent rank"},
	}
	if err := ok.check(); err != nil {
		t.Fatalf("check(%+v) = %v", ok, err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := ok
			a.kvHeads = append([]int64(nil), ok.kvHeads...)
			tt.edit(&a)
			if err := a.check(); !errors.Is(err, ErrUnsupportedModel) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("check() = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestEstimateNeedErrors(t *testing.T) {
	dir := t.TempDir()
	notModel := filepath.Join(dir, "model.bin")
	if err := os.WriteFile(notModel, []byte("pytorch pickle"), 0o600); err != nil {
		t.Fatal(err)
	}
	tiny := filepath.Join(dir, "x")
	if err := os.WriteFile(tiny, []byte("GG"), 0o600); err != nil {
		t.Fatal(err)
	}
	gguf := filepath.Join(dir, "m.gguf")
	if err := os.WriteFile(gguf, tinyLlama().bytes(t), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		ctx  int
		opts NeedOptions
		is   error
		want string
	}{
		{"missing", filepath.Join(dir, "nope.gguf"), 0, NeedOptions{}, os.ErrNotExist, "nope.gguf"},
		{"pickle", notModel, 0, NeedOptions{}, ErrUnsupportedModel, "neither GGUF"},
		{"two bytes", tiny, 0, NeedOptions{}, ErrUnsupportedModel, "neither GGUF"},
		{"negative context", gguf, -1, NeedOptions{}, nil, "negative context length -1"},
		{"bad options", gguf, 0, NeedOptions{KVBytes: -2}, nil, "outside 0..8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := EstimateNeed(tt.path, tt.ctx, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) || (tt.is != nil && !errors.Is(err, tt.is)) {
				t.Errorf("error %v, want %v containing %q", err, tt.is, tt.want)
			}
		})
	}
}
