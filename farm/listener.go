package farm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A readiness probe that connects proves that something listens on the
// instance's port, not that the instance does: another farm's instance, or
// any program that bound the port after allocPort looked, answers just as
// well. Sending clients there would bind their sessions to a stranger. So a
// successful probe is confirmed by finding the listening socket among the
// descriptors of the instance's process group.

// listenerInGroup reports whether the socket listening on port is held by a
// process of the process group pgid. ok is false when the system cannot tell
// (no sock_diag and no procfs, or the instance runs as another user); the
// caller then trusts the probe. A listener handed to a process outside the
// group (setsid) is not recognised: such a program would escape StopInstance
// as well.
func listenerInGroup(port, pgid int) (inGroup, ok bool) {
	inodes, err := listenInodes(port)
	if err != nil {
		return false, false
	}
	if len(inodes) == 0 {
		return false, true // the listener went away since the probe
	}
	held, err := holdsSocket(pgid, inodes)
	switch {
	case held:
		return true, true
	case errors.Is(err, fs.ErrPermission):
		return false, false
	}
	// The leader did not have it (or is gone): a descendant may listen for
	// it, as under a wrapper script.
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false, false
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == pgid || procPgrp(pid) != pgid {
			continue
		}
		if held, _ := holdsSocket(pid, inodes); held {
			return true, true
		}
	}
	return false, true
}

// listenInodes returns the socket inodes of the TCP listeners on port, IPv4
// and IPv6, in the farm's network namespace. It asks sock_diag for listening
// sockets only, which costs as much as there are listeners; /proc/net/tcp
// lists every socket, TIME_WAIT included, and takes milliseconds to read on
// a busy host, so it is only the fallback.
func listenInodes(port int) ([]uint64, error) {
	inodes, err := diagListeners(port)
	if err == nil {
		return inodes, nil
	}
	return procListeners(port)
}

// sock_diag, from linux/sock_diag.h and linux/inet_diag.h.
const (
	netlinkSockDiag  = 4  // NETLINK_SOCK_DIAG
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
	tcpListenState   = 10 // TCP_LISTEN
	inetDiagReqLen   = 56 // struct inet_diag_req_v2
	inetDiagMsgLen   = 72 // struct inet_diag_msg
	diagSportOffset  = 4  // inet_diag_msg.id.idiag_sport, big-endian
	diagInodeOffset  = 68 // inet_diag_msg.idiag_inode
	diagRecvBuf      = 32 << 10
)

func diagListeners(port int) ([]uint64, error) {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, netlinkSockDiag)
	if err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	defer syscall.Close(fd)
	// The kernel answers at once; the timeout only guards against a quirk.
	tv := syscall.NsecToTimeval(int64(time.Second))
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	buf := make([]byte, diagRecvBuf)
	var inodes []uint64
	if inodes, err = diagDump(fd, syscall.AF_INET, port, buf, inodes); err != nil {
		return nil, err
	}
	// Without IPv6 the kernel has no AF_INET6 handler: no IPv6 listeners.
	if v6, err := diagDump(fd, syscall.AF_INET6, port, buf, inodes); err == nil {
		inodes = v6
	}
	return inodes, nil
}

// diagDump asks for the TCP listeners of one address family and appends the
// inodes of those on port.
func diagDump(fd int, family uint8, port int, buf []byte, inodes []uint64) ([]uint64, error) {
	ne := binary.NativeEndian
	var req [syscall.NLMSG_HDRLEN + inetDiagReqLen]byte
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], sockDiagByFamily)
	ne.PutUint16(req[6:], syscall.NLM_F_REQUEST|syscall.NLM_F_DUMP)
	ne.PutUint32(req[8:], uint32(family)) // sequence number
	r := req[syscall.NLMSG_HDRLEN:]
	r[0] = family
	r[1] = syscall.IPPROTO_TCP
	ne.PutUint32(r[4:], 1<<tcpListenState)
	if err := syscall.Sendto(fd, req[:], 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return inodes, fmt.Errorf("sock_diag: %w", err)
	}
	for {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return inodes, fmt.Errorf("sock_diag: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return inodes, fmt.Errorf("sock_diag: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case syscall.NLMSG_DONE:
				return inodes, nil
			case syscall.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if errno := int32(ne.Uint32(m.Data)); errno != 0 {
						return inodes, fmt.Errorf("sock_diag: %w", syscall.Errno(-errno))
					}
				}
				return inodes, errors.New("sock_diag: error reply")
			case sockDiagByFamily:
				d := m.Data
				if len(d) < inetDiagMsgLen || int(binary.BigEndian.Uint16(d[diagSportOffset:])) != port {
					continue
				}
				inodes = append(inodes, uint64(ne.Uint32(d[diagInodeOffset:])))
			}
		}
	}
}

// procListeners reads the listeners on port from /proc/net/tcp and tcp6.
func procListeners(port int) ([]uint64, error) {
	var inodes []uint64
	readable := false
	for _, path := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(path)
		if err != nil {
			continue // no tcp6 without IPv6
		}
		readable = true
		inodes, err = appendListeners(inodes, f, port)
		_ = f.Close()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
	}
	if !readable {
		return nil, errors.New("no /proc/net/tcp")
	}
	return inodes, nil
}

// appendListeners appends the inodes of the sockets in LISTEN state on port
// found in r, the text of /proc/net/tcp or /proc/net/tcp6.
func appendListeners(inodes []uint64, r io.Reader, port int) ([]uint64, error) {
	const listen = "0A"
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		f, ok := leadingFields(sc.Bytes())
		if !ok || string(f[3]) != listen {
			continue
		}
		_, hexPort, found := bytes.Cut(f[1], []byte(":"))
		if !found {
			continue
		}
		p, err := strconv.ParseUint(string(hexPort), 16, 16)
		if err != nil || int(p) != port {
			continue
		}
		ino, err := strconv.ParseUint(string(f[9]), 10, 64)
		if err != nil || ino == 0 {
			continue
		}
		inodes = append(inodes, ino)
	}
	return inodes, sc.Err()
}

// leadingFields splits the first ten blank-separated fields of line without
// allocating.
func leadingFields(line []byte) (f [10][]byte, ok bool) {
	i := 0
	for k := range f {
		for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
			i++
		}
		j := i
		for j < len(line) && line[j] != ' ' && line[j] != '\t' {
			j++
		}
		if i == j {
			return f, false
		}
		f[k], i = line[i:j], j
	}
	return f, true
}

// holdsSocket reports whether process pid has a descriptor open on one of
// the socket inodes.
func holdsSocket(pid int, inodes []uint64) (bool, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		link, err := os.Readlink(dir + e.Name())
		if err != nil {
			continue // closed meanwhile
		}
		s, ok := strings.CutPrefix(link, "socket:[")
		if !ok {
			continue
		}
		ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64)
		if err == nil && slices.Contains(inodes, ino) {
			return true, nil
		}
	}
	return false, nil
}

// procPgrp returns the process group of pid, or 0 if it cannot be read.
func procPgrp(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// pid (comm) state ppid pgrp ...; comm may hold spaces and parens.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 3 {
		return 0
	}
	pgrp, _ := strconv.Atoi(string(f[2]))
	return pgrp
}
