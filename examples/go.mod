module github.com/shoal-run/shoal/examples

go 1.26
