package runconfig

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"reflect"
	"slices"
	"strconv"
)

// Digest is "sha256-<hex>" of the config's canonical JSON: fields in declaration order, map
// keys sorted, durations in nanoseconds. Two files that differ only in layout, comments, key
// order or spelled-out defaults have the same digest; any change of a value changes it.
func (c *Config) Digest() string {
	var b bytes.Buffer
	canonical(&b, reflect.ValueOf(*c))
	sum := sha256.Sum256(b.Bytes())
	return "sha256-" + hex.EncodeToString(sum[:])
}

// canonical writes v as JSON. It is hand-written rather than encoding/json so that a config
// holding NaN (one not yet validated) still has a digest.
func canonical(b *bytes.Buffer, v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		b.WriteByte('{')
		for i := range v.NumField() {
			if i > 0 {
				b.WriteByte(',')
			}
			writeString(b, v.Type().Field(i).Name)
			b.WriteByte(':')
			canonical(b, v.Field(i))
		}
		b.WriteByte('}')
	case reflect.Slice:
		if v.IsNil() {
			b.WriteString("null")
			return
		}
		b.WriteByte('[')
		for i := range v.Len() {
			if i > 0 {
				b.WriteByte(',')
			}
			canonical(b, v.Index(i))
		}
		b.WriteByte(']')
	case reflect.Map:
		if v.IsNil() {
			b.WriteString("null")
			return
		}
		keys := v.MapKeys()
		slices.SortFunc(keys, func(x, y reflect.Value) int {
			switch {
			case x.String() < y.String():
				return -1
			case x.String() > y.String():
				return 1
			}
			return 0
		})
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeString(b, k.String())
			b.WriteByte(':')
			canonical(b, v.MapIndex(k))
		}
		b.WriteByte('}')
	case reflect.Pointer:
		if v.IsNil() {
			b.WriteString("null")
			return
		}
		canonical(b, v.Elem())
	case reflect.String:
		writeString(b, v.String())
	case reflect.Bool:
		b.WriteString(strconv.FormatBool(v.Bool()))
	case reflect.Int, reflect.Int64:
		b.WriteString(strconv.FormatInt(v.Int(), 10))
	case reflect.Float64:
		f := v.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			writeString(b, strconv.FormatFloat(f, 'g', -1, 64))
			return
		}
		b.WriteString(strconv.FormatFloat(f, 'g', -1, 64))
	default:
		// Every field type of Config is handled above; a new one must be added there.
		panic("runconfig: Digest cannot encode a " + v.Kind().String())
	}
}

func writeString(b *bytes.Buffer, s string) {
	out, _ := json.Marshal(s) // a string always encodes
	b.Write(out)
}
