package compat

import (
	"fmt"
	"io"
)

// Summary counts cases by class.
type Summary struct {
	Identical  int `json:"identical"`
	Expected   int `json:"expected"`
	Unexpected int `json:"unexpected"`
	Failed     int `json:"errors"`
}

// Summarise counts the results by class.
func Summarise(results []Result) Summary {
	var s Summary
	for _, r := range results {
		switch r.Class {
		case Identical:
			s.Identical++
		case Expected:
			s.Expected++
		case Unexpected:
			s.Unexpected++
		default:
			s.Failed++
		}
	}
	return s
}

// WriteTable prints one row per case (case, class, seconds) followed by its
// note and its differences, unexpected ones first (normalised ones are not
// shown: see --json).
func WriteTable(w io.Writer, results []Result) {
	fmt.Fprintf(w, "%-40s %-22s %s\n", "case", "result", "time")
	for _, r := range results {
		fmt.Fprintf(w, "%-40s %-22s %.1fs\n", r.Case, r.Class, r.Seconds)
		if r.Note != "" {
			fmt.Fprintf(w, "    note: %s\n", r.Note)
		}
		for _, want := range []Class{Unexpected, Expected} {
			for _, d := range r.Diffs {
				if d.Class != want {
					continue
				}
				tag := "expected  "
				if d.Class == Unexpected {
					tag = "UNEXPECTED"
				}
				fmt.Fprintf(w, "    %s %s\n", tag, d)
			}
		}
	}
}
