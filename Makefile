# shoal — multicast disk imaging. See README.md.
#
#   make build   build the binaries into build/
#   make test    install system dependencies, then run every test (as root)
#   make lint    gofmt, go vet, staticcheck
#   make fuzz    run every fuzz target for FUZZTIME each (default 10m)

GO        ?= go
BUILD     := build
FUZZTIME  ?= 10m
# Each fuzz target runs this many inputs inside `make test` (a count, not a
# time: on a busy machine a short time budget can end in the fuzzer's own
# "context deadline exceeded").
TEST_FUZZTIME ?= 200000x
# SHOAL_SKIP_VM=1 skips the virtual-machine tests for a quick local loop.
export SHOAL_SKIP_VM

.PHONY: all build deps test unit lint fuzz fuzz-quick clean clean-lab

all: build

build:
	$(GO) build -o $(BUILD)/ ./cmds/...

deps:
	scripts/deps.sh

# The whole test suite, as CI runs it: unit tests, the network tests in
# private namespaces (root), and a short run of every fuzz target.
test: deps build
	$(GO) vet ./...
	SHOAL_REQUIRE_LAB=1 $(GO) test -count=1 -timeout 45m ./...
	$(MAKE) fuzz-quick

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

# fuzz-quick runs every fuzz target briefly; fuzz runs each for FUZZTIME.
fuzz-quick:
	scripts/fuzz.sh $(TEST_FUZZTIME)

fuzz:
	scripts/fuzz.sh $(FUZZTIME)

clean-lab:
	$(GO) test ./qemu/lab -run TestSweep -count=1

clean:
	rm -rf $(BUILD)

# The main job for a newcomer: build everything (binaries, kernel,
# initramfs), make a small realistic disk image, and image 3 virtual
# machines that boot from the network (PXE) in the virtual lab, showing the
# server's live view and the per-client table.
.PHONY: demo
demo: deps build kernel initramfs
	$(GO) run ./qemu/demo

# The PXE end-to-end tests alone: VMs boot through QEMU's iPXE ROM, TFTP,
# HTTP and the kernel + initramfs that shoal serve --pxe serves, and are
# imaged (also run by make test). SHOAL_PXE_VMS=N boots N VMs (at least 3).
.PHONY: qemu-test
qemu-test: deps build kernel initramfs usb
	SHOAL_REQUIRE_LAB=1 $(GO) test -count=1 -timeout 30m -v -run 'TestPXE' ./qemu/e2e

# --- The client's boot image (see boot/ and scripts/initramfs.sh, kernel.sh,
# usb.sh). File targets: each is rebuilt only when its inputs change.
# FAST=1 make initramfs reuses a prebuilt base of u-root's core commands.
BOOT_SRC := $(shell find boot client cmds/shoal-client imaging internal protocol -name '*.go' -not -name '*_test.go' 2>/dev/null)

.PHONY: kernel initramfs usb
kernel: $(BUILD)/vmlinuz
initramfs: $(BUILD)/shoal-initramfs.cpio.gz
usb: $(BUILD)/shoal-usb.img

$(BUILD)/vmlinuz: scripts/kernel.sh scripts/kernel-modules.txt $(wildcard /boot/vmlinuz-*)
	scripts/kernel.sh $(BUILD)

$(BUILD)/shoal-initramfs.cpio.gz: $(BUILD)/vmlinuz scripts/initramfs.sh go.mod go.sum $(BOOT_SRC)
	scripts/initramfs.sh $(BUILD)

$(BUILD)/shoal-usb.img: $(BUILD)/vmlinuz $(BUILD)/shoal-initramfs.cpio.gz scripts/usb.sh scripts/usb-settings.txt
	scripts/usb.sh $(BUILD)

# The VM tests boot these images; build them before the test run.
test: usb

# The benchmark against udpcast and unicast on one emulated link (see
# qemu/bench): about half an hour; writes docs/bench.md and docs/bench.png.
.PHONY: bench
bench: deps build
	$(GO) build -o $(BUILD)/benchtool ./qemu/bench
	$(BUILD)/benchtool -matrix -bin $(BUILD) -dir $(BUILD)/bench -report docs
