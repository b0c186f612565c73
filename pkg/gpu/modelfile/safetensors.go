package modelfile

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
)

// safetensorsFile is what sizing needs from one .safetensors file: an 8-byte little-endian
// header length, a JSON header mapping each tensor to its dtype, shape and byte range, then
// the data.
type safetensorsFile struct {
	tensors uint64
	bytes   uint64
}

// Limits on a safetensors header. The format's reference reader refuses headers over 100 MB;
// ours stops at 64 MiB (real headers are well under 10 MiB even for large mixtures of
// experts), and a single tensor's entry over 4 KiB (a shape of millions of dimensions) is
// refused before it is decoded, so a hostile header costs at most a few times its size.
const (
	maxSafetensorsHeader = 64 << 20
	maxSafetensorsEntry  = 4 << 10
	maxConfigBytes       = 4 << 20
)

// safetensorsBits is each dtype's size in bits (F4 and F6 pack below a byte).
var safetensorsBits = map[string]uint64{
	"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
	"I16": 16, "U16": 16, "F16": 16, "BF16": 16,
	"I32": 32, "U32": 32, "F32": 32,
	"I64": 64, "U64": 64, "F64": 64, "C64": 64,
	"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}

// parseSafetensors reads one file's header from r; size is the file's length, which every
// tensor's byte range must lie within.
func parseSafetensors(r io.Reader, size int64) (safetensorsFile, error) {
	var lenBuf [8]byte
	if _, err := io.ReadFull(r, lenBuf[:]); err != nil {
		return safetensorsFile{}, fmt.Errorf("safetensors header length: truncated: %w", ErrModelFile)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > maxSafetensorsHeader {
		return safetensorsFile{}, fmt.Errorf("safetensors header of %d bytes is over %d MiB: %w", n, maxSafetensorsHeader>>20, ErrModelFile)
	}
	if size < 8 || n > uint64(size)-8 {
		return safetensorsFile{}, fmt.Errorf("safetensors header of %d bytes is longer than the file (%d bytes): %w", n, size, ErrModelFile)
	}
	header := make([]byte, n) // bounded by both the limit and the file's real length
	if _, err := io.ReadFull(r, header); err != nil {
		return safetensorsFile{}, fmt.Errorf("safetensors header: truncated: %w", ErrModelFile)
	}
	var entries map[string]json.RawMessage
	if err := json.Unmarshal(header, &entries); err != nil {
		return safetensorsFile{}, fmt.Errorf("safetensors header is not a JSON object: %v: %w", err, ErrModelFile)
	}
	dataLen := uint64(size) - 8 - n
	var out safetensorsFile
	for name, raw := range entries {
		if name == "__metadata__" {
			continue
		}
		bytes, err := safetensorsTensor(name, raw, dataLen)
		if err != nil {
			return safetensorsFile{}, err
		}
		out.tensors++
		var carry uint64
		if out.bytes, carry = bits.Add64(out.bytes, bytes, 0); carry != 0 {
			return safetensorsFile{}, fmt.Errorf("safetensors total size overflows: %w", ErrModelFile)
		}
	}
	return out, nil
}

// safetensorsTensor checks one tensor's entry and returns its size: the byte range the file
// gives it, which must lie in the data and, for a known dtype, match dtype × shape. A dtype
// newer than this table is sized by its range alone, which is exact either way.
func safetensorsTensor(name string, raw json.RawMessage, dataLen uint64) (uint64, error) {
	if len(raw) > maxSafetensorsEntry {
		return 0, fmt.Errorf("safetensors tensor %q: entry of %d bytes is over %d: %w", name, len(raw), maxSafetensorsEntry, ErrModelFile)
	}
	var t struct {
		DType   string   `json:"dtype"`
		Shape   []uint64 `json:"shape"`
		Offsets []uint64 `json:"data_offsets"`
	}
	if err := json.Unmarshal(raw, &t); err != nil {
		return 0, fmt.Errorf("safetensors tensor %q: %v: %w", name, err, ErrModelFile)
	}
	if len(t.Offsets) != 2 || t.Offsets[0] > t.Offsets[1] || t.Offsets[1] > dataLen {
		return 0, fmt.Errorf("safetensors tensor %q: data_offsets %v outside the %d bytes of data: %w", name, t.Offsets, dataLen, ErrModelFile)
	}
	size := t.Offsets[1] - t.Offsets[0]
	bitsPer, known := safetensorsBits[t.DType]
	if !known {
		return size, nil
	}
	elements := uint64(1)
	for _, d := range t.Shape {
		hi, lo := bits.Mul64(elements, d)
		if hi != 0 {
			return 0, fmt.Errorf("safetensors tensor %q: shape %v overflows: %w", name, t.Shape, ErrModelFile)
		}
		elements = lo
	}
	hi, total := bits.Mul64(elements, bitsPer)
	if hi != 0 || total%8 != 0 || total/8 != size {
		return 0, fmt.Errorf("safetensors tensor %q: %s %v needs %d bits, data_offsets give %d bytes: %w", name, t.DType, t.Shape, total, size, ErrModelFile)
	}
	return size, nil
}

// safetensorsShardName matches Hugging Face shards: model-00001-of-00004.safetensors.
var safetensorsShardName = regexp.MustCompile(`^(.*)-(\d{5})-of-(\d{5})\.safetensors$`)

// readSafetensorsModel sizes a model from a directory of .safetensors files, one file, or any
// shard of a sharded one, with config.json from the same directory for the KV cache.
func readSafetensorsModel(path string) (modelShape, error) {
	info, err := os.Stat(path)
	if err != nil {
		return modelShape{}, err
	}
	dir := filepath.Dir(path)
	var paths []string
	switch m := safetensorsShardName.FindStringSubmatch(path); {
	case info.IsDir():
		dir = path
		if paths, err = filepath.Glob(filepath.Join(path, "*.safetensors")); err != nil {
			return modelShape{}, err
		}
		if len(paths) == 0 {
			return modelShape{}, fmt.Errorf("no *.safetensors files in %s: %w", path, ErrUnsupportedModel)
		}
		sort.Strings(paths)
	case m != nil:
		count, _ := strconv.Atoi(m[3])
		if count < 1 {
			return modelShape{}, fmt.Errorf("%s: shard count %d: %w", path, count, ErrModelFile)
		}
		for i := 1; i <= count; i++ {
			paths = append(paths, fmt.Sprintf("%s-%05d-of-%s.safetensors", m[1], i, m[3]))
		}
	default:
		paths = []string{path}
	}

	shape := modelShape{format: "safetensors", files: len(paths)}
	for _, p := range paths {
		st, err := readModelFile(p, parseSafetensors)
		if err != nil {
			return modelShape{}, err
		}
		shape.tensors += st.tensors
		var carry uint64
		if shape.weightBytes, carry = bits.Add64(shape.weightBytes, st.bytes, 0); carry != 0 {
			return modelShape{}, fmt.Errorf("%s: total size overflows: %w", p, ErrModelFile)
		}
	}
	shape.arch, shape.attention, shape.attentionErr = readHFConfig(filepath.Join(dir, "config.json"))
	return shape, nil
}

// readModelFile opens a model file and hands it, with its size, to parse; errors name the file.
func readModelFile[T any](path string, parse func(io.Reader, int64) (T, error)) (T, error) {
	var zero T
	f, err := os.Open(path)
	if err != nil {
		return zero, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return zero, err
	}
	v, err := parse(f, info.Size())
	if err != nil {
		return zero, fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return v, nil
}

// readHFConfig reads a Hugging Face config.json for the KV cache's shape. A missing file is
// not an error until a context length needs it.
func readHFConfig(path string) (arch string, a attention, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", attention{}, fmt.Errorf("no config.json beside the weights for the kv cache's shape: %w", ErrUnsupportedModel)
	}
	if err != nil {
		return "", attention{}, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return "", attention{}, err
	}
	if len(data) > maxConfigBytes {
		return "", attention{}, fmt.Errorf("config.json larger than %d MiB: %w", maxConfigBytes>>20, ErrModelFile)
	}
	return parseHFConfig(data)
}

// hfConfig is a config.json's top level or its text_config; keys vary by model family, so
// fields are read by name with the common aliases.
type hfConfig map[string]json.RawMessage

func (c hfConfig) int(keys ...string) int64 {
	for _, k := range keys {
		var v float64 // some configs write 4096.0
		if raw, ok := c[k]; ok && json.Unmarshal(raw, &v) == nil && v > 0 && v <= math.MaxInt32 && v == math.Trunc(v) {
			return int64(v)
		}
	}
	return 0
}

// parseHFConfig reads the attention shape from a config.json; multimodal models (Gemma 3,
// LLaVA, InternVL) keep it under text_config or llm_config.
func parseHFConfig(data []byte) (arch string, a attention, err error) {
	var top hfConfig
	if err := json.Unmarshal(data, &top); err != nil {
		return "", attention{}, fmt.Errorf("config.json: %v: %w", err, ErrModelFile)
	}
	var modelType string
	_ = json.Unmarshal(top["model_type"], &modelType)
	c := top
	if c.int("num_hidden_layers", "n_layer", "num_layers") == 0 {
		for _, sub := range []string{"text_config", "llm_config"} {
			var nested hfConfig
			if json.Unmarshal(top[sub], &nested) == nil && nested.int("num_hidden_layers", "n_layer", "num_layers") > 0 {
				c = nested
				break
			}
		}
	}
	a.layers = c.int("num_hidden_layers", "n_layer", "num_layers")
	if a.layers == 0 {
		return modelType, attention{}, fmt.Errorf("config.json has no num_hidden_layers: %w", ErrUnsupportedModel)
	}
	heads := c.int("num_attention_heads", "n_head")
	kvHeads := c.int("num_key_value_heads", "num_kv_heads", "multi_query_group_num")
	if kvHeads == 0 {
		kvHeads = heads // no grouped-query attention: every head has its own K and V
	}
	if kvHeads == 0 {
		return modelType, attention{}, fmt.Errorf("config.json has neither num_key_value_heads nor num_attention_heads: %w", ErrUnsupportedModel)
	}
	a.kvHeads = []int64{kvHeads}
	headDim := c.int("head_dim")
	if headDim == 0 {
		hidden := c.int("hidden_size", "n_embd", "d_model")
		if hidden == 0 || heads == 0 {
			return modelType, attention{}, fmt.Errorf("config.json has no head_dim and no hidden_size with num_attention_heads to derive it: %w", ErrUnsupportedModel)
		}
		headDim = hidden / heads
	}
	a.keyLen, a.valueLen = headDim, headDim
	a.latentRank = c.int("kv_lora_rank")
	a.ropeDims = c.int("qk_rope_head_dim")
	if err := a.check(); err != nil {
		return modelType, attention{}, fmt.Errorf("config.json: %w", err)
	}
	return modelType, a, nil
}
