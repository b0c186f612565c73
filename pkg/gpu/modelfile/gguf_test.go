package modelfile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ggufKV is one metadata entry for the test writer; val's Go type picks the GGUF type:
// uint32, int32, uint64, float32, bool, string, []string, []int32, []float32, or ggufRaw.
type ggufKV struct {
	key string
	val any
}

// ggufRaw writes a value type and raw bytes, for entries the typed cases cannot express.
type ggufRaw struct {
	typ  uint32
	body []byte
}

type ggufTensorSpec struct {
	name string
	dims []uint64
	typ  uint32
}

// ggufSpec describes a test file; the writer lays tensors out back to back, each aligned,
// and appends zeroed data unless dataShort cuts it.
type ggufSpec struct {
	version   uint32
	kvs       []ggufKV
	tensors   []ggufTensorSpec
	align     uint64
	dataShort uint64
}

func (s ggufSpec) bytes(t testing.TB) []byte {
	t.Helper()
	var b bytes.Buffer
	w := func(v any) {
		if err := binary.Write(&b, binary.LittleEndian, v); err != nil {
			t.Fatal(err)
		}
	}
	str := func(s string) { w(uint64(len(s))); b.WriteString(s) }
	version := s.version
	if version == 0 {
		version = 3
	}
	align := s.align
	if align == 0 {
		align = ggufDefaultAlign
	}
	b.WriteString("GGUF")
	w(version)
	w(uint64(len(s.tensors)))
	w(uint64(len(s.kvs)))
	for _, kv := range s.kvs {
		str(kv.key)
		switch v := kv.val.(type) {
		case uint32:
			w(ggufUint32)
			w(v)
		case int32:
			w(ggufInt32)
			w(v)
		case uint64:
			w(ggufUint64)
			w(v)
		case float32:
			w(ggufFloat32)
			w(v)
		case bool:
			w(ggufBool)
			w(v)
		case string:
			w(ggufString)
			str(v)
		case []string:
			w(ggufArray)
			w(ggufString)
			w(uint64(len(v)))
			for _, s := range v {
				str(s)
			}
		case []int32:
			w(ggufArray)
			w(ggufInt32)
			w(uint64(len(v)))
			w(v)
		case []float32:
			w(ggufArray)
			w(ggufFloat32)
			w(uint64(len(v)))
			w(v)
		case ggufRaw:
			w(v.typ)
			b.Write(v.body)
		default:
			t.Fatalf("test writer: no GGUF type for %T", v)
		}
	}
	var offset, end uint64
	for _, ts := range s.tensors {
		str(ts.name)
		w(uint32(len(ts.dims)))
		w(ts.dims)
		w(ts.typ)
		w(offset)
		size := ggufTestSize(ts)
		end = offset + size
		offset = (end + align - 1) / align * align
	}
	for uint64(b.Len())%align != 0 {
		b.WriteByte(0)
	}
	b.Write(make([]byte, end-min(end, s.dataShort)))
	return b.Bytes()
}

// ggufTestSize is a tensor's size by the block sizes ggml's static_asserts state, written out
// as numbers so that a slip in gguf.go's table shows.
func ggufTestSize(ts ggufTensorSpec) uint64 {
	blocks := map[uint32][2]uint64{ // type: {block elements, block bytes}
		0: {1, 4}, 1: {1, 2}, 2: {32, 18}, 3: {32, 20}, 6: {32, 22}, 7: {32, 24}, 8: {32, 34}, 9: {32, 36},
		10: {256, 84}, 11: {256, 110}, 12: {256, 144}, 13: {256, 176}, 14: {256, 210}, 15: {256, 292},
		16: {256, 66}, 17: {256, 74}, 18: {256, 98}, 19: {256, 50}, 20: {32, 18}, 21: {256, 110},
		22: {256, 82}, 23: {256, 136}, 24: {1, 1}, 25: {1, 2}, 26: {1, 4}, 27: {1, 8}, 28: {1, 8},
		29: {256, 56}, 30: {1, 2}, 34: {256, 54}, 35: {256, 66}, 39: {32, 17}, 40: {64, 36},
		41: {128, 18}, 42: {64, 18},
	}
	bl, ok := blocks[ts.typ]
	if !ok {
		return 0
	}
	n := uint64(1)
	for _, d := range ts.dims {
		n *= d
	}
	return n / bl[0] * bl[1]
}

