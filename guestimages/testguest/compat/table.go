package compat

import (
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
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
//
// The part (a) scenarios no case can drive follow the table.
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
	for _, s := range NotDrivable() {
		fmt.Fprintf(w, "(a)%-3d %-36s not host-drivable: %s\n", s.Num, s.Title, s.Reason)
	}
}

// scenarioRE finds the part (a) scenario numbers a case's About cites.
var scenarioRE = regexp.MustCompile(`\(a\)(\d+)`)

// Coverage maps each part (a) scenario number to the cases whose About
// cites it.
func Coverage(cases []Case) map[int][]string {
	cov := map[int][]string{}
	for _, c := range cases {
		seen := map[int]bool{}
		for _, m := range scenarioRE.FindAllStringSubmatch(c.About, -1) {
			n, err := strconv.Atoi(m[1])
			if err != nil || seen[n] {
				continue
			}
			seen[n] = true
			cov[n] = append(cov[n], c.Name)
		}
	}
	return cov
}

// WriteCoverage prints one line per part (a) scenario (1..NumScenarios):
// the cases that drive it, or why none can, and what part is not driven.
func WriteCoverage(w io.Writer, cases []Case) {
	cov := Coverage(cases)
	nd, part := map[int]Scenario{}, map[int]Scenario{}
	for _, s := range NotDrivable() {
		nd[s.Num] = s
	}
	for _, s := range Partial() {
		part[s.Num] = s
	}
	fmt.Fprintf(w, "rsc-spec part (a) scenarios:\n")
	for n := 1; n <= NumScenarios; n++ {
		switch {
		case len(cov[n]) > 0:
			fmt.Fprintf(w, "  (a)%-3d %s\n", n, strings.Join(cov[n], ", "))
			if s, ok := part[n]; ok {
				fmt.Fprintf(w, "          partly: %s: %s\n", s.Title, s.Reason)
			}
		case nd[n].Num == n:
			fmt.Fprintf(w, "  (a)%-3d not host-drivable: %s: %s\n", n, nd[n].Title, nd[n].Reason)
		default:
			fmt.Fprintf(w, "  (a)%-3d no case\n", n)
		}
	}
}

// NumScenarios is the number of scenarios in rsc-spec part (a).
const NumScenarios = 54
