# bankboot: the two commands a new user needs are `make demo` and `make test` (see README.md).
BOARD ?= qemu-aarch64
VENV  := .venv/bin
INITRAMFS := build/$(BOARD)/initramfs.img
PYTEST_ARGS ?=
# bankboot's cache (Debian parts, sysroots, frozen inits) is the checkout's build/cache; an installed bankboot
# keeps its own under $XDG_CACHE_HOME/bankboot (builder/paths.py).
export BANKBOOT_CACHE ?= $(CURDIR)/build/cache
# pytest-xdist workers for `make test`: two single-thread QEMU guests at once fit two cores.
JOBS ?= 2
# Public key(s) the initramfs trusts. By default a development key made on first use (build/keys/dev).
DEV_KEY := build/keys/dev
TRUST ?= $(DEV_KEY).pub
# SEALED=1: a field build (no rescue shell, init= ignored; docs/trust.md).
SEALED ?=
SIGN ?= $(DEV_KEY).key

.PHONY: all deps initramfs qemu demo fleet-demo hawkbit-lab fleet-sim test test-unit test-host test-vm lint bench bench-net bench-image \
	faults soak clean distclean

all: initramfs

deps:
	@scripts/deps.sh

$(DEV_KEY).key $(DEV_KEY).pub &:
	@scripts/deps.sh
	$(VENV)/bankboot keygen -o $(DEV_KEY) --comment "bankboot development key (not for devices you ship)"

initramfs: deps $(if $(filter $(DEV_KEY).pub,$(TRUST)),$(DEV_KEY).pub)
	$(VENV)/bankboot initramfs --board $(BOARD) -o $(INITRAMFS) --trust "$(TRUST)" $(if $(SEALED),--sealed)

qemu: initramfs
	$(VENV)/bankboot qemu --board $(BOARD) --initramfs $(INITRAMFS)

DEMO := build/demo/$(BOARD)

# The sample rootfs becomes image 1.0.0, installed as `current` on a disk whose boot partition carries what the
# board's firmware reads (qemu-aarch64: U-Boot's boot.scr and loader slot a, with room for slot b; docs/firmware.md);
# QEMU then boots that disk through that firmware.
demo: initramfs $(if $(filter $(DEV_KEY).key,$(SIGN)),$(DEV_KEY).key)
	$(VENV)/bankboot sample-rootfs --board $(BOARD) -o $(DEMO)/rootfs
	$(VENV)/bankboot image --rootfs $(DEMO)/rootfs --version 1.0.0 --confirm-boots --persist /etc --persist /var \
		--persist /root --sign $(SIGN) -o $(DEMO)/app-1.0.0.bank
	$(VENV)/bankboot disk --board $(BOARD) --image $(DEMO)/app-1.0.0.bank --initramfs $(INITRAMFS) \
		--size 512M -o $(DEMO)/disk.img
	$(VENV)/bankboot sample-rootfs --board $(BOARD) --version 1.1.0 -o $(DEMO)/rootfs-1.1.0
	$(VENV)/bankboot image --rootfs $(DEMO)/rootfs-1.1.0 --version 1.1.0 --confirm-boots --persist /etc --persist /var \
		--persist /root --sign $(SIGN) -o $(DEMO)/www/app-1.1.0.bank
	@echo "An update over the network: in another terminal run"
	@echo "    $(VENV)/bankboot serve $(DEMO)/www"
	@echo "then in the guest: bankctl stage http://10.0.2.2:8080/app-1.1.0.bank && reboot"
	$(VENV)/bankboot qemu --board $(BOARD) --disk $(DEMO)/disk.img --net

# A fleet in the lab: QEMU devices following one channel on nginx; 1.1.0 is published, they update, one
# hardware variant falls back and says so (docs/fleet.md). About 3 minutes; DEVICES=N for more.
DEVICES ?= 3
fleet-demo: initramfs $(if $(filter $(DEV_KEY).key,$(SIGN)),$(DEV_KEY).key)
	$(VENV)/bankboot fleet-demo --board $(BOARD) --initramfs $(INITRAMFS) --sign $(SIGN) --devices $(DEVICES)

# A rollout server in the lab: goosebit (hawkBit DDI) on loopback, QEMU devices polling it with bankctl poll
# --hawkbit; 1.1.0 is rolled out as a .swu, one hardware variant falls back and reports why (docs/hawkbit.md).
hawkbit-lab: initramfs $(if $(filter $(DEV_KEY).key,$(SIGN)),$(DEV_KEY).key)
	$(VENV)/bankboot hawkbit-lab --board $(BOARD) --initramfs $(INITRAMFS) --sign $(SIGN) --devices $(DEVICES)

# Hundreds of simulated pollers on the build host: what a release costs the server per device, by fleet size,
# on nginx and on a SeaweedFS S3 gateway (both started on loopback and stopped after).
fleet-sim: deps
	$(VENV)/bankboot fleet-sim --devices 100,200,400 --s3-local

test: deps lint
	$(VENV)/pytest -n $(JOBS) --dist worksteal $(PYTEST_ARGS)

# The tiers (tests/conftest.py): unit needs only the venv, host the tools and parts `make deps` fetches,
# vm boots QEMU. `make test` runs them all.
test-unit: deps
	$(VENV)/pytest -m unit $(PYTEST_ARGS)

test-host: deps
	$(VENV)/pytest -m host $(PYTEST_ARGS)

test-vm: deps
	$(VENV)/pytest -m vm $(PYTEST_ARGS)

# ruff, then the type checker: strict on the device side, the defaults on the host side.
lint: deps
	$(VENV)/ruff check .
	$(VENV)/mypy --strict overlay_layout initfs
	$(VENV)/mypy builder qemu/console.py qemu/interactive.py qemu/machine.py qemu/vm.py

bench: deps
	$(VENV)/bankboot bench --board $(BOARD)

# What staging over the network costs in the guest: https/http against curl, a delta with and without coalescing
# (it takes /tmp/qemu.lock only while its guest runs).
bench-net: deps
	$(VENV)/bankboot bench-net --board $(BOARD)

# bankboot image of a 1 GB rootfs from each source kind (time, peak RSS) and a rebuild's delta a day later;
# about 25 min, 8 GB of disk in build/figures (docs/images.md, "Memory and time"). No QEMU.
bench-image: deps
	$(VENV)/python scripts/image_figures.py build/figures

# The never-brick campaign: 100 real power cuts (QEMU killed), every disk-fault class and two rounds of the loader
# classes on the board's firmware (builder/lab/loaderfaults.py); about 40 min.
# SEED=N repeats a campaign. A slice of it runs in `make test` (tests/vm/test_faults.py).
SEED ?=
faults: deps
	$(VENV)/bankboot faults --board $(BOARD) $(if $(SEED),--seed $(SEED))

# Hundreds of boot cycles on one device (builder/lab/soak.py): random updates (good, failing self-test, never
# committing), ESC presses, rollbacks, resets, gc, mark-bad and power cuts, each boot checked from the guest.
# SEED=N CYCLES=N; not in make test. Prints a table; build/soak/$(BOARD)/soak.json.
CYCLES ?= 500
soak: deps
	$(VENV)/bankboot soak --board $(BOARD) --cycles $(CYCLES) $(if $(SEED),--seed $(SEED))

clean:
	rm -rf build/qemu-* build/tests

distclean:
	rm -rf build .venv
