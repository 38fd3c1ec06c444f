package data

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// What PostgreSQL's jsonb takes of what encoding/json calls valid: a value that breaks one of
// these rules makes the statement that carries it fail, and with it a whole group commit.
// Validation refuses such data up front (NewEvent.Validate), so that PostgreSQL never sees it.
//
// jsonb refuses:
//   - the escape \u0000 in any string, object keys included: its text type cannot hold U+0000
//     ("unsupported Unicode escape sequence", SQLSTATE 22P05);
//   - an unpaired UTF-16 surrogate escape (\ud800 alone, \udc00 first), which encoding/json
//     accepts and turns into U+FFFD ("invalid input syntax for type json");
//   - bytes that are not UTF-8 (SQLSTATE 22021), which encoding/json does not look at;
//   - numbers that do not fit its numeric type ("value overflows numeric format"): more than
//     131,072 digits before the decimal point, more than 16,383 after it, or an exponent
//     beyond ±1,073,741,822 (even for zero).
//
// Nesting is left to encoding/json, which refuses more than 10,000 levels; PostgreSQL takes
// that many with its default max_stack_depth (2 MB).

// numeric's limits (src/backend/utils/adt/numeric.c): a weight of at most 32767 base-10000
// digits, a display scale of at most 16383, and an exponent under INT_MAX/2 in magnitude.
const (
	numericMaxIntDigits = 4 * 32768 // digits before the decimal point
	numericMaxScale     = 16383     // digits after it
	numericMaxExponent  = 1<<30 - 1 // INT_MAX / 2: an exponent of this magnitude is refused
)

// errNotJSONB is wrapped by every refusal of jsonbProblem.
var errNotJSONB = errors.New("PostgreSQL's jsonb cannot store it")

// jsonbProblem says why PostgreSQL's jsonb would refuse b, which json.Valid accepted, or nil.
func jsonbProblem(b []byte) error {
	if !utf8.Valid(b) {
		return fmt.Errorf("%w: it is not UTF-8", errNotJSONB)
	}
	for i := 0; i < len(b); {
		switch c := b[i]; {
		case c == '"':
			n, err := stringEnd(b, i)
			if err != nil {
				return err
			}
			i = n
		case c == '-' || '0' <= c && c <= '9':
			n, err := numberEnd(b, i)
			if err != nil {
				return err
			}
			i = n
		default:
			i++
		}
	}
	return nil
}

// stringEnd checks the JSON string that starts at b[i] and returns the index after it.
func stringEnd(b []byte, i int) (int, error) {
	for i++; b[i] != '"'; {
		if b[i] != '\\' {
			i++
			continue
		}
		if b[i+1] != 'u' {
			i += 2
			continue
		}
		switch r := hex4(b[i+2 : i+6]); {
		case r == 0:
			return 0, fmt.Errorf(`%w: a string holds \u0000 (U+0000)`, errNotJSONB)
		case 0xD800 <= r && r < 0xDC00: // a high surrogate: a low one must follow at once
			if i+12 > len(b) || b[i+6] != '\\' || b[i+7] != 'u' || !isLowSurrogate(hex4(b[i+8:i+12])) {
				return 0, fmt.Errorf(`%w: a string holds an unpaired surrogate \u%s`, errNotJSONB, b[i+2:i+6])
			}
			i += 12
		case isLowSurrogate(r):
			return 0, fmt.Errorf(`%w: a string holds an unpaired surrogate \u%s`, errNotJSONB, b[i+2:i+6])
		default:
			i += 6
		}
	}
	return i + 1, nil
}

func isLowSurrogate(r rune) bool { return 0xDC00 <= r && r < 0xE000 }

// hex4 reads four hex digits, which json.Valid has checked.
func hex4(h []byte) rune {
	var r rune
	for _, c := range h {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// numberEnd checks the JSON number that starts at b[i] against numeric's limits and returns
// the index after it.
func numberEnd(b []byte, i int) (int, error) {
	start := i
	if b[i] == '-' {
		i++
	}
	intStart := i
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	intDigits := b[intStart:i]
	var frac []byte
	if i < len(b) && b[i] == '.' {
		i++
		fracStart := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		frac = b[fracStart:i]
	}
	var exp int64
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		negative := false
		if b[i] == '+' || b[i] == '-' {
			negative = b[i] == '-'
			i++
		}
		for ; i < len(b) && '0' <= b[i] && b[i] <= '9'; i++ {
			exp = min(exp*10+int64(b[i]-'0'), 1<<40) // saturates far beyond any limit
		}
		if negative {
			exp = -exp
		}
	}
	overflow := func() (int, error) {
		return 0, fmt.Errorf("%w: the number %s is out of the range of PostgreSQL's numeric", errNotJSONB, shorten(b[start:i]))
	}
	if exp >= numericMaxExponent || exp <= -numericMaxExponent {
		return overflow()
	}
	if scale := int64(len(frac)) - exp; scale > numericMaxScale {
		return overflow()
	}
	// The position of the first significant digit: the number is below 10^(lead+1).
	zeros := 0
	for _, d := range [][]byte{intDigits, frac} {
		for _, c := range d {
			if c != '0' {
				lead := int64(len(intDigits)) + exp - int64(zeros) - 1
				if lead >= numericMaxIntDigits {
					return overflow()
				}
				return i, nil
			}
			zeros++
		}
	}
	return i, nil // zero
}

// shorten is b for an error message, cut when long.
func shorten(b []byte) string {
	if len(b) <= 40 {
		return string(b)
	}
	return string(b[:30]) + "…" + strings.TrimSpace(string(b[len(b)-8:]))
}
