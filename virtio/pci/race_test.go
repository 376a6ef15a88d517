//go:build race

package virtiopci

const raceEnabled = true
