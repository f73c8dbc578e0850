package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// GenerateKey returns a key for a call with the given parameters:
// prefix + ":" + the first 16 lowercase hex digits (8 bytes) of the SHA-256 of
// the parameters' canonical JSON. Equal maps give equal keys whatever their
// insertion order.
//
// The canonical JSON is what encoding/json's Encoder writes for params with
// SetEscapeHTML(false), without the trailing newline: one object, keys sorted
// by their bytes (nested maps too), no whitespace, strings as UTF-8 with only
// '"', '\\' and control characters escaped (\b \f \n \r \t, others as \u00XX;
// also U+2028, U+2029 as \u2028, \u2029), integers as digits, floats in their
// shortest form (1e+21 and 1e-7 in exponent form). A nil or empty map is "{}".
// For example, {"user_id": 1, "status": "active"} hashes the 31 bytes
//
//	{"status":"active","user_id":1}
//
// For values that are strings (without U+2028 or U+2029), integers, booleans,
// null, lists and objects of those, Python produces the same bytes with
//
//	json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
//
// A value encoding/json cannot encode (a channel, a function, NaN) is replaced
// by the string fmt.Sprintf("%T(%v)", v) instead of failing.
func GenerateKey(prefix string, params map[string]any) string {
	sum := sha256.Sum256(canonicalJSON(params))
	var b []byte
	b = append(b, prefix...)
	b = append(b, ':')
	b = hex.AppendEncode(b, sum[:8])
	return string(b)
}

func canonicalJSON(params map[string]any) []byte {
	if len(params) == 0 {
		return []byte("{}")
	}
	b, err := encodeCanonical(params)
	if err == nil {
		return b
	}
	safe := make(map[string]any, len(params))
	for k, v := range params {
		if _, err := encodeCanonical(v); err != nil {
			v = fmt.Sprintf("%T(%v)", v, v)
		}
		safe[k] = v
	}
	b, err = encodeCanonical(safe)
	if err != nil { // unreachable: every value is now encodable
		panic("cache: GenerateKey: " + err.Error())
	}
	return b
}

func encodeCanonical(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
