package cache

// DecodeEntry exposes the entry decoder (decompression included) to fuzzing.
func DecodeEntry(b []byte) (int64, []byte, error) { return decodeEntry(b) }
