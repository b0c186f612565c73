module github.com/shoal-run/shoal/services/archive

go 1.26

require github.com/shoal-run/shoal/pkg v0.0.0

replace github.com/shoal-run/shoal/pkg => ../../pkg
