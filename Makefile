# runvm: the two commands of the README's Quick start, and their parts.
.PHONY: demo test deps build lint l1

# Set up a fresh machine and show runvm at work: today, `runvm check` here and inside the
# L1 test VM, plus the KVM smoke test in L1 (later: a container in a microVM).
demo: deps build
	-./target/debug/runvm check
	tests/vm/run -- sh -c './target/debug/runvm check; echo; tests/vm/run-suite "$$@"' \
		demo $$(tests/vm/build-suite)

# Everything: lint, host tests, VM tests, the L1 harness's self-test.
test: deps
	tests/run

deps:
	packaging/host-deps

build:
	cargo build

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# Prepare the L1 test VM's cached kernel and initramfs.
l1: deps
	tests/vm/l1 prepare