// tinyLlama is a two-layer llama-architecture file with the metadata llama.cpp writes: a
// vocabulary, merges, scores, a long chat template, and a mix of quantized tensors.
func tinyLlama() ggufSpec {
	vocab := make([]string, 300)
	for i := range vocab {
		vocab[i] = fmt.Sprintf("tok%d", i)
	}
	return ggufSpec{
		kvs: []ggufKV{
			{"general.architecture", "llama"},
			{"general.name", "Tiny Llama"},
			{"general.file_type", uint32(15)},
			{"llama.block_count", uint32(2)},
			{"llama.context_length", uint32(8192)},
			{"llama.embedding_length", uint32(64)},
			{"llama.feed_forward_length", uint32(256)},
			{"llama.attention.head_count", uint32(4)},
			{"llama.attention.head_count_kv", uint32(2)},
			{"llama.rope.freq_base", float32(500000)},
			{"llama.attention.layer_norm_rms_epsilon", float32(1e-5)},
			{"tokenizer.ggml.model", "gpt2"},
			{"tokenizer.ggml.tokens", vocab},
			{"tokenizer.ggml.scores", make([]float32, 300)},
			{"tokenizer.ggml.token_type", make([]int32, 300)},
			{"tokenizer.ggml.merges", []string{"t o", "to k"}},
			{"tokenizer.ggml.add_bos_token", true},
			{"tokenizer.chat_template", strings.Repeat("{% for m in messages %}{{ m.content }}{% endfor %}", 100)},
			{"general.quantization_version", uint32(2)},
		},
		tensors: []ggufTensorSpec{
			{"token_embd.weight", []uint64{64, 300}, 1},            // F16: 38400
			{"blk.0.attn_q.weight", []uint64{256, 64}, 12},         // Q4_K: 64 blocks × 144 = 9216
			{"blk.0.attn_k.weight", []uint64{64, 32}, 8},           // Q8_0: 64 blocks × 34 = 2176
			{"blk.0.ffn_down.weight", []uint64{256, 2}, 14},        // Q6_K: 2 × 210 = 420
			{"blk.0.attn_norm.weight", []uint64{64}, 0},            // F32: 256
			{"blk.1.attn_q.weight", []uint64{256, 1}, 23},          // IQ4_XS: 136
			{"blk.1.ffn_gate_exps.weight", []uint64{32, 2, 2}, 39}, // MXFP4: 4 × 17 = 68
			{"output_norm.weight", []uint64{8}, 30},                // BF16: 16
		},
	}
}

const tinyLlamaWeights = 38400 + 9216 + 2176 + 420 + 256 + 136 + 68 + 16

func TestParseGGUF(t *testing.T) {
	for _, version := range []uint32{2, 3} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			spec := tinyLlama()
			spec.version = version
			data := spec.bytes(t)
			h, err := parseGGUF(bytes.NewReader(data), int64(len(data)))
			if err != nil {
				t.Fatalf("parseGGUF: %v", err)
			}
			if h.weightBytes != tinyLlamaWeights || h.tensors != 8 || h.version != version {
				t.Errorf("weights %d tensors %d version %d, want %d 8 %d", h.weightBytes, h.tensors, h.version, tinyLlamaWeights, version)
			}
			if got := h.metaString("general.architecture"); got != "llama" {
				t.Errorf("architecture %q", got)
			}
			if _, kept := h.meta["tokenizer.chat_template"]; kept {
				t.Error("a 5 KB chat template was kept; long strings should be skipped")
			}
			if _, kept := h.meta["tokenizer.ggml.tokens"]; kept {
				t.Error("the vocabulary was kept; string arrays should be skipped")
			}
			if got, _ := h.meta["tokenizer.ggml.token_type"].([]int64); len(got) != 300 {
				t.Errorf("short int array: kept %d of 300", len(got))
			}
			if v, ok := h.metaInt("llama.attention.head_count_kv"); !ok || v != 2 {
				t.Errorf("head_count_kv = %d, %v", v, ok)
			}
		})
	}
}

// Every ggml type's size, one tensor each: the test's own table (numbers from ggml's
// static_asserts) against gguf.go's (expressions from gguf-py).
func TestGGUFTypeSizes(t *testing.T) {
	for id, typ := range ggmlTypes {
		t.Run(typ.name, func(t *testing.T) {
			ts := ggufTensorSpec{"w", []uint64{typ.blockSize * 3, 5}, id}
			want := ggufTestSize(ts)
			if want == 0 {
				t.Fatalf("type %d (%s) is missing from the test's table", id, typ.name)
			}
			data := ggufSpec{tensors: []ggufTensorSpec{ts}}.bytes(t)
			h, err := parseGGUF(bytes.NewReader(data), int64(len(data)))
			if err != nil {
				t.Fatalf("parseGGUF: %v", err)
			}
			if h.weightBytes != want {
				t.Errorf("%s [%d×5] = %d bytes, want %d", typ.name, typ.blockSize*3, h.weightBytes, want)
			}
		})
	}
}

