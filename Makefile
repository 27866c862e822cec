# make test: the CI entry point. make bench: outrider beside nginx, Caddy and
# HAProxy (needs ../shared/bench; see BENCHMARKS.md). make gobench: the Go
# micro-benchmarks of the hot paths.
.PHONY: test bench gobench

test:
	bash scripts/test.sh

bench:
	bash scripts/bench.sh

gobench:
	go test -run '^$$' -bench . -benchmem -count 6 ./proxy/ ./certs/
