// Package rawio gives a TCP connection reads and writes that stay on the
// goroutine's processor.
//
// A read or write through net.Conn enters the scheduler's syscall state:
// when the call lasts longer than the scheduler's monitor tick (20 µs) and
// other goroutines wait on the same processor, the monitor hands the
// processor to another thread, and the caller's thread parks when its call
// returns. A write to a loopback socket that wakes a sleeping peer lasts
// about that long on a virtual machine, so a proxy that writes to many
// such peers pays two thread switches for many of its writes. The sockets
// are non-blocking, so a read or write never waits in the kernel: Conn
// makes them as raw system calls, and waits for readiness in the runtime's
// poller as net.Conn does (deadlines included).
package rawio
