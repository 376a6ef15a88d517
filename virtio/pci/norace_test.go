//go:build !race

package virtiopci

const raceEnabled = false
