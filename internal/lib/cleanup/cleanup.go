// Package cleanup keeps the teardown of a setup in one place: each step is
// pushed right after the thing it undoes is created, and Run undoes them in
// reverse, every step even when one fails, with their errors joined. The
// same stack rolls back a setup that fails half way and stops one that
// succeeded, so the two cannot drift apart.
//
// It owns the order and the error handling of teardown; what each step
// does, and how long it may take (the ctx given to Run), is the caller's.
package cleanup

import (
	"context"
	"errors"
	"fmt"
)

// Stack is a list of teardown steps. The zero value is empty and ready.
// It is not safe for concurrent use: its owner serialises Push and Run.
type Stack struct {
	steps []step
}

type step struct {
	name string
	fn   func(context.Context) error
}

// Push adds a step; name prefixes its error.
func (s *Stack) Push(name string, fn func(context.Context) error) {
	s.steps = append(s.steps, step{name, fn})
}

// PushFunc adds a step that takes no context, such as a Close method.
func (s *Stack) PushFunc(name string, fn func() error) {
	s.Push(name, func(context.Context) error { return fn() })
}

// Run runs the steps last pushed first and empties the stack, so a second
// Run does nothing. Every step runs, with ctx, whatever the others return;
// the result joins their errors.
func (s *Stack) Run(ctx context.Context) error {
	steps := s.steps
	s.steps = nil
	var errs []error
	for i := len(steps) - 1; i >= 0; i-- {
		if err := steps[i].fn(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", steps[i].name, err))
		}
	}
	return errors.Join(errs...)
}

// Len is the number of steps not yet run.
func (s *Stack) Len() int { return len(s.steps) }
