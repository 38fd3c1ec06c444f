//go:build !linux

package main

import "syscall"

// bindAddressNoPort does nothing where Linux's IP_BIND_ADDRESS_NO_PORT does not exist.
func bindAddressNoPort(_, _ string, _ syscall.RawConn) error { return nil }
