package main

import "syscall"

// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT (include/uapi/linux/in.h).
const ipBindAddressNoPort = 24

// bindAddressNoPort lets a socket bound to a source address take its port only at connect,
// from the whole four-tuple. Without it, bind picks a port that no socket of that address
// holds, in any state: with tens of thousands of sockets in TIME_WAIT (a storm drops 10,000 at
// once; a run leaves as many for a minute) each bind scans the range, costs milliseconds of
// CPU, and fails once the range is used up.
func bindAddressNoPort(_, _ string, c syscall.RawConn) error {
	var err error
	if cerr := c.Control(func(fd uintptr) {
		err = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	}); cerr != nil {
		return cerr
	}
	return err
}
