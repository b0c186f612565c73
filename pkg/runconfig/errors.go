package runconfig

import "errors"

// ErrInvalid is matched (errors.Is) by every FieldError: a value in the config cannot be used.
var ErrInvalid = errors.New("invalid config")

// FieldError is one unusable value: Key is the dotted path (llm.models[0].weight) and Msg
// says what is wrong with the value and what is allowed.
type FieldError struct {
	Key string
	Msg string
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Msg }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// Warning is something in the file that shoal does not act on: an unknown key, an OpenEvolve
// key shoal ignores, a key set twice. The run goes on.
type Warning struct {
	Key     string
	Message string
}

func (w Warning) String() string { return w.Key + ": " + w.Message }

// ErrUnknownProfile: a launched model names a profile that the generator does not declare.
var ErrUnknownProfile = errors.New("unknown launch profile")
