package modelfile

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"regexp"
	"strconv"
)

// ggufHeader is what sizing needs from a GGUF file (spec: ggml docs/gguf.md, versions 2 and 3):
// the metadata that describes the architecture, and the bytes the tensors occupy, computed from
// each tensor's ggml type and shape rather than the file size, which also holds the header.
type ggufHeader struct {
	version     uint32
	meta        map[string]any // uint64, int64, float64, bool, short strings, small int arrays ([]int64)
	tensors     uint64
	weightBytes uint64
}

// Limits on what a GGUF header may claim. Real headers are a few MiB (a 256k-token vocabulary
// and its merges); these stop a corrupt or hostile file from making us read or keep more.
// Arrays are skipped, not stored, so a claimed length costs reading, never allocation.
const (
	maxGGUFHeaderBytes = 256 << 20 // everything before the tensor data
	maxGGUFKeyBytes    = 1<<16 - 1 // the spec's limit on a key
	maxGGUFKeptString  = 1 << 10   // longer string values (chat templates) are skipped
	maxGGUFKeptArray   = 1 << 12   // integer arrays up to this length are kept (per-layer head counts)
	maxGGUFArrayDepth  = 8
	maxGGUFTensors     = 1 << 20
	maxGGUFDims        = 4 // GGML_MAX_DIMS
	ggufDefaultAlign   = 32
)

// ggmlType is a ggml tensor type's block: blockSize elements stored in typeSize bytes.
type ggmlType struct {
	name      string
	blockSize uint64
	typeSize  uint64
}

// ggmlTypes are the tensor types a GGUF file may hold, by id (ggml.h enum ggml_type), with the
// block sizes of ggml-common.h's structs (written as gguf-py's GGML_QUANT_SIZES does, QK_K =
// 256; the test checks them against the numbers of ggml's static_asserts).
// Ids 4, 5 (Q4_2, Q4_3), 31-33 (Q4_0_4_4 …) and 36-38 (IQ4_NL_4_4 …) were removed from the
// format and are rejected like any unknown id.
var ggmlTypes = map[uint32]ggmlType{
	0:  {"F32", 1, 4},
	1:  {"F16", 1, 2},
	2:  {"Q4_0", 32, 2 + 16},
	3:  {"Q4_1", 32, 2 + 2 + 16},
	6:  {"Q5_0", 32, 2 + 4 + 16},
	7:  {"Q5_1", 32, 2 + 2 + 4 + 16},
	8:  {"Q8_0", 32, 2 + 32},
	9:  {"Q8_1", 32, 2 + 2 + 32}, // ggml_half d, s; gguf-py's 4 + 4 + 32 predates the halves
	10: {"Q2_K", 256, 2 + 2 + 256/16 + 256/4},
	11: {"Q3_K", 256, 2 + 256/4 + 256/8 + 12},
	12: {"Q4_K", 256, 2 + 2 + 256/2 + 12},
	13: {"Q5_K", 256, 2 + 2 + 256/2 + 256/8 + 12},
	14: {"Q6_K", 256, 2 + 256/2 + 256/4 + 256/16},
	15: {"Q8_K", 256, 4 + 256 + 256/8},
	16: {"IQ2_XXS", 256, 2 + 256/4},
	17: {"IQ2_XS", 256, 2 + 256/4 + 256/32},
	18: {"IQ3_XXS", 256, 2 + 256/4 + 256/8},
	19: {"IQ1_S", 256, 2 + 256/8 + 256/16},
	20: {"IQ4_NL", 32, 2 + 16},
	21: {"IQ3_S", 256, 2 + 256/4 + 256/8 + 256/32 + 4},
	22: {"IQ2_S", 256, 2 + 256/4 + 256/16},
	23: {"IQ4_XS", 256, 2 + 2 + 256/2 + 256/64},
	24: {"I8", 1, 1},
	25: {"I16", 1, 2},
	26: {"I32", 1, 4},
	27: {"I64", 1, 8},
	28: {"F64", 1, 8},
	29: {"IQ1_M", 256, 256/8 + 256/16 + 256/32},
	30: {"BF16", 1, 2},
	34: {"TQ1_0", 256, 2 + 4*13},
	35: {"TQ2_0", 256, 2 + 64},
	39: {"MXFP4", 32, 1 + 16},    // one E8M0 scale + 32 E2M1 nibbles
	40: {"NVFP4", 64, 4 + 32},    // four UE4M3 scales + 64 E2M1 nibbles
	41: {"Q1_0", 128, 2 + 128/8}, // ggml_half d + 1 bit per element
	42: {"Q2_0", 64, 2 + 64/4},   // ggml_half d + 2 bits per element
}

