package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ArgHeader is the header that carries a call's arguments as JSON, as the
// HOOPS conversion server takes them.
const ArgHeader = "CS-API-Arg"

// maxArgLen bounds the header's JSON.
const maxArgLen = 64 << 10

// ErrBadArg marks a CS-API-Arg header that cannot be read.
var ErrBadArg = errors.New("bad CS-API-Arg")

// Args are the arguments of the calls, from the CS-API-Arg header. Keys
// that drover does not use (accessPassword, hcVersion, …) are ignored, so
// that the original's clients work unchanged.
type Args struct {
	Webhook   string
	StartPath string
	// RootFile is uploadArray's startPath.
	RootFile string
	// ItemName names an item made by create.
	ItemName    string
	CommandLine []string
	// ItemID is itemid, storageID or storageid: upload appends its file
	// to that item.
	ItemID string
	// ItemIDs ask data for several items.
	ItemIDs []string
	// RenderType is streamingSession's "client" or "server"; AccessItems
	// the items whose files its session gets at once.
	RenderType  string
	AccessItems []string

	ProcessShattered        bool
	SkipConversion          bool
	WaitUntilConversionDone bool

	// Has reports the keys given with a value (not null), for reconvert,
	// which keeps what is not given.
	Has map[string]bool
}

// ParseArgs reads the CS-API-Arg header. An empty header is no arguments.
// Strings must be strings; booleans may be true/false, "true"/"false" or
// 0/1 (clients send all three); conversionCommandLine is an array of
// strings.
func ParseArgs(header string) (Args, error) {
	a := Args{Has: map[string]bool{}}
	header = strings.TrimSpace(header)
	if header == "" {
		return a, nil
	}
	if len(header) > maxArgLen {
		return a, fmt.Errorf("%w: longer than %d bytes", ErrBadArg, maxArgLen)
	}
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(strings.NewReader(header))
	if err := dec.Decode(&raw); err != nil {
		return a, fmt.Errorf("%w: not a JSON object", ErrBadArg)
	}
	if dec.More() {
		return a, fmt.Errorf("%w: more than one JSON value", ErrBadArg)
	}
	strs := map[string]*string{
		"webhook": &a.Webhook, "startPath": &a.StartPath, "rootFile": &a.RootFile, "itemname": &a.ItemName,
		"itemid": &a.ItemID, "storageID": &a.ItemID, "storageid": &a.ItemID, "renderType": &a.RenderType,
	}
	bools := map[string]*bool{
		"processShattered": &a.ProcessShattered, "skipConversion": &a.SkipConversion,
		"waitUntilConversionDone": &a.WaitUntilConversionDone,
	}
	for key, v := range raw {
		if bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
			continue
		}
		var err error
		switch {
		case strs[key] != nil:
			err = parseString(v, strs[key])
		case bools[key] != nil:
			err = parseBool(v, bools[key])
		case key == "conversionCommandLine":
			a.CommandLine, err = parseStrings(v)
			if err == nil && a.CommandLine == nil {
				a.CommandLine = []string{}
			}
		case key == "itemids":
			a.ItemIDs, err = parseStrings(v)
		case key == "accessItems":
			a.AccessItems, err = parseStrings(v)
		default:
			continue
		}
		if err != nil {
			return a, fmt.Errorf("%w: %s: %w", ErrBadArg, key, err)
		}
		a.Has[key] = true
	}
	if !validUTF8(a) {
		return a, fmt.Errorf("%w: not UTF-8", ErrBadArg)
	}
	return a, nil
}

func parseString(v json.RawMessage, dst *string) error {
	if err := json.Unmarshal(v, dst); err != nil {
		return errors.New("not a string")
	}
	return nil
}

func parseBool(v json.RawMessage, dst *bool) error {
	var b bool
	if json.Unmarshal(v, &b) == nil {
		*dst = b
		return nil
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		if b, err := strconv.ParseBool(strings.TrimSpace(s)); err == nil {
			*dst = b
			return nil
		}
		if s == "" {
			*dst = false
			return nil
		}
	}
	var n float64
	if json.Unmarshal(v, &n) == nil && (n == 0 || n == 1) {
		*dst = n == 1
		return nil
	}
	return errors.New("not a boolean")
}

func parseStrings(v json.RawMessage) ([]string, error) {
	var ss []string
	if err := json.Unmarshal(v, &ss); err != nil {
		// A single empty string is how some clients say "none".
		var s string
		if json.Unmarshal(v, &s) == nil && strings.TrimSpace(s) == "" {
			return nil, nil
		}
		return nil, errors.New("not an array of strings")
	}
	return ss, nil
}

// validUTF8: JSON decoding replaces invalid UTF-8, but a string with the
// replacement character from a bad input is best refused early.
func validUTF8(a Args) bool {
	for _, s := range append([]string{a.Webhook, a.StartPath, a.RootFile, a.ItemName, a.ItemID, a.RenderType}, a.CommandLine...) {
		if strings.ContainsRune(s, '\uFFFD') {
			return false
		}
	}
	return true
}
