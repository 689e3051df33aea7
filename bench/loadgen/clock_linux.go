package main

import (
	"syscall"
	"time"
)

// preciseTimerThread sets the calling thread's timer slack to 1 ns
// (prctl PR_SET_TIMERSLACK), so that nanosleep wakes within tens of
// microseconds instead of the default 50 us slack plus Go's 1 ms timer
// granularity. The pacer locks itself to this thread.
func preciseTimerThread() {
	const prSetTimerslack = 29
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerslack, 1, 0)
}

// sleepUntil blocks the calling OS thread in nanosleep until the monotonic
// instant t (ns since base). It's a blocking syscall, so the Go runtime
// gives this thread's P to other goroutines in the meantime.
func sleepUntil(t int64) {
	for {
		d := t - now()
		if d <= 0 {
			return
		}
		ts := syscall.NsecToTimespec(d)
		syscall.Nanosleep(&ts, nil) // EINTR: loop and sleep the rest
	}
}

func cpuTimes() (user, sys float64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(time.Duration(t.Nano())) / 1e9 }
	return tv(ru.Utime), tv(ru.Stime)
}
