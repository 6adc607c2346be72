package mcast

import "errors"

var (
	ErrNotFound = errors.New("no such session")
	ErrEnded    = errors.New("the session has ended")
)
