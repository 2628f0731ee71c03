package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"

	"sigs.k8s.io/yaml"

	"github.com/memsync/memsync/internal/glob"
)

// ErrInvalidRules is returned for a rule or rules file that cannot be used.
var ErrInvalidRules = errors.New("store: invalid rules")

// Rule maps keys matching Pattern (a glob: '*' one segment, '**' any depth)
// to the Strategy that resolves their siblings. Field names the member Max
// compares when the values are objects; it is allowed with Max only.
type Rule struct {
	Pattern  string   `json:"pattern"`
	Strategy Strategy `json:"strategy"`
	Field    string   `json:"field,omitempty"`
}

// DefaultRules returns the built-in rules of the contract (§2), ending with
// "**" → lww, so every key has a rule.
func DefaultRules() []Rule {
	return []Rule{
		{Pattern: "tasks/*/state", Strategy: LWW},
		{Pattern: "tasks/*/progress", Strategy: Max, Field: "progress"},
		{Pattern: "tasks/*/agents/*", Strategy: Merge},
		{Pattern: "workers/*/status", Strategy: LWW},
		{Pattern: "workers/*/heartbeat", Strategy: LWW},
		{Pattern: "workers/*/capacity", Strategy: LWW},
		{Pattern: "coordination/queue", Strategy: Merge},
		{Pattern: "coordination/assignments", Strategy: Merge},
		{Pattern: "coordination/metrics", Strategy: Merge},
		{Pattern: "**", Strategy: LWW},
	}
}

// Rules picks the rule of a key. It is immutable and safe for concurrent
// use.
type Rules struct {
	rules []compiledRule
}

type compiledRule struct {
	Rule
	pattern *glob.Pattern
}

// NewRules returns extra followed by DefaultRules: the first rule whose
// pattern matches a key is that key's rule, so extra rules override the
// defaults. Errors wrap ErrInvalidRules with the index of the bad rule.
func NewRules(extra []Rule) (*Rules, error) {
	// Clipped, so that appending never writes into the caller's array.
	all := append(slices.Clip(extra), DefaultRules()...)
	r := &Rules{rules: make([]compiledRule, len(all))}
	for i, rule := range all {
		p, err := rule.compile()
		if err != nil {
			return nil, fmt.Errorf("%w: rule %d: %w", ErrInvalidRules, i, err)
		}
		r.rules[i] = compiledRule{Rule: rule, pattern: p}
	}
	return r, nil
}

// For returns the first rule matching key. The defaults end with "**", so
// there always is one; a nil *Rules answers with the defaults' catch-all,
// lww.
func (r *Rules) For(key string) Rule {
	if r != nil {
		for _, c := range r.rules {
			if c.pattern.Match(key) {
				return c.Rule
			}
		}
	}
	return Rule{Pattern: "**", Strategy: LWW}
}

// compile validates rule and compiles its pattern.
func (r Rule) compile() (*glob.Pattern, error) {
	p, err := glob.Compile(r.Pattern)
	if err != nil {
		return nil, err
	}
	if r.Strategy == "" {
		return nil, fmt.Errorf("pattern %q: strategy is required", r.Pattern)
	}
	if _, err := ParseStrategy(string(r.Strategy)); err != nil {
		return nil, fmt.Errorf("pattern %q: %w", r.Pattern, err)
	}
	if r.Field != "" && r.Strategy != Max {
		return nil, fmt.Errorf("pattern %q: field %q is only allowed with strategy %q", r.Pattern, r.Field, Max)
	}
	return p, nil
}

// ParseStrategy returns the strategy named s (as in ?resolve=), or an error
// wrapping ErrUnknownStrategy. Names are lower case, as the contract spells
// them.
func ParseStrategy(s string) (Strategy, error) {
	if st := Strategy(s); st.valid() {
		return st, nil
	}
	return "", fmt.Errorf("%w: %q (want lww, union, merge, max or siblings)", ErrUnknownStrategy, s)
}

// LoadRules reads a rules file, {"rules": [{"pattern", "strategy",
// "field"?}, ...]}, in JSON or YAML (JSON being YAML, either works whatever
// the file's name). Unknown fields are errors, so a misspelt "feild" cannot
// silently turn a rule into another. In YAML, quote patterns that start with
// '*': a bare '*' starts an alias. Errors wrap ErrInvalidRules with the file
// name and, for a bad rule, its index; the rules are checked as NewRules
// checks them.
func LoadRules(path string) ([]Rule, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRules, err)
	}
	js := data
	// JSON is read as it is: YAML forbids the tab indentation that JSON
	// files often have.
	if !json.Valid(data) {
		if js, err = yaml.YAMLToJSONStrict(data); err != nil { // strict: repeated keys are errors
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalidRules, path, err)
		}
	}
	// Two passes, so that an error inside a rule can name the rule.
	var file struct {
		Rules []json.RawMessage `json:"rules"`
	}
	if err := decodeStrict(js, &file); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidRules, path, err)
	}
	rules := make([]Rule, len(file.Rules))
	for i, raw := range file.Rules {
		if err := decodeStrict(raw, &rules[i]); err != nil {
			return nil, fmt.Errorf("%w: %s: rule %d: %w", ErrInvalidRules, path, i, err)
		}
		if _, err := rules[i].compile(); err != nil {
			return nil, fmt.Errorf("%w: %s: rule %d: %w", ErrInvalidRules, path, i, err)
		}
	}
	return rules, nil
}

// decodeStrict decodes one JSON value into v, refusing unknown fields and
// trailing data.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the rules")
	}
	return nil
}
