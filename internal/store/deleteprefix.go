package store

import (
	"context"
	"errors"
	"fmt"
)

// DeletePrefix deletes every live key of namespace ns that starts with
// prefix, and returns how many it deleted: a subtree's cleanup (a finished
// task's keys) in one call. It lists the keys a page at a time (List) and
// deletes each page as one Batch of deletes, so that every delete is
// announced as a single one would be. It is not atomic: a key written
// under the prefix after its page was listed stays, and a key deleted by
// someone else meanwhile is not counted. After ErrUnavailable some keys
// may be deleted already; calling it again finishes the work. An empty
// prefix is ErrInvalidArgument: a namespace is not emptied by accident.
func (s *Store) DeletePrefix(ctx context.Context, ns, prefix string) (int, error) {
	if prefix == "" {
		return 0, fmt.Errorf("%w: prefix is required", ErrInvalidArgument)
	}
	deleted, cursor := 0, ""
	for {
		page, next, err := s.List(ctx, ns, prefix, cursor, MaxListLimit)
		if err != nil {
			return deleted, err
		}
		if len(page) > 0 {
			ops := make([]BatchOp, len(page))
			for i, key := range page {
				ops[i] = BatchOp{Kind: OpDelete, Namespace: ns, Key: key}
			}
			results, err := s.Batch(ctx, ops, false)
			if err != nil {
				return deleted, err
			}
			for _, r := range results {
				switch {
				case r.Err == nil:
					deleted++
				case errors.Is(r.Err, ErrNotFound): // deleted meanwhile, or expired
				default:
					return deleted, r.Err
				}
			}
		}
		if next == "" {
			return deleted, nil
		}
		cursor = next
	}
}
