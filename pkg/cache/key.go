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
	"strconv"
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
// A value encoding/json cannot encode (a channel, a function, NaN, a map
// with pointer keys, a cycle) is replaced by a string instead of failing: its
// type as %T prints it, then in parentheses a rendering that depends on the
// value alone, never on where it sits in memory. Pointers are followed ("&"
// then the value; a nil pointer is "<nil>", distinct from a pointer to a zero
// value), so equal values held by different pointers give equal keys. The
// rendering is fmt's %v but unambiguous: strings are Go-quoted
// (strconv.Quote), nil maps and slices are "<nil>", map entries are sorted by
// the bytes of their rendered keys, channels and functions show only their
// type, and methods (String, MarshalJSON) are not called. A pointer, map or
// slice met again inside itself is written "<cycle>", so cyclic values end
// and two cycles of the same shape and values share a key. For example
// math.Inf(1) becomes "float64(+Inf)".
//
// JSON cannot carry a string that is not valid UTF-8: encoding/json writes
// each bad byte as \ufffd, which would give "\xff" and "\xfe" one key. When
// the parameters hold such strings (values, map keys, exported struct
// fields; not inside a json.Marshaler or encoding.TextMarshaler), the hashed
// bytes are the JSON, a 0 byte, then each such string as its length (an
// unsigned LEB128 varint) and its raw bytes, in a depth-first walk that
// visits map entries by key (formatted with %v, or for a key that is not a
// string, number or boolean rendered as above; sorted bytewise), key before
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
				v = fmt.Sprintf("%T(%s)", v, renderValue(reflect.ValueOf(v)))
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
			names[i] = mapKeyName(k)
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

// mapKeyName is the sort name of a map key in appendInvalidUTF8: %v for the
// basic kinds (as documented), the address-free rendering for the rest
// (a pointer key's %v is its address).
func mapKeyName(k reflect.Value) string {
	switch k.Kind() {
	case reflect.String, reflect.Bool,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64:
		return fmt.Sprintf("%v", k)
	}
	return renderValue(k)
}

// renderValue writes v as GenerateKey documents for values encoding/json
// cannot encode.
func renderValue(v reflect.Value) string {
	r := renderer{onPath: map[pathID]bool{}}
	r.value(v)
	return string(r.b)
}

// pathID identifies a pointer, map or slice on the way from the root to the
// value being rendered: meeting one again there is a cycle.
type pathID struct {
	t   reflect.Type
	ptr uintptr
	len int
}

type renderer struct {
	b      []byte
	onPath map[pathID]bool
}

// enter marks id as being rendered; it reports false (and writes the
// marker) when id is already on the path.
func (r *renderer) enter(id pathID) bool {
	if r.onPath[id] {
		r.b = append(r.b, "<cycle>"...)
		return false
	}
	r.onPath[id] = true
	return true
}

func (r *renderer) value(v reflect.Value) {
	if !v.IsValid() {
		r.b = append(r.b, "<nil>"...)
		return
	}
	switch v.Kind() {
	case reflect.Bool:
		r.b = strconv.AppendBool(r.b, v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		r.b = strconv.AppendInt(r.b, v.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		r.b = strconv.AppendUint(r.b, v.Uint(), 10)
	case reflect.Float32:
		r.b = strconv.AppendFloat(r.b, v.Float(), 'g', -1, 32)
	case reflect.Float64:
		r.b = strconv.AppendFloat(r.b, v.Float(), 'g', -1, 64)
	case reflect.Complex64:
		r.b = append(r.b, strconv.FormatComplex(v.Complex(), 'g', -1, 64)...)
	case reflect.Complex128:
		r.b = append(r.b, strconv.FormatComplex(v.Complex(), 'g', -1, 128)...)
	case reflect.String:
		// Quoted: unquoted, {"a b" "c"} and {"a" "b c"} would render alike.
		// strconv.Quote keeps invalid bytes apart (\xff, \xfe).
		r.b = strconv.AppendQuote(r.b, v.String())
	case reflect.Interface:
		if v.IsNil() {
			r.b = append(r.b, "<nil>"...)
			return
		}
		r.value(v.Elem())
	case reflect.Pointer:
		if v.IsNil() {
			r.b = append(r.b, "<nil>"...)
			return
		}
		id := pathID{t: v.Type(), ptr: v.Pointer()}
		if !r.enter(id) {
			return
		}
		r.b = append(r.b, '&')
		r.value(v.Elem())
		delete(r.onPath, id)
	case reflect.Struct:
		r.b = append(r.b, '{')
		for i := range v.NumField() {
			if i > 0 {
				r.b = append(r.b, ' ')
			}
			r.value(v.Field(i))
		}
		r.b = append(r.b, '}')
	case reflect.Array:
		r.list(v)
	case reflect.Slice:
		if v.IsNil() {
			r.b = append(r.b, "<nil>"...)
			return
		}
		id := pathID{t: v.Type(), ptr: v.Pointer(), len: v.Len()}
		if v.Len() > 0 && !r.enter(id) {
			return
		}
		r.list(v)
		delete(r.onPath, id)
	case reflect.Map:
		if v.IsNil() {
			r.b = append(r.b, "<nil>"...)
			return
		}
		id := pathID{t: v.Type(), ptr: v.Pointer()}
		if !r.enter(id) {
			return
		}
		r.mapEntries(v)
		delete(r.onPath, id)
	default: // Chan, Func, UnsafePointer: nothing but identity to show
		if v.IsNil() {
			r.b = append(r.b, "<nil>"...)
			return
		}
		r.b = append(r.b, '(')
		r.b = append(r.b, v.Type().String()...)
		r.b = append(r.b, ')')
	}
}

func (r *renderer) list(v reflect.Value) {
	r.b = append(r.b, '[')
	for i := range v.Len() {
		if i > 0 {
			r.b = append(r.b, ' ')
		}
		r.value(v.Index(i))
	}
	r.b = append(r.b, ']')
}

// mapEntries writes "map[k:v k:v]", the entries sorted by their rendered
// bytes (fmt sorts pointer keys by address; two pointer keys can also render
// alike, hence the whole entry).
func (r *renderer) mapEntries(v reflect.Value) {
	entries := make([][]byte, 0, v.Len())
	iter := v.MapRange()
	for iter.Next() {
		// Rendered with the path so far, so an entry that holds the map
		// itself ends in "<cycle>" too.
		mark := len(r.b)
		r.value(iter.Key())
		r.b = append(r.b, ':')
		r.value(iter.Value())
		entries = append(entries, bytes.Clone(r.b[mark:]))
		r.b = r.b[:mark]
	}
	slices.SortFunc(entries, bytes.Compare)
	r.b = append(r.b, "map["...)
	for i, e := range entries {
		if i > 0 {
			r.b = append(r.b, ' ')
		}
		r.b = append(r.b, e...)
	}
	r.b = append(r.b, ']')
}
