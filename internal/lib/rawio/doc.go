// Package rawio gives a socket reads and writes that stay on the
// goroutine's processor.
//
// A read or write through net.Conn enters the scheduler's syscall state.
// When the call lasts longer than the scheduler's monitor tick (20 µs)
// while other goroutines wait on the same processor, the monitor hands the
// processor to another thread, and the caller's thread parks when its call
// returns; and the first such call after a process went idle wakes the
// monitor thread, which soon sleeps again. A write to a loopback socket
// that wakes a sleeping peer lasts about that long on a virtual machine:
// the manager, which writes to 64 worker processes asleep between tasks,
// paid thread switches for many of its writes, and each worker for its
// first call after a wait. The sockets are non-blocking, so a read or
// write never waits in the kernel: Conn makes them as raw system calls,
// which the scheduler does not see, and waits for readiness in the
// runtime's poller as net.Conn does (deadlines and Close included).
//
// Poll lets a reader of answers read once per answer: it keeps the
// poller's news of input across reads, so a reader whose read drained the
// socket may wait without first reading again to meet EAGAIN.
package rawio