func TestEstimateNeedGGUF(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, spec ggufSpec) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, spec.bytes(t), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	llama := write("tiny-llama.Q4_K_M.gguf", tinyLlama())

	// Per-layer kv heads (a hybrid whose layer 1 has no attention) and explicit head dims.
	hybrid := tinyLlama()
	hybrid.kvs[0] = ggufKV{"general.architecture", "granitehybrid"}
	for i, kv := range hybrid.kvs {
		hybrid.kvs[i].key = strings.Replace(kv.key, "llama.", "granitehybrid.", 1)
	}
	hybrid.kvs = append(hybrid.kvs,
		ggufKV{"granitehybrid.attention.head_count_kv", []int32{8, 0}}, // later keys win
		ggufKV{"granitehybrid.attention.key_length", uint32(128)},
		ggufKV{"granitehybrid.attention.value_length", uint32(64)})
	hybridPath := write("hybrid.gguf", hybrid)

	// DeepSeek-style multi-head latent attention.
	mla := tinyLlama()
	mla.kvs = append(mla.kvs[:1],
		ggufKV{"general.architecture", "deepseek2"},
		ggufKV{"deepseek2.block_count", uint32(61)},
		ggufKV{"deepseek2.attention.head_count", uint32(128)},
		ggufKV{"deepseek2.embedding_length", uint32(7168)},
		ggufKV{"deepseek2.attention.kv_lora_rank", uint32(512)},
		ggufKV{"deepseek2.rope.dimension_count", uint32(64)})
	mlaPath := write("deepseek.gguf", mla)

	noArch := tinyLlama()
	noArch.kvs = noArch.kvs[1:]
	noArchPath := write("no-arch.gguf", noArch)

	tests := []struct {
		name   string
		path   string
		ctx    int
		opts   NeedOptions
		want   Need
		detail string
	}{
		{
			// 2 layers × 2 kv heads × (16+16) × 8192 × 2 B = 2 MiB exactly.
			name: "llama f16 cache", path: llama, ctx: 8192,
			want:   Need{WeightsMiB: 1, KVCacheMiB: 2, OverheadMiB: 512},
			detail: `gguf llama "Tiny Llama": 8 tensors in 1 file(s), weights 1 MiB; kv cache 2 layers × 2 kv heads × (16+16) × 8192 tokens × 2 B = 2 MiB; overhead 512 MiB per gpu`,
		},
		{
			name: "llama q8_0 cache, own overhead", path: llama, ctx: 65536,
			opts: NeedOptions{KVBytes: 1.0625, OverheadMiB: 1024},
			want: Need{WeightsMiB: 1, KVCacheMiB: 9, OverheadMiB: 1024}, // 8.5 MiB rounded up
		},
		{name: "weights only", path: llama, ctx: 0, want: Need{WeightsMiB: 1, OverheadMiB: 512}},
		{
			// (8+0) heads × (128+64) × 4096 × 2 B = 12 MiB.
			name: "per-layer kv heads", path: hybridPath, ctx: 4096,
			want: Need{WeightsMiB: 1, KVCacheMiB: 12, OverheadMiB: 512},
		},
		{
			// 61 × (2×512 + 64) × 8192 × 2 B = 1037 MiB exactly.
			name: "multi-head latent attention", path: mlaPath, ctx: 8192,
			want: Need{WeightsMiB: 1, KVCacheMiB: 1037, OverheadMiB: 512},
		},
		{name: "no architecture, no context asked", path: noArchPath, ctx: 0, want: Need{WeightsMiB: 1, OverheadMiB: 512}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := EstimateNeed(tt.path, tt.ctx, tt.opts)
			if err != nil {
				t.Fatalf("EstimateNeed: %v", err)
			}
			if tt.detail != "" && got.Detail != tt.detail {
				t.Errorf("detail\n got %q\nwant %q", got.Detail, tt.detail)
			}
			got.Detail = ""
			if got != tt.want {
				t.Errorf("EstimateNeed = %+v, want %+v", got, tt.want)
			}
		})
	}

	t.Run("no architecture with a context", func(t *testing.T) {
		_, err := EstimateNeed(noArchPath, 4096, NeedOptions{})
		if !errors.Is(err, ErrUnsupportedModel) || !strings.Contains(err.Error(), "general.architecture") {
			t.Errorf("error %v, want ErrUnsupportedModel naming general.architecture", err)
		}
	})
}