// GGUF metadata value types.
const (
	ggufUint8 uint32 = iota
	ggufInt8
	ggufUint16
	ggufInt16
	ggufUint32
	ggufInt32
	ggufFloat32
	ggufBool
	ggufString
	ggufArray
	ggufUint64
	ggufInt64
	ggufFloat64
)

// ggufScalarSize is the byte size of a fixed-size value type, 0 for string and array.
func ggufScalarSize(t uint32) uint64 {
	switch t {
	case ggufUint8, ggufInt8, ggufBool:
		return 1
	case ggufUint16, ggufInt16:
		return 2
	case ggufUint32, ggufInt32, ggufFloat32:
		return 4
	case ggufUint64, ggufInt64, ggufFloat64:
		return 8
	}
	return 0
}

var errGGUFHeaderTooLarge = fmt.Errorf("gguf header larger than %d MiB: %w", maxGGUFHeaderBytes>>20, ErrModelFile)

// ggufReader reads a header little-endian, counting bytes so that no claim in the file can
// make it read past maxGGUFHeaderBytes.
type ggufReader struct {
	r   *bufio.Reader
	n   uint64 // bytes read so far
	buf [8]byte
}

func (g *ggufReader) take(n uint64) error {
	if n > maxGGUFHeaderBytes || g.n+n > maxGGUFHeaderBytes {
		return errGGUFHeaderTooLarge
	}
	g.n += n
	return nil
}

func (g *ggufReader) full(p []byte) error {
	if err := g.take(uint64(len(p))); err != nil {
		return err
	}
	if _, err := io.ReadFull(g.r, p); err != nil {
		return g.eof(err)
	}
	return nil
}

func (g *ggufReader) eof(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("gguf truncated near byte %d: %w", g.n, ErrModelFile)
	}
	return fmt.Errorf("gguf read near byte %d: %w", g.n, err)
}

func (g *ggufReader) skip(n uint64) error {
	if err := g.take(n); err != nil {
		return err
	}
	if _, err := g.r.Discard(int(n)); err != nil {
		return g.eof(err)
	}
	return nil
}

func (g *ggufReader) u32() (uint32, error) {
	if err := g.full(g.buf[:4]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(g.buf[:4]), nil
}

func (g *ggufReader) u64() (uint64, error) {
	if err := g.full(g.buf[:8]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(g.buf[:8]), nil
}

// str reads a gguf_string; it keeps strings of at most keep bytes and skips longer ones
// (kept reports which), so a claimed length never becomes an allocation.
func (g *ggufReader) str(keep uint64) (s string, kept bool, err error) {
	n, err := g.u64()
	if err != nil {
		return "", false, err
	}
	if n > keep {
		return "", false, g.skip(n)
	}
	b := make([]byte, n)
	if err := g.full(b); err != nil {
		return "", false, err
	}
	return string(b), true, nil
}

// name reads a key or tensor name, refusing one over the spec's 65535 bytes before reading it.
func (g *ggufReader) name(what string) (string, error) {
	n, err := g.u64()
	if err != nil {
		return "", err
	}
	if n > maxGGUFKeyBytes {
		return "", fmt.Errorf("%s of %d bytes is longer than %d: %w", what, n, maxGGUFKeyBytes, ErrModelFile)
	}
	b := make([]byte, n)
	if err := g.full(b); err != nil {
		return "", err
	}
	return string(b), nil
}

// value reads one metadata value of type t; what is not worth keeping comes back nil.
func (g *ggufReader) value(t uint32, depth int) (any, error) {
	switch t {
	case ggufString:
		s, kept, err := g.str(maxGGUFKeptString)
		if err != nil || !kept {
			return nil, err
		}
		return s, nil
	case ggufArray:
		return g.array(depth + 1)
	}
	size := ggufScalarSize(t)
	if size == 0 {
		return nil, fmt.Errorf("gguf metadata value type %d is unknown: %w", t, ErrModelFile)
	}
	b := g.buf[:size]
	if err := g.full(b); err != nil {
		return nil, err
	}
	switch t {
	case ggufUint8:
		return uint64(b[0]), nil
	case ggufInt8:
		return int64(int8(b[0])), nil
	case ggufUint16:
		return uint64(binary.LittleEndian.Uint16(b)), nil
	case ggufInt16:
		return int64(int16(binary.LittleEndian.Uint16(b))), nil
	case ggufUint32:
		return uint64(binary.LittleEndian.Uint32(b)), nil
	case ggufInt32:
		return int64(int32(binary.LittleEndian.Uint32(b))), nil
	case ggufFloat32:
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(b))), nil
	case ggufBool:
		return b[0] != 0, nil
	case ggufUint64:
		return binary.LittleEndian.Uint64(b), nil
	case ggufInt64:
		return int64(binary.LittleEndian.Uint64(b)), nil
	default: // ggufFloat64
		return math.Float64frombits(binary.LittleEndian.Uint64(b)), nil
	}
}

