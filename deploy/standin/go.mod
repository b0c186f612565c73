module github.com/shoal-run/shoal/deploy/standin

go 1.26.0