func TestEstimateNeedSplitGGUF(t *testing.T) {
	dir := t.TempDir()
	first := tinyLlama()
	first.kvs = append(first.kvs, ggufKV{"split.no", uint32(0)}, ggufKV{"split.count", uint32(2)})
	second := ggufSpec{
		kvs:     []ggufKV{{"split.no", uint32(1)}, {"split.count", uint32(2)}},
		tensors: []ggufTensorSpec{{"output.weight", []uint64{64, 300}, 8}}, // Q8_0: 600 × 34 = 20400
	}
	for i, s := range []ggufSpec{first, second} {
		name := filepath.Join(dir, fmt.Sprintf("big-%05d-of-00002.gguf", i+1))
		if err := os.WriteFile(name, s.bytes(t), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Either shard names the whole model; the architecture comes from the first.
	for _, shard := range []string{"big-00001-of-00002.gguf", "big-00002-of-00002.gguf"} {
		t.Run(shard, func(t *testing.T) {
			need, err := EstimateNeed(filepath.Join(dir, shard), 8192, NeedOptions{})
			if err != nil {
				t.Fatalf("EstimateNeed: %v", err)
			}
			if want := ceilMiB(tinyLlamaWeights + 20400); need.WeightsMiB != want || need.KVCacheMiB != 2 {
				t.Errorf("need %+v, want weights %d MiB, kv 2 MiB", need, want)
			}
			if !strings.Contains(need.Detail, "9 tensors in 2 file(s)") {
				t.Errorf("detail %q", need.Detail)
			}
		})
	}
	t.Run("missing shard", func(t *testing.T) {
		os.Remove(filepath.Join(dir, "big-00002-of-00002.gguf"))
		_, err := EstimateNeed(filepath.Join(dir, "big-00001-of-00002.gguf"), 0, NeedOptions{})
		if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "big-00002-of-00002.gguf") {
			t.Errorf("error %v, want not-exist naming the second shard", err)
		}
	})
}

func TestParseGGUFErrors(t *testing.T) {
	u64 := func(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
	u32 := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	header := func(version uint32, tensors, kvs uint64) []byte {
		return append(append(append([]byte("GGUF"), u32(version)...), u64(tensors)...), u64(kvs)...)
	}
	oneTensor := func(dims []uint64, typ uint32, offset uint64) []byte {
		b := append(header(3, 1, 0), u64(1)...)
		b = append(b, 'w')
		b = append(b, u32(uint32(len(dims)))...)
		for _, d := range dims {
			b = append(b, u64(d)...)
		}
		return append(append(b, u32(typ)...), u64(offset)...)
	}
	withKV := func(typ uint32, body []byte) []byte {
		b := append(header(3, 0, 1), u64(1)...)
		b = append(b, 'k')
		return append(append(b, u32(typ)...), body...)
	}
	nested := func(depth int) []byte {
		var body []byte
		for range depth {
			body = append(body, append(u32(ggufArray), u64(1)...)...)
		}
		return withKV(ggufArray, append(body, append(u32(ggufUint8), u64(0)...)...))
	}
	short := tinyLlama()
	short.dataShort = 100

	tests := []struct {
		name string
		data []byte
		is   error
		want string
	}{
		{"empty", nil, ErrModelFile, "truncated"},
		{"not gguf", []byte("PK\x03\x04 a zip file"), ErrModelFile, "no GGUF magic"},
		{"version 1", header(1, 0, 0), ErrUnsupportedModel, "version 1"},
		{"version 4", header(4, 0, 0), ErrUnsupportedModel, "version 4"},
		{"big-endian", header(3<<24, 0, 0), ErrUnsupportedModel, "big-endian"},
		{"too many tensors", header(3, 1<<40, 0), ErrModelFile, "claims 1099511627776 tensors"},
		{"kv count with nothing behind it", header(3, 0, 1<<62), ErrModelFile, "truncated"},
		{"key claims 2^63 bytes", append(header(3, 0, 1), u64(1<<63)...), ErrModelFile, "longer than 65535"},
		{"tensor name claims 2^40 bytes", append(header(3, 1, 0), u64(1<<40)...), ErrModelFile, "tensor name of 1099511627776 bytes"},
		{"string value claims 2^63 bytes", withKV(ggufString, u64(1<<63)), ErrModelFile, "larger than 256 MiB"},
		{"array claims 2^62 u64s", withKV(ggufArray, append(u32(ggufUint64), u64(1<<62)...)), ErrModelFile, "larger than 256 MiB"},
		{"array claims 2^60 strings", withKV(ggufArray, append(u32(ggufString), u64(1<<60)...)), ErrModelFile, "truncated"},
		{"arrays nested too deep", nested(9), ErrModelFile, "nested deeper than 8"},
		{"unknown value type", withKV(13, nil), ErrModelFile, "value type 13"},
		{"unknown array element type", withKV(ggufArray, append(u32(99), u64(1)...)), ErrModelFile, "element type 99"},
		{"five dimensions", oneTensor([]uint64{1, 1, 1, 1, 1}, 0, 0), ErrModelFile, "5 dimensions"},
		{"zero dimensions", oneTensor(nil, 0, 0), ErrModelFile, "0 dimensions"},
		{"element count overflow", oneTensor([]uint64{1 << 32, 1 << 32}, 0, 0), ErrModelFile, "overflows"},
		{"removed type Q4_0_4_4", oneTensor([]uint64{32}, 31, 0), ErrUnsupportedModel, "ggml type 31"},
		{"unknown type", oneTensor([]uint64{32}, 1000, 0), ErrUnsupportedModel, "ggml type 1000"},
		{"partial block", oneTensor([]uint64{100}, 12, 0), ErrModelFile, "not a multiple of Q4_K's block of 256"},
		{"misaligned offset", oneTensor([]uint64{8}, 0, 3), ErrModelFile, "not aligned to 32"},
		{"data past the end", oneTensor([]uint64{1 << 20}, 0, 0), ErrModelFile, "truncated: tensor data ends"},
		{"offset near 2^64", oneTensor([]uint64{64}, 0, math.MaxUint64-31), ErrModelFile, "past 2^64"},
		{"short download", short.bytes(t), ErrModelFile, "truncated: tensor data ends"},
		{"bad alignment", ggufSpec{kvs: []ggufKV{{"general.alignment", uint32(24)}}}.bytes(t), ErrModelFile, "alignment 24"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseGGUF(bytes.NewReader(tt.data), int64(len(tt.data)))
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want %v containing %q", err, tt.is, tt.want)
			}
		})
	}
}