// array keeps short integer arrays (per-layer head counts) and skips the rest: a vocabulary
// of 256k strings costs reading it, nothing more.
func (g *ggufReader) array(depth int) (any, error) {
	if depth > maxGGUFArrayDepth {
		return nil, fmt.Errorf("gguf arrays nested deeper than %d: %w", maxGGUFArrayDepth, ErrModelFile)
	}
	t, err := g.u32()
	if err != nil {
		return nil, err
	}
	n, err := g.u64()
	if err != nil {
		return nil, err
	}
	if size := ggufScalarSize(t); size > 0 {
		hi, total := bits.Mul64(n, size)
		if hi != 0 {
			return nil, errGGUFHeaderTooLarge
		}
		if n > maxGGUFKeptArray || t == ggufFloat32 || t == ggufFloat64 || t == ggufBool {
			return nil, g.skip(total)
		}
		out := make([]int64, 0, n)
		for range n {
			v, err := g.value(t, depth)
			if err != nil {
				return nil, err
			}
			switch v := v.(type) {
			case uint64:
				out = append(out, int64(min(v, math.MaxInt64)))
			case int64:
				out = append(out, v)
			}
		}
		return out, nil
	}
	if t != ggufString && t != ggufArray {
		return nil, fmt.Errorf("gguf array element type %d is unknown: %w", t, ErrModelFile)
	}
	// Every element reads at least 8 bytes, so the header limit also bounds this loop.
	for range n {
		if _, err := g.value(t, depth); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// parseGGUF reads a GGUF header from r. size is the file's length: tensor data that would end
// past it means a truncated download, caught here rather than when a server fails to load.
func parseGGUF(r io.Reader, size int64) (ggufHeader, error) {
	g := &ggufReader{r: bufio.NewReaderSize(r, 1<<16)}
	var magic [4]byte
	if err := g.full(magic[:]); err != nil {
		return ggufHeader{}, err
	}
	if string(magic[:]) != "GGUF" {
		return ggufHeader{}, fmt.Errorf("no GGUF magic (found %q): %w", magic[:], ErrModelFile)
	}
	version, err := g.u32()
	if err != nil {
		return ggufHeader{}, err
	}
	switch {
	case version == 2 || version == 3:
	case version == 1:
		return ggufHeader{}, fmt.Errorf("GGUF version 1 (32-bit counts, 2023) is not supported, re-convert the model: %w", ErrUnsupportedModel)
	case version>>16 != 0 && bits.ReverseBytes32(version) <= 3:
		return ggufHeader{}, fmt.Errorf("big-endian GGUF is not supported: %w", ErrUnsupportedModel)
	default:
		return ggufHeader{}, fmt.Errorf("GGUF version %d is not supported (want 2 or 3): %w", version, ErrUnsupportedModel)
	}
	h := ggufHeader{version: version, meta: map[string]any{}}
	if h.tensors, err = g.u64(); err != nil {
		return ggufHeader{}, err
	}
	if h.tensors > maxGGUFTensors {
		return ggufHeader{}, fmt.Errorf("gguf claims %d tensors, more than %d: %w", h.tensors, maxGGUFTensors, ErrModelFile)
	}
	kvs, err := g.u64()
	if err != nil {
		return ggufHeader{}, err
	}
	// No allocation follows from kvs: each entry is read, and the header limit bounds them.
	for i := uint64(0); i < kvs; i++ {
		key, err := g.name("metadata key")
		if err != nil {
			return ggufHeader{}, fmt.Errorf("gguf metadata %d: %w", i, err)
		}
		t, err := g.u32()
		if err != nil {
			return ggufHeader{}, err
		}
		v, err := g.value(t, 0)
		if err != nil {
			return ggufHeader{}, fmt.Errorf("gguf metadata %q: %w", key, err)
		}
		if v != nil {
			h.meta[key] = v
		}
	}

	align := uint64(ggufDefaultAlign)
	if a, ok := h.metaInt("general.alignment"); ok {
		if a <= 0 || a&(a-1) != 0 || a > 1<<20 {
			return ggufHeader{}, fmt.Errorf("gguf general.alignment %d is not a power of two up to 1 MiB: %w", a, ErrModelFile)
		}
		align = uint64(a)
	}

	var dataEnd uint64 // bytes of tensor data the tensors need, from the data section's start
	for i := uint64(0); i < h.tensors; i++ {
		end, bytes, err := g.tensorInfo(align)
		if err != nil {
			return ggufHeader{}, fmt.Errorf("gguf tensor %d: %w", i, err)
		}
		var carry uint64
		if h.weightBytes, carry = bits.Add64(h.weightBytes, bytes, 0); carry != 0 {
			return ggufHeader{}, fmt.Errorf("gguf tensor %d: total size overflows: %w", i, ErrModelFile)
		}
		dataEnd = max(dataEnd, end)
	}

	if size >= 0 {
		dataStart := (g.n + align - 1) / align * align
		if dataEnd > math.MaxUint64-dataStart || dataStart+dataEnd > uint64(size) {
			return ggufHeader{}, fmt.Errorf("gguf truncated: tensor data ends at byte %d, file has %d: %w",
				dataStart+dataEnd, size, ErrModelFile)
		}
	}
	return h, nil
}

// tensorInfo reads one tensor's name, shape, type and offset, and returns where its data ends
// and its size in bytes.
func (g *ggufReader) tensorInfo(align uint64) (end, size uint64, err error) {
	name, err := g.name("tensor name")
	if err != nil {
		return 0, 0, err
	}
	nDims, err := g.u32()
	if err != nil {
		return 0, 0, err
	}
	if nDims == 0 || nDims > maxGGUFDims {
		return 0, 0, fmt.Errorf("%q has %d dimensions (want 1 to %d): %w", name, nDims, maxGGUFDims, ErrModelFile)
	}
	elements := uint64(1)
	var first uint64
	for d := range nDims {
		dim, err := g.u64()
		if err != nil {
			return 0, 0, err
		}
		if dim > math.MaxInt64 {
			return 0, 0, fmt.Errorf("%q dimension %d is %d: %w", name, d, dim, ErrModelFile)
		}
		if d == 0 {
			first = dim
		}
		var hi uint64
		if hi, elements = bits.Mul64(elements, dim); hi != 0 || elements > math.MaxInt64 {
			return 0, 0, fmt.Errorf("%q element count overflows: %w", name, ErrModelFile)
		}
	}
	typeID, err := g.u32()
	if err != nil {
		return 0, 0, err
	}
	offset, err := g.u64()
	if err != nil {
		return 0, 0, err
	}
	typ, ok := ggmlTypes[typeID]
	if !ok {
		return 0, 0, fmt.Errorf("%q has ggml type %d, which this version of shoal cannot size: %w", name, typeID, ErrUnsupportedModel)
	}
	if first%typ.blockSize != 0 {
		return 0, 0, fmt.Errorf("%q: first dimension %d is not a multiple of %s's block of %d: %w", name, first, typ.name, typ.blockSize, ErrModelFile)
	}
	hi, size := bits.Mul64(elements/typ.blockSize, typ.typeSize)
	if hi != 0 {
		return 0, 0, fmt.Errorf("%q size overflows: %w", name, ErrModelFile)
	}
	if offset%align != 0 {
		return 0, 0, fmt.Errorf("%q offset %d is not aligned to %d: %w", name, offset, align, ErrModelFile)
	}
	end, carry := bits.Add64(offset, size, 0)
	if carry != 0 {
		return 0, 0, fmt.Errorf("%q ends past 2^64: %w", name, ErrModelFile)
	}
	return end, size, nil
}

// metaInt reads an integer metadata value of any integer type.
func (h ggufHeader) metaInt(key string) (int64, bool) {
	switch v := h.meta[key].(type) {
	case uint64:
		if v <= math.MaxInt64 {
			return int64(v), true
		}
	case int64:
		return v, true
	}
	return 0, false
}

// metaInts reads an integer or a per-layer integer array.
func (h ggufHeader) metaInts(key string) ([]int64, bool) {
	if v, ok := h.meta[key].([]int64); ok {
		return v, true
	}
	if v, ok := h.metaInt(key); ok {
		return []int64{v}, true
	}
	return nil, false
}

func (h ggufHeader) metaString(key string) string {
	s, _ := h.meta[key].(string)
	return s
}

// ggufSplitName matches the shards llama.cpp's gguf-split writes: name-00001-of-00003.gguf.
var ggufSplitName = regexp.MustCompile(`^(.*)-(\d{5})-of-(\d{5})\.gguf$`)

// readGGUFModel sizes a GGUF model from one file, or from every shard of a split model when
// path names any one of them. The architecture comes from the first shard, which is where
// gguf-split writes the metadata.
func readGGUFModel(path string) (modelShape, error) {
	paths := []string{path}
	if m := ggufSplitName.FindStringSubmatch(path); m != nil {
		count, _ := strconv.Atoi(m[3])
		if count < 1 || count > 9999 {
			return modelShape{}, fmt.Errorf("%s: split count %d: %w", path, count, ErrModelFile)
		}
		paths = paths[:0]
		for i := 1; i <= count; i++ {
			paths = append(paths, fmt.Sprintf("%s-%05d-of-%s.gguf", m[1], i, m[3]))
		}
	}
	shape := modelShape{format: "gguf", files: len(paths)}
	var first ggufHeader
	for i, p := range paths {
		h, err := readModelFile(p, parseGGUF)
		if err != nil {
			return modelShape{}, err
		}
		if i == 0 {
			first = h
		}
		shape.tensors += h.tensors
		var carry uint64
		if shape.weightBytes, carry = bits.Add64(shape.weightBytes, h.weightBytes, 0); carry != 0 {
			return modelShape{}, fmt.Errorf("%s: total size overflows: %w", p, ErrModelFile)
		}
	}
	shape.arch = first.metaString("general.architecture")
	shape.name = first.metaString("general.name")
	shape.attention, shape.attentionErr = ggufAttention(first, shape.arch)
	return shape, nil
}

// ggufAttention reads the KV cache's shape from llama.cpp's metadata keys; the error says
// which key is missing, for when a context length asks for the cache.
func ggufAttention(h ggufHeader, arch string) (attention, error) {
	if arch == "" {
		return attention{}, fmt.Errorf("gguf has no general.architecture: %w", ErrUnsupportedModel)
	}
	key := func(k string) string { return arch + "." + k }
	layers, ok := h.metaInt(key("block_count"))
	if !ok || layers <= 0 {
		return attention{}, fmt.Errorf("gguf has no %s: %w", key("block_count"), ErrUnsupportedModel)
	}
	heads, ok := h.metaInts(key("attention.head_count"))
	if !ok {
		return attention{}, fmt.Errorf("gguf has no %s: %w", key("attention.head_count"), ErrUnsupportedModel)
	}
	kvHeads, ok := h.metaInts(key("attention.head_count_kv"))
	if !ok {
		kvHeads = heads // no grouped-query attention: every head has its own K and V
	}
	a := attention{layers: layers, kvHeads: kvHeads}
	a.keyLen, _ = h.metaInt(key("attention.key_length"))
	a.valueLen, _ = h.metaInt(key("attention.value_length"))
	if a.keyLen == 0 || a.valueLen == 0 {
		// llama.cpp's default: a head is the embedding split evenly across the query heads.
		embd, _ := h.metaInt(key("embedding_length"))
		var nHead int64
		for _, n := range heads {
			if n > 0 {
				nHead = n
				break
			}
		}
		if embd <= 0 || nHead <= 0 {
			return attention{}, fmt.Errorf("gguf has no %s and no %s with head_count to derive it: %w",
				key("attention.key_length"), key("embedding_length"), ErrUnsupportedModel)
		}
		if a.keyLen == 0 {
			a.keyLen = embd / nHead
		}
		if a.valueLen == 0 {
			a.valueLen = embd / nHead
		}
	}
	a.latentRank, _ = h.metaInt(key("attention.kv_lora_rank"))
	a.ropeDims, _ = h.metaInt(key("rope.dimension_count"))
	if err := a.check(); err != nil {
		return attention{}, fmt.Errorf("gguf %s: %w", arch, err)
	}
	return a, nil
}
