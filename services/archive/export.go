package archive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runs"
	"github.com/shoal-run/shoal/services/archive/internal/population"
)

// ExportCheckpoint asks the archive that owns run for a fresh snapshot and writes it in
// OpenEvolve's checkpoint layout under dir:
//
//	dir/checkpoints/checkpoint_<iterations>/
//	  metadata.json           islands, grids, elite archive, best ids, counters
//	  programs/<id>.json      every program held, in OpenEvolve's Program fields
//	  best_program<ext>       the best program's code
//	  best_program_info.json  its id, metrics and lineage
//
// It returns the checkpoint's path. While the archive is still replaying results it asks
// again until ctx ends.
func ExportCheckpoint(ctx context.Context, nc *nats.Conn, names protocol.Names, run, dir string) (string, error) {
	if err := protocol.ValidateRunID(run); err != nil {
		return "", fmt.Errorf("export checkpoint: %w", err)
	}
	reply, err := requestSnapshot(ctx, nc, names, run)
	if err != nil {
		return "", fmt.Errorf("export checkpoint of run %s: %w", run, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return "", fmt.Errorf("export checkpoint: %w", err)
	}
	store, err := js.ObjectStore(ctx, names.SnapshotsStore())
	if err != nil {
		return "", fmt.Errorf("export checkpoint: open snapshots: %w", err)
	}
	data, err := store.GetBytes(ctx, reply.Key)
	if err != nil {
		return "", fmt.Errorf("export checkpoint: read snapshot %s: %w", reply.Key, err)
	}
	rs, err := runs.Open(ctx, js, names)
	if err != nil {
		return "", fmt.Errorf("export checkpoint: %w", err)
	}
	spec, err := rs.Spec(ctx, run)
	if err != nil {
		return "", fmt.Errorf("export checkpoint: %w", err)
	}
	pop, err := population.Restore(run, spec.Config, data)
	if err != nil {
		return "", fmt.Errorf("export checkpoint: %w", err)
	}
	ext := filepath.Ext(spec.ProgramName)
	if ext == "" {
		ext = extension(spec.Config.Language)
	}
	return writeCheckpoint(dir, run, spec.Config.Language, ext, pop.View())
}

func requestSnapshot(ctx context.Context, nc *nats.Conn, names protocol.Names, run string) (*protocol.SnapshotReply, error) {
	for {
		msg, err := nc.RequestWithContext(ctx, names.Snapshot(run), nil)
		if err != nil {
			if errors.Is(err, nats.ErrNoResponders) {
				return nil, fmt.Errorf("no archive answers on %s: %w", names.Snapshot(run), err)
			}
			return nil, err
		}
		var reply protocol.SnapshotReply
		if err := protocol.Decode(msg.Data, &reply); err != nil {
			return nil, err
		}
		if reply.Error == "" {
			return &reply, nil
		}
		if err := errReply(reply.Error); !errors.Is(err, ErrReplaying) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// checkpointProgram is OpenEvolve's Program as its checkpoints store it, with shoal's extras
// in metadata.
type checkpointProgram struct {
	ID             string             `json:"id"`
	Code           string             `json:"code"`
	Language       string             `json:"language"`
	ParentID       *string            `json:"parent_id"`
	Generation     int                `json:"generation"`
	IterationFound int64              `json:"iteration_found"`
	Metrics        map[string]float64 `json:"metrics"`
	Complexity     float64            `json:"complexity"`
	Diversity      float64            `json:"diversity"`
	Metadata       map[string]any     `json:"metadata"`
	ArtifactsJSON  *string            `json:"artifacts_json"`
}

func writeCheckpoint(dir, run, language, ext string, v population.View) (string, error) {
	path := filepath.Join(dir, "checkpoints", "checkpoint_"+strconv.FormatInt(v.Iterations, 10))
	if err := os.MkdirAll(filepath.Join(path, "programs"), 0o755); err != nil {
		return "", fmt.Errorf("export checkpoint: %w", err)
	}
	var best *population.ViewProgram
	for i := range v.Programs {
		vp := &v.Programs[i]
		if vp.ID == v.BestID {
			best = vp
		}
		if err := writeJSON(filepath.Join(path, "programs", fileName(vp.ID)+".json"), toCheckpointProgram(vp, language)); err != nil {
			return "", err
		}
	}
	islands := make([][]string, len(v.Islands))
	featureMaps := make([]map[string]string, len(v.Islands))
	islandBest := make([]*string, len(v.Islands))
	generations := make([]int64, len(v.Islands))
	migrations := make([]int64, len(v.Islands))
	for i, isl := range v.Islands {
		islands[i], featureMaps[i], generations[i], migrations[i] = isl.Members, isl.Cells, isl.Generations, isl.Migrations
		if isl.BestID != "" {
			islandBest[i] = &isl.BestID
		}
	}
	stats := map[string]any{}
	var dims []string
	for _, d := range v.Dimensions {
		dims = append(dims, d.Name)
		stats[d.Name] = map[string]any{"min": d.Min, "max": d.Max, "bins": d.Bins}
	}
	meta := map[string]any{
		"run":                  run,
		"islands":              islands,
		"island_feature_maps":  featureMaps,
		"archive":              v.Elites,
		"best_program_id":      v.BestID,
		"island_best_programs": islandBest,
		"last_iteration":       v.Iterations,
		"island_generations":   generations,
		"island_migrations":    migrations,
		"feature_dimensions":   dims,
		"feature_stats":        stats,
		"results_seq":          v.LastSeq,
	}
	if err := writeJSON(filepath.Join(path, "metadata.json"), meta); err != nil {
		return "", err
	}
	if best != nil {
		if err := os.WriteFile(filepath.Join(path, "best_program"+ext), []byte(best.Code), 0o644); err != nil {
			return "", fmt.Errorf("export checkpoint: %w", err)
		}
		info := map[string]any{
			"id":         best.ID,
			"generation": best.Generation,
			"iteration":  best.Iteration,
			"parent_id":  best.ParentID,
			"metrics":    best.Metrics,
			"score":      best.Score,
			"island":     best.Island,
			"language":   language,
			"saved_at":   time.Now().UTC().Format(time.RFC3339),
			"lineage":    v.Ancestry,
		}
		if err := writeJSON(filepath.Join(path, "best_program_info.json"), info); err != nil {
			return "", err
		}
	}
	return path, nil
}

func toCheckpointProgram(vp *population.ViewProgram, language string) checkpointProgram {
	cp := checkpointProgram{
		ID: vp.ID, Code: vp.Code, Language: language, Generation: vp.Generation, IterationFound: vp.Iteration,
		Metrics: vp.Metrics, Complexity: float64(len(vp.Code)), Diversity: vp.Features["diversity"],
		Metadata: map[string]any{
			"island": vp.Island, "status": vp.Status, "score": vp.Score, "features": vp.Program.Features,
			"feature_values": vp.Features, "elite": vp.Elite, "holds_cell": vp.HasCell,
		},
	}
	if cp.Metrics == nil {
		cp.Metrics = map[string]float64{}
	}
	if vp.ParentID != "" {
		cp.ParentID = &vp.ParentID
	}
	if vp.CopyOf != "" {
		cp.Metadata["migrant"], cp.Metadata["copy_of"] = true, vp.CopyOf
	}
	for k, val := range map[string]string{"changes": vp.Changes, "reason": vp.Reason} {
		if val != "" {
			cp.Metadata[k] = val
		}
	}
	if len(vp.Artifacts) > 0 {
		if b, err := json.Marshal(vp.Artifacts); err == nil {
			s := string(b)
			cp.ArtifactsJSON = &s
		}
	}
	return cp
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("export checkpoint: encode %s: %w", filepath.Base(path), err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("export checkpoint: %w", err)
	}
	return nil
}

// fileName keeps a program id usable as a file name on every system.
func fileName(id string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_', r == '~':
			return r
		}
		return '_'
	}, id)
}
