package modelfile

import (
	"fmt"
	"io"
	"math"
	"os"
	"strings"

	"github.com/shoal-run/shoal/pkg/gpu"
)

// EstimateNeed is the VRAM a model file needs to serve ctxLen tokens of context: its weights
// as stored, the KV cache for the context, and an overhead paid on every GPU it spans. path is
// a GGUF file (any shard of a split GGUF), a .safetensors file (any shard), or a directory
// of .safetensors shards with config.json beside them. ctxLen 0 sizes the weights alone.
//
// The KV cache is 2 (K and V) × layers × KV heads × head dim × ctxLen × opts.KVBytes, which
// overestimates for sliding-window layers (Gemma, gpt-oss): too much is a wait, too little an
// out-of-memory crash. It is the cache of one sequence of ctxLen tokens; a server that holds
// several sequences at once splits that budget or needs a larger ctxLen.
func EstimateNeed(path string, ctxLen int, opts NeedOptions) (Need, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return Need{}, fmt.Errorf("estimate need of %s: %w", path, err)
	}
	if ctxLen < 0 {
		return Need{}, fmt.Errorf("estimate need of %s: negative context length %d", path, ctxLen)
	}
	shape, err := readModelShape(path)
	if err != nil {
		return Need{}, fmt.Errorf("estimate need of %s: %w", path, err)
	}
	need, err := needOf(shape, ctxLen, opts)
	if err != nil {
		return Need{}, fmt.Errorf("estimate need of %s: %w", path, err)
	}
	return need, nil
}

// NeedOptions tune EstimateNeed; the zero value is the common case.
type NeedOptions struct {
	// KVBytes is the size of one cached K or V element: 2 for f16/bf16 (the default), 1 for
	// fp8 or roughly q8_0 (1.0625 exactly), 0.5625 for q4_0.
	KVBytes float64
	// OverheadMiB is paid on every GPU the variant spans; 0 means DefaultOverheadMiB.
	OverheadMiB gpu.MiB
}

// DefaultOverheadMiB is the memory a model server takes on each GPU beyond weights and KV
// cache: the CUDA context (about 300-500 MiB on recent drivers, more with cuBLAS workspaces)
// plus activation and compute buffers for a modest batch. Ollama budgets 457 MiB per CUDA GPU
// as the floor of its estimates; rounded up to 512 MiB. Engines that size their own buffers
// from a larger batch (vLLM's CUDA graphs) want a larger value in the run config.
const DefaultOverheadMiB gpu.MiB = 512

// defaultKVBytes is f16, what llama.cpp and vLLM cache by default.
const defaultKVBytes = 2

func (o NeedOptions) withDefaults() (NeedOptions, error) {
	if o.KVBytes < 0 || math.IsNaN(o.KVBytes) || math.IsInf(o.KVBytes, 0) || o.KVBytes > 8 {
		return o, fmt.Errorf("kv bytes per element %v is outside 0..8", o.KVBytes)
	}
	if o.OverheadMiB < 0 {
		return o, fmt.Errorf("negative overhead %d MiB", o.OverheadMiB)
	}
	if o.KVBytes == 0 {
		o.KVBytes = defaultKVBytes
	}
	if o.OverheadMiB == 0 {
		o.OverheadMiB = DefaultOverheadMiB
	}
	return o, nil
}

// Need is the VRAM of one way to serve a model.
type Need struct {
	WeightsMiB  gpu.MiB `json:"weights_mib"`
	KVCacheMiB  gpu.MiB `json:"kv_cache_mib"`
	OverheadMiB gpu.MiB `json:"overhead_mib"` // on every GPU the variant spans
	// Detail says how the numbers came about, for logs and `shoal status`.
	Detail string `json:"detail,omitempty"`
}

// Variant is the need as placement takes it: weights and KV cache split across the group,
// the overhead paid on each GPU of it.
func (n Need) Variant(name string) gpu.Variant {
	return gpu.Variant{Name: name, NeedMiB: n.WeightsMiB + n.KVCacheMiB, PerGPUOverheadMiB: n.OverheadMiB}
}

// modelShape is what a model file says about its size, whatever its format.
type modelShape struct {
	format      string // "gguf" or "safetensors"
	arch        string
	name        string
	files       int
	tensors     uint64
	weightBytes uint64
	// attention is the KV cache's shape; attentionErr says why it is missing (no config.json,
	// no block_count), which matters only when a context is asked for.
	attention    attention
	attentionErr error
}

// attention is the shape of a model's KV cache.
type attention struct {
	layers   int64
	kvHeads  []int64 // one count for every layer, or one per layer (0 for layers without attention)
	keyLen   int64   // elements of one head's key
	valueLen int64   // elements of one head's value
	// latentRank > 0 is multi-head latent attention (DeepSeek V2/V3): each layer caches a
	// compressed latent of latentRank plus ropeDims rotary elements as its key, and the latent
	// again as its value (llama.cpp's MLA cache; vLLM keeps only the key part, so this is
	// the larger of the two).
	latentRank int64
	ropeDims   int64
}

