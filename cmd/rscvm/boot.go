package main

import (
	"context"
	"io"
)

func runBootCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseBootArgs(args)
	if err != nil {
		return err
	}
	return bootGuest(ctx, cfg, stdout, stderr)
}
