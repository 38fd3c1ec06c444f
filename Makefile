# tidings: the two commands a newcomer needs are `make run` and `make test`.

GO ?= go
FUZZTIME ?= 10s

.PHONY: run test test-browser test-client check-deploy build bench fuzz vet clean

## run: build ./bin/tidings and start a node on http://127.0.0.1:8080 (development mode) with a
## managed PostgreSQL in ./data/postgres: the default data directory of every command, so that
## `./bin/tidings user create` reaches the same database while the node runs
run:
	$(GO) build -buildvcs=auto -o bin/tidings ./cmd/tidings
	TIDINGS_DEV=$${TIDINGS_DEV:-true} ./bin/tidings serve

## test: every test, with the race detector, against a real PostgreSQL started for the run;
## then each fuzz test for a fixed number of inputs; then the browser client in headless Chromium;
## then the browser library's package, installed into a typed app and checked with tsc.
## The budget is a count, not a duration: with a duration, Go 1.26's fuzz coordinator can report
## a bare "context deadline exceeded" at the end of the window (go.dev/issue/75804, fixed in 1.27).
test:
	$(GO) vet ./...
	$(MAKE) check-deploy
	$(GO) test -race -count=1 ./...
	$(MAKE) fuzz FUZZTIME=5000x
	$(MAKE) test-browser
	$(MAKE) test-client

## test-browser: the browser client in headless Chromium (Debian's chromium, node and npm);
## screenshots and server logs land in web/browsertest/artifacts
test-browser:
	cd web/browsertest && npm ci --no-audit --no-fund && npm test

## test-client: packs the browser library (web/client), installs the tarball into the typed
## example app (web/client/example) and runs tsc --noEmit on it (TypeScript from its lock file)
test-client:
	sh web/client/check.sh

## check-deploy: the systemd unit in docs/deploy through systemd-analyze verify (skipped where
## systemd-analyze is not installed), and the settings of its environment file and of
## cmd/tidings against the table of docs/operations.md
check-deploy:
	sh docs/deploy/check.sh

## build: the binaries, in ./bin, with the commit they were built from (tidings version)
build:
	$(GO) build -buildvcs=auto -o bin/ ./cmd/...

## bench: the benchmarks (append, fan-out, replay); see docs/performance.md
bench:
	$(GO) test -run '^$$' -bench . -benchtime 2s ./...

## fuzz: run each fuzz test for FUZZTIME (a duration such as 30s, or a count of inputs such as 5000x)
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

vet:
	gofmt -l . | (! grep .)
	$(GO) vet ./...

clean:
	rm -rf bin
