# rscvm — build, guest images, tests, benchmarks.
#
#   make demo    install what is needed, build, make the guest images, boot the default guest
#   make test    vet + staticcheck + gofmt check + go test -race ./... (what CI runs)
#   make bench   benchmarks with -benchmem
#   make fuzz    a short run of every fuzz target

GO          ?= go
OUT         ?= $(CURDIR)/out
STATICCHECK ?= $(shell command -v staticcheck || echo $(HOME)/go/bin/staticcheck)
STATICCHECK_VERSION := v0.8.2
TEST_TIMEOUT ?= 40m
FUZZTIME    ?= 10s
VERSION     := $(shell git describe --always --dirty 2>/dev/null || echo dev)

export RSCVM_OUT := $(OUT)

.PHONY: all build deps guest testguest linux-guest test check vet fmt-check staticcheck bench fuzz demo compat clean

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/rscvm ./cmd/rscvm

# Debian packages and Go tools the build and the tests need (run as root).
deps:
	guestimages/deps.sh
	@test -x $(STATICCHECK) || GOFLAGS= $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# Guest images into $(OUT): the freestanding test guest (seconds), the Linux
# kernels and the agent initramfs (the kernel build is cached in /var/cache/rscvm).
guest: testguest linux-guest

testguest:
	guestimages/testguest/build.sh $(OUT)

linux-guest:
	guestimages/build.sh $(OUT)

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

staticcheck:
	$(STATICCHECK) ./...

check: fmt-check vet staticcheck

# The whole suite; the differential run against QEMU 7.2 (make compat); then
# the freestanding guest's virtio-net driver tests again with rscvm (instead
# of QEMU) as the VMM: the same guest, TAP and assertions against both devices.
test: check build
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	$(MAKE) compat
	RSCVM_TESTGUEST_VMM=$(CURDIR)/bin/rscvm $(GO) test -count=1 -timeout 20m -run '^TestNet' ./guestimages/testguest/

# Every benchmark, then the RSC engine beside wireguard-go's and gVisor's GRO
# on the same input (a nested module, so the peers' dependencies stay out of
# rscvm's go.mod), then the same Linux guest under QEMU TCG on QEMU's
# virtio-net and on rscvm vhost-user-net (root, QEMU and the guest images;
# a few minutes): table in $(OUT)/vhost-user-bench.md, chart in docs/.
bench:
	$(GO) test -run '^$$' -bench . -skip '^BenchmarkVhostUserMatrix$$' -benchmem ./...
	cd rsc/peerbench && $(GO) test -run '^$$' -bench . -benchmem .
	RSCVM_BENCH_PNG=$(CURDIR)/docs/vhost-user-bench.png RSCVM_BENCH_MD=$(OUT)/vhost-user-bench.md \
	  $(GO) test -run '^$$' -bench '^BenchmarkVhostUserMatrix$$' -benchtime=1x -timeout 30m ./guestimages/agent/

fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# rscvm beside QEMU 7.2: the test guest under both on separate TAPs, the same
# frames, the reports diffed (exit 1 on an unexplained difference).
compat: build testguest
	bin/rscvm compat qemu

# The main job: boot the freestanding test guest under rscvm with a
# TAP-backed virtio-net-pci (guest_rsc_ext=on), send a TCP burst from the
# host side of the TAP, and show what the guest received and the RSC counters.
demo: deps build guest
	bin/rscvm demo

clean:
	rm -rf bin $(OUT)
