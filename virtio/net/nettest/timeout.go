package nettest

import "errors"

// IsTimeout reports whether err (from Recv, WaitTx, Ctrl or WaitSent)
// means the device did not answer in time. A Recv that timed out before
// the first buffer of a packet returns an RxFrame with Buffers 0: nothing
// was consumed, so the caller may simply try again.
func IsTimeout(err error) bool {
	return errors.Is(err, errTimeout) || errors.Is(err, ErrTimeout)
}
