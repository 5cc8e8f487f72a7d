# containerd scenarios (`ctr run --runc-binary`, the runc shim driving the runtime, as
# Kubernetes through containerd does), sourced by tests/e2e/in-vm with $RUNTIME_BIN,
# $RUNTIME, $CTR_ADDRESS and the image imported into namespace e2e as $CTR_IMAGE.

cctr() { ctr --address "$CTR_ADDRESS" -n e2e "$@"; }
crun_() { cctr run --runc-binary "$RUNTIME_BIN" "$@"; }
# running ID: waits until task ID runs.
running() {
    wait_until 120 sh -c "ctr --address '$CTR_ADDRESS' -n e2e task ls | grep -q '^$1 .*RUNNING'"
}

ctr_echo() {
    expect "$(crun_ --rm "$CTR_IMAGE" "$(name c-echo)" echo hello)" hello
}

ctr_exit_codes() {
    expect "$(status crun_ --rm "$CTR_IMAGE" "$(name c-true)" true)" 0
    expect "$(status crun_ --rm "$CTR_IMAGE" "$(name c-false)" false)" 1
    expect "$(status crun_ --rm "$CTR_IMAGE" "$(name c-42)" sh -c 'exit 42')" 42
    local c p rc; c=$(name c-k9)
    crun_ --rm "$CTR_IMAGE" "$c" sleep 1000 >/dev/null &
    p=$!
    running "$c"
    cctr task kill -s SIGKILL "$c"
    wait "$p" && rc=0 || rc=$?
    expect "$rc" 137
}

ctr_exec() {
    local c; c=$(name c-exec)
    crun_ -d "$CTR_IMAGE" "$c" sleep 1000 >/dev/null
    running "$c"
    expect "$(status cctr task exec --exec-id e1 "$c" sh -c 'exit 5')" 5
    expect "$(echo through-stdin | cctr task exec --exec-id e2 "$c" cat)" through-stdin
    # -t needs a terminal on the client side: script(1) makes one.
    expect_in "$(script -qec "ctr --address $CTR_ADDRESS -n e2e task exec -t --exec-id e3 $c tty" /dev/null | tr -d '\r')" \
        /dev/pts/0
    cctr task kill -s SIGKILL "$c"
    wait_until 60 sh -c "ctr --address '$CTR_ADDRESS' -n e2e task ls | grep -q '^$c .*STOPPED'"
    cctr task delete "$c" >/dev/null
    cctr container delete "$c"
}

ctr_scenarios() {
    scenario "ctr $RUNTIME: run --rm echo" ctr_echo
    scenario "ctr $RUNTIME: exit codes 0 1 42 137" ctr_exit_codes
    scenario "ctr $RUNTIME: exec (code, stdin, -t)" ctr_exec
}

# docker's own containerd serves ctr too; the image goes into namespace e2e.
setup_ctr() {
    docker save e2e-busybox | cctr images import - >/dev/null
    expect_in "$(cctr images ls -q)" "$CTR_IMAGE"
}
