package purge

import "strings"

// Redis Cluster refuses multi-key commands whose keys hash to different slots
// (CROSSSLOT), so cluster UNLINKs are grouped by slot. The slot function is the
// one the Redis Cluster specification defines: CRC16 (XMODEM) of the key, or of
// its hash tag, modulo 16384.

const slots = 16384

// Slot returns the cluster hash slot of key.
func Slot(key string) int {
	if s := strings.IndexByte(key, '{'); s >= 0 {
		if e := strings.IndexByte(key[s+1:], '}'); e > 0 {
			key = key[s+1 : s+1+e]
		}
	}
	return int(crc16(key) % slots)
}

// BySlot groups keys by their cluster hash slot: one multi-key command per
// group is what Redis Cluster accepts.
func BySlot(keys []string) map[int][]string {
	groups := make(map[int][]string)
	for _, k := range keys {
		s := Slot(k)
		groups[s] = append(groups[s], k)
	}
	return groups
}

var crcTable = func() (t [256]uint16) {
	for i := range t {
		crc := uint16(i) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
		t[i] = crc
	}
	return t
}()

func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc = crc<<8 ^ crcTable[byte(crc>>8)^s[i]]
	}
	return crc
}