// smallGGUF has a value of every type and a few tensors in about 1 KB, for tests that parse
// it many times.
func smallGGUF() ggufSpec {
	return ggufSpec{
		kvs: []ggufKV{
			{"general.architecture", "qwen2"},
			{"qwen2.block_count", uint32(2)},
			{"qwen2.attention.head_count", int32(4)},
			{"qwen2.attention.head_count_kv", uint64(2)},
			{"qwen2.embedding_length", uint32(64)},
			{"qwen2.rope.freq_base", float32(1e6)},
			{"general.flag", true},
			{"tokenizer.ggml.tokens", []string{"a", "b", "c"}},
			{"tokenizer.ggml.token_type", []int32{1, 1, 3}},
			{"tokenizer.ggml.scores", []float32{0, -1, -2}},
			{"general.i8", ggufRaw{ggufInt8, []byte{0xff}}},
			{"general.u16", ggufRaw{ggufUint16, []byte{1, 2}}},
			{"general.i16", ggufRaw{ggufInt16, []byte{1, 0x80}}},
			{"general.i64", ggufRaw{ggufInt64, make([]byte, 8)}},
			{"general.f64", ggufRaw{ggufFloat64, make([]byte, 8)}},
			{"general.u8s", ggufRaw{ggufArray, append([]byte{byte(ggufUint8), 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0}, 7, 9)}},
		},
		tensors: []ggufTensorSpec{
			{"token_embd.weight", []uint64{64, 3}, 1},
			{"blk.0.attn_q.weight", []uint64{256, 1}, 12},
			{"output_norm.weight", []uint64{64}, 0},
		},
	}
}

// Every prefix of a valid file is an error, never a panic or a success.
func TestParseGGUFTruncated(t *testing.T) {
	data := smallGGUF().bytes(t)
	for n := range len(data) {
		if _, err := parseGGUF(bytes.NewReader(data[:n]), int64(n)); !errors.Is(err, ErrModelFile) {
			t.Fatalf("prefix of %d of %d bytes: error %v, want ErrModelFile", n, len(data), err)
		}
	}
}

func FuzzGGUF(f *testing.F) {
	f.Add(smallGGUF().bytes(f))
	f.Add(ggufSpec{version: 2, tensors: []ggufTensorSpec{{"w", []uint64{256, 4}, 12}}}.bytes(f))
	f.Add([]byte("GGUF\x03\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := parseGGUF(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if !errors.Is(err, ErrModelFile) && !errors.Is(err, ErrUnsupportedModel) {
				t.Fatalf("error %v is neither ErrModelFile nor ErrUnsupportedModel", err)
			}
			return
		}
		if a, err := ggufAttention(h, h.metaString("general.architecture")); err == nil {
			_ = a.elementsPerToken()
		}
	})
}
