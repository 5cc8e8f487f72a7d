# runvm: the two commands of the README's Quick start, and their parts.
.PHONY: demo test deps build guest lint l1 bench

# Set up a fresh machine and show runvm at work: `runvm check` here, then, where KVM is real
# (natively or in the L1 test VM), `runvm check` with this checkout's guest image, one microVM
# booted to guest-init's hello (a JSON line of measurements), and a busybox container run
# with `runvm run` in its own microVM, its kernel release shown beside the host's.
demo: deps build
	-./target/debug/runvm check
	packaging/demo-bundle target/demo-bundle
	RUNVM_CONFIG=$$(rootfs/build-guest | tail -n1) tests/vm/run -- \
		sh -c './target/debug/runvm check && ./target/debug/runvm debug boot --vcpus 2 && \
		./target/debug/runvm --root /tmp/runvm-demo run --bundle target/demo-bundle demo && \
		echo "the host runs kernel $$(uname -r): the container had a kernel of its own"'

# Everything: lint, host tests, guest image, VM tests, the L1 harness's self-test.
test: deps
	tests/run

deps:
	packaging/host-deps

build:
	cargo build

# The guest image of this checkout in target/guest/ (kernel cached outside the repo).
guest: deps
	rootfs/build-guest

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# Prepare the L1 test VM's cached kernel and initramfs.
l1: deps
	tests/vm/l1 prepare

# One benchmark run, runvm beside runc: bench/results/<date>.md and .jsonl (by hand; not CI).
bench: deps
	bench/run