// Plausibility limits on a cache's shape: well past any model published, low enough that
// products cannot overflow.
const (
	maxLayers  = 1 << 16
	maxKVHeads = 1 << 16
	maxHeadDim = 1 << 16
)

func (a attention) check() error {
	switch {
	case a.layers <= 0 || a.layers > maxLayers:
		return fmt.Errorf("%d layers is outside 1..%d: %w", a.layers, maxLayers, ErrUnsupportedModel)
	case len(a.kvHeads) != 1 && int64(len(a.kvHeads)) != a.layers:
		return fmt.Errorf("%d per-layer kv head counts for %d layers: %w", len(a.kvHeads), a.layers, ErrUnsupportedModel)
	case a.keyLen <= 0 || a.keyLen > maxHeadDim || a.valueLen <= 0 || a.valueLen > maxHeadDim:
		return fmt.Errorf("head dims %d/%d are outside 1..%d: %w", a.keyLen, a.valueLen, maxHeadDim, ErrUnsupportedModel)
	case a.latentRank < 0 || a.latentRank > maxHeadDim || a.ropeDims < 0 || a.ropeDims > maxHeadDim:
		return fmt.Errorf("latent rank %d / rope dims %d are outside 0..%d: %w", a.latentRank, a.ropeDims, maxHeadDim, ErrUnsupportedModel)
	}
	for _, h := range a.kvHeads {
		if h < 0 || h > maxKVHeads {
			return fmt.Errorf("%d kv heads is outside 0..%d: %w", h, maxKVHeads, ErrUnsupportedModel)
		}
	}
	return nil
}

// elementsPerToken is how many K and V elements one token adds to the cache, all layers.
func (a attention) elementsPerToken() int64 {
	if a.latentRank > 0 {
		return a.layers * (2*a.latentRank + a.ropeDims)
	}
	var heads int64
	if len(a.kvHeads) == 1 {
		heads = a.layers * a.kvHeads[0]
	} else {
		for _, h := range a.kvHeads {
			heads += h
		}
	}
	return heads * (a.keyLen + a.valueLen)
}

func (a attention) String() string {
	if a.latentRank > 0 {
		return fmt.Sprintf("%d layers × (2×%d latent + %d rope)", a.layers, a.latentRank, a.ropeDims)
	}
	heads := fmt.Sprint(a.kvHeads[0])
	if len(a.kvHeads) > 1 {
		heads = "per-layer"
	}
	return fmt.Sprintf("%d layers × %s kv heads × (%d+%d)", a.layers, heads, a.keyLen, a.valueLen)
}

// needOf turns a model's shape into its need; pure, so the arithmetic is tested on tables of
// known models without files.
func needOf(shape modelShape, ctxLen int, opts NeedOptions) (Need, error) {
	need := Need{WeightsMiB: ceilMiB(float64(shape.weightBytes)), OverheadMiB: opts.OverheadMiB}
	var detail strings.Builder
	fmt.Fprintf(&detail, "%s", shape.format)
	if shape.arch != "" {
		fmt.Fprintf(&detail, " %s", shape.arch)
	}
	if shape.name != "" {
		fmt.Fprintf(&detail, " %q", shape.name)
	}
	fmt.Fprintf(&detail, ": %d tensors in %d file(s), weights %d MiB", shape.tensors, shape.files, need.WeightsMiB)
	if ctxLen > 0 {
		if shape.attentionErr != nil {
			return Need{}, fmt.Errorf("kv cache for %d tokens: %w", ctxLen, shape.attentionErr)
		}
		bytes := float64(shape.attention.elementsPerToken()) * float64(ctxLen) * opts.KVBytes
		need.KVCacheMiB = ceilMiB(bytes)
		fmt.Fprintf(&detail, "; kv cache %s × %d tokens × %g B = %d MiB", shape.attention, ctxLen, opts.KVBytes, need.KVCacheMiB)
	}
	fmt.Fprintf(&detail, "; overhead %d MiB per gpu", need.OverheadMiB)
	need.Detail = detail.String()
	return need, nil
}

const bytesPerMiB = 1 << 20

// ceilMiB rounds bytes up to whole MiB: a need rounded down is an allocation that fails.
func ceilMiB(bytes float64) gpu.MiB {
	return gpu.MiB(math.Ceil(bytes / bytesPerMiB))
}

// readModelShape tells the formats apart by content where it can: GGUF by its magic, safetensors
// by name (its header has no magic) or as a directory of shards.
func readModelShape(path string) (modelShape, error) {
	info, err := os.Stat(path)
	if err != nil {
		return modelShape{}, err
	}
	if info.IsDir() {
		return readSafetensorsModel(path)
	}
	f, err := os.Open(path)
	if err != nil {
		return modelShape{}, err
	}
	var magic [4]byte
	_, err = io.ReadFull(f, magic[:])
	f.Close()
	switch {
	case err == nil && string(magic[:]) == "GGUF":
		return readGGUFModel(path)
	case strings.HasSuffix(path, ".safetensors"):
		return readSafetensorsModel(path)
	default:
		return modelShape{}, fmt.Errorf("neither GGUF (no magic) nor .safetensors: %w", ErrUnsupportedModel)
	}
}
