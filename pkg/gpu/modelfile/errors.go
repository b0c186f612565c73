// Package modelfile reads what sizing needs from a model's files — GGUF headers, safetensors
// headers and their config.json — and estimates the VRAM a variant needs: its weights as
// stored, the KV cache for a context length, and an overhead on every GPU it spans. It reads
// headers only, never the weights, and bounds what a corrupt or hostile file can make it read.
package modelfile

import "errors"

// Sentinels of reading a model file and estimating its need; check them with errors.Is.
var (
	// ErrModelFile means a model file is truncated, corrupt, or claims sizes past our limits.
	ErrModelFile = errors.New("unreadable model file")
	// ErrUnsupportedModel means a well-formed model file that cannot be sized: an unknown
	// tensor type, or no architecture metadata for the KV cache.
	ErrUnsupportedModel = errors.New("unsupported model")
)
