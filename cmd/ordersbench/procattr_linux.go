package main

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal kills the child when the benchmark dies, so no
// service or broker outlives an interrupted run.
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
