//go:build !linux

package main

import "time"

// On systems other than Linux the pacer uses Go's timers, which may wake
// late; the report's start_lag_* shows by how much.
func preciseTimerThread() {}

func sleepUntil(t int64) {
	if d := t - now(); d > 0 {
		time.Sleep(time.Duration(d))
	}
}

func cpuTimes() (user, sys float64) { return 0, 0 }
