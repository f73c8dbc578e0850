package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"
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
//
// JSON cannot carry a string that is not valid UTF-8: encoding/json writes
// each bad byte as \ufffd, which would give "\xff" and "\xfe" one key. When
// the parameters hold such strings (values, map keys, exported struct
// fields; not inside a json.Marshaler or encoding.TextMarshaler), the hashed
// bytes are the JSON, a 0 byte, then each such string as its length (an
// unsigned LEB128 varint) and its raw bytes, in a depth-first walk that
// visits map entries by key (formatted with %v, sorted bytewise), key before
// value, and struct fields in declaration order.
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
	if err != nil {
		safe := make(map[string]any, len(params))
		for k, v := range params {
			if _, err := encodeCanonical(v); err != nil {
				v = fmt.Sprintf("%T(%v)", v, v)
			}
			safe[k] = v
		}
		params = safe
		b, err = encodeCanonical(safe)
		if err != nil { // unreachable: every value is now encodable
			panic("cache: GenerateKey: " + err.Error())
		}
	}
	// encoding/json escapes U+FFFD only where it replaced an invalid byte
	// (a valid U+FFFD is written as is), so only then can the JSON be
	// ambiguous. A literal backslash-u-f-f-f-d also matches; the walk then
	// finds nothing and the bytes stay the JSON alone.
	if bytes.Contains(b, []byte(`\ufffd`)) {
		if extra := appendInvalidUTF8(nil, reflect.ValueOf(params), 0); len(extra) > 0 {
			b = append(append(b, 0), extra...)
		}
	}
	return b
}

var (
	jsonMarshaler = reflect.TypeFor[json.Marshaler]()
	textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()
)

// appendInvalidUTF8 appends each string in v that is not valid UTF-8 as a
// uvarint length and its bytes, in the order GenerateKey documents. depth
// bounds the walk: fields that encoding/json skips (and so never checked for
// cycles) are walked too.
func appendInvalidUTF8(b []byte, v reflect.Value, depth int) []byte {
	if !v.IsValid() || depth > 100 {
		return b
	}
	if v.Kind() != reflect.Interface && (v.Type().Implements(jsonMarshaler) || v.Type().Implements(textMarshaler)) {
		return b // encoded its own way, not string by string
	}
	switch v.Kind() {
	case reflect.Interface, reflect.Pointer:
		if !v.IsNil() {
			b = appendInvalidUTF8(b, v.Elem(), depth+1)
		}
	case reflect.String:
		if s := v.String(); !utf8.ValidString(s) {
			b = binary.AppendUvarint(b, uint64(len(s)))
			b = append(b, s...)
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return b // bytes, not strings
		}
		for i := range v.Len() {
			b = appendInvalidUTF8(b, v.Index(i), depth+1)
		}
	case reflect.Map:
		keys := v.MapKeys()
		names := make([]string, len(keys))
		for i, k := range keys {
			names[i] = fmt.Sprintf("%v", k)
		}
		order := make([]int, len(keys))
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(i, j int) int { return strings.Compare(names[i], names[j]) })
		for _, i := range order {
			b = appendInvalidUTF8(b, keys[i], depth+1)
			b = appendInvalidUTF8(b, v.MapIndex(keys[i]), depth+1)
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			if f := t.Field(i); (f.IsExported() || f.Anonymous) && f.Tag.Get("json") != "-" {
				b = appendInvalidUTF8(b, v.Field(i), depth+1)
			}
		}
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
